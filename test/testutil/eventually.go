package testutil

import (
	"testing"
	"time"
)

// Eventually calls cond until it returns true, sleeping every between calls, and fails the test with cond's last
// message once within has passed. It must be called from the test's own goroutine, like t.Fatal.
func Eventually(t testing.TB, within, every time.Duration, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, why)
		}
		time.Sleep(every)
	}
}
