//go:build !race

package chain

// raceEnabled says the race detector is on: TestModel then runs fewer operations by default.
const raceEnabled = false
