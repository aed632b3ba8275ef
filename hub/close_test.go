package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/usher-presence/usher/test/testutil"
)

// Close is bounded by its context even when peers do not answer the close handshake (here: clients that never read,
// so their library never answers the close frame; coder/websocket waits 5 s for that answer).
func TestCloseBoundedByContext(t *testing.T) {
	h, dial := serveHub(t, Config{}, storedEvents(0, 0))
	threeWhoNeverRead(t, h, dial)
	closeWithin(t, h, 200*time.Millisecond)
	if n := h.Stats().Connections; n != 0 {
		t.Fatalf("%d connections after Close", n)
	}
}

// Close is bounded by its context also for sessions whose close began before it: here every session was closed by
// Resync (the view's gap) just before, and their close handshakes wait on clients that never answer. Close cut only
// the sessions it closed itself, and waited out the others' handshakes (5 s in coder/websocket).
func TestCloseBoundedForSessionsAlreadyClosing(t *testing.T) {
	h, dial := serveHub(t, Config{}, storedEvents(0, 0))
	threeWhoNeverRead(t, h, dial)
	h.Resync("presence state reloading")
	closeWithin(t, h, 200*time.Millisecond)
}

// closeWithin closes h with a context of d, and fails the test if that takes much longer than d.
func closeWithin(t *testing.T, h *Hub, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	h.Close(ctx)
	if took := time.Since(start); took > d+1800*time.Millisecond {
		t.Fatalf("Close with a %s context took %s", d, took.Round(time.Millisecond))
	}
}

// threeWhoNeverRead connects 3 clients that never read (their library never answers a close frame), and waits
// until the hub has their sessions.
func threeWhoNeverRead(t *testing.T, h *Hub, dial func(*websocket.DialOptions) *testClient) {
	t.Helper()
	for range 3 {
		dial(nil)
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := h.Stats().Connections
		return n == 3, fmt.Sprintf("%d of 3 sessions open", n)
	})
}
