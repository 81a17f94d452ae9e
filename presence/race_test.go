//go:build race

package presence

// raceEnabled: the tests run with -race, whose sync.Pool drops items at
// random: allocation counts are checked without it.
const raceEnabled = true
