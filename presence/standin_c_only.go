// Stand-in for helper C only: the Hub methods the bus calls, as
// /work/wt/REDISBUS.md gives them, so that internal/server compiles before
// the lead lands the real ones. The lead deletes this file at merge.

package presence

func (h *Hub) Apply(room, node string, hs []Holding, full bool) {}
func (h *Hub) Loaded(room string)                               {}
func (h *Hub) NodeDown(node string)                             {}
func (h *Hub) Republish(room string)                            {}
