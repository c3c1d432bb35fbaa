//go:build race

package edge

// raceEnabled: the race detector slows tight loops some 70 times, so
// tests that measure what work costs others do less of it.
const raceEnabled = true
