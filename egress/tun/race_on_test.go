//go:build race

package tun

// raceEnabled: the race detector drops sync.Pool items at random, so allocation counts of pooled paths are not
// checked under it.
const raceEnabled = true
