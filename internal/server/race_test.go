//go:build race

package server_test

// raceEnabled: the tests run with -race, whose sync.Pool drops items at
// random: allocation counts are checked without it.
const raceEnabled = true
