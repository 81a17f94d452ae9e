//go:build !race

package multinode

const raceEnabled = false
