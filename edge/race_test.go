//go:build race

package edge

// raceEnabled: the race detector changes allocation counts (sync.Pool drops entries on
// purpose), so allocation checks are skipped under it.
const raceEnabled = true
