//go:build race

package multinode

// raceEnabled: the tests run with -race, and so do the nodes.
const raceEnabled = true
