package hub

import (
	"fmt"
	"testing"
	"time"

	"github.com/usher-presence/usher/test/testutil"
)

// Peers that never answer a ping are dropped within a few ping intervals however many there are: one waiting for
// its pong holds up no other ping. (With 64 pings waiting at a time, 640 dead peers took 10 intervals.)
func TestManyDeadPeersDroppedTogether(t *testing.T) {
	const (
		peers    = 640
		interval = 500 * time.Millisecond
	)
	h, dial := serveHub(t, Config{PingInterval: interval}, storedEvents(0, 0))
	for range peers {
		dial(nil) // never reads, so never answers a ping
	}
	start := time.Now()
	testutil.Eventually(t, 7*interval, 20*time.Millisecond, func() (bool, string) {
		n := h.Stats().Connections
		return n == 0, fmt.Sprintf("%d of %d dead peers still connected after %s", n, peers, time.Since(start).Round(time.Millisecond))
	})
	t.Logf("%d dead peers dropped %s after the last connected (ping interval %s)", peers, time.Since(start).Round(time.Millisecond), interval)
}
