//go:build race

package e2e_test

// raceEnabled: the tests run under the race detector, which slows the server down.
const raceEnabled = true
