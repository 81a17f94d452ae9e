package coalesce

// Shrink rule shared by Changes and the Scheduler's key sets: backing
// arrays are kept from window to window (so a steady load allocates
// nothing) until their capacity exceeds both shrinkFloor and shrinkFactor
// times the recent peak, the larger of the last two windows' sizes.
// Looking at two windows, not one, keeps a key set that alternates
// between busy and empty windows from reallocating on every busy one.
const (
	shrinkFloor  = 64 // capacities up to this are never released
	shrinkFactor = 4  // release when capacity > shrinkFactor × recent peak
)

// shouldShrink reports whether a backing array of capacity c is oversized
// for a load whose recent peak is peak.
func shouldShrink(c, peak int) bool {
	return c > shrinkFloor && c > shrinkFactor*peak
}

// change is one key's net change within a window.
type change[K comparable, V any] struct {
	k        K
	old, new V
}

// Changes collects the net change per key within one window: for each key,
// the value it had when the window started (the old value of its first Put)
// and the latest value. The zero value is ready to use. Not safe for
// concurrent use (the caller guards it, e.g. with its room lock).
//
// Memory: the index and the ordered list of changes keep their capacity
// across Drains, so a steady stream of similar windows allocates nothing;
// they are released (reallocated at the recent peak size, or dropped when
// that is zero) when their capacity exceeds 64 and 4× the larger of the
// last two windows' sizes, so memory follows load.
type Changes[K comparable, V any] struct {
	index   map[K]int      // key → position in changes; nil until the first Put after a release
	changes []change[K, V] // pending changes in first-Put order
	prevLen int            // number of changes in the previous drained window
}

// Put records that k changed from old to new. The first Put of k in a
// window keeps old; later Puts only replace the latest value. It reports
// whether k already had a change in this window (the earlier change was
// coalesced away).
func (c *Changes[K, V]) Put(k K, old, new V) (merged bool) {
	if i, ok := c.index[k]; ok {
		c.changes[i].new = new
		return true
	}
	if c.index == nil {
		c.index = make(map[K]int)
	}
	c.index[k] = len(c.changes)
	c.changes = append(c.changes, change[K, V]{k: k, old: old, new: new})
	return false
}

// Len is the number of keys with a pending change.
func (c *Changes[K, V]) Len() int { return len(c.changes) }

// Drain calls fn for every pending change, in the order keys were first
// Put, then empties the window. Whether a change is a no-op (old equal to
// new, such as a join then a leave) is for fn to decide: V need not be
// comparable.
//
// Drain keeps the allocated capacity, so a steady stream of windows
// allocates nothing, but releases it when its capacity exceeds 64 and 4×
// the larger of this window's and the previous window's sizes (see
// Changes). Drained values are zeroed, so Changes holds no reference to
// them afterwards.
//
// fn must not call methods of c. If fn panics, c is left unspecified.
func (c *Changes[K, V]) Drain(fn func(k K, old, new V)) {
	n := len(c.changes)
	for i := range c.changes {
		ch := &c.changes[i]
		fn(ch.k, ch.old, ch.new)
	}
	peak := max(n, c.prevLen)
	c.prevLen = n
	if shouldShrink(cap(c.changes), peak) {
		if peak == 0 {
			c.index, c.changes = nil, nil
		} else {
			c.index = make(map[K]int, peak)
			c.changes = make([]change[K, V], 0, peak)
		}
		return
	}
	clear(c.changes) // drop references held by K and V
	c.changes = c.changes[:0]
	clear(c.index) // keeps the map's buckets
}
