package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/usher-presence/usher/test/testutil"
)

// Close is bounded by its context even when peers do not answer the close handshake (here: clients that never read,
// so their library never answers the close frame; coder/websocket waits 5 s for that answer).
func TestCloseBoundedByContext(t *testing.T) {
	h, dial := serveHub(t, Config{}, storedEvents(0, 0))
	for range 3 {
		dial(nil) // never reads
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	h.Close(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close with a 200 ms context took %s", d.Round(time.Millisecond))
	}
	if n := h.Stats().Connections; n != 0 {
		t.Fatalf("%d connections after Close", n)
	}
}

// Close is bounded by its context also for sessions whose close began before it: here every session was closed by
// Resync (the view's gap) just before, and their close handshakes wait on clients that never answer. Close cut only
// the sessions it closed itself, and waited out the others' handshakes (5 s in coder/websocket).
func TestCloseBoundedForSessionsAlreadyClosing(t *testing.T) {
	h, dial := serveHub(t, Config{}, storedEvents(0, 0))
	for range 3 {
		dial(nil) // never reads
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		n := h.Stats().Connections
		return n == 3, fmt.Sprintf("%d of 3 sessions open", n)
	})
	h.Resync("presence state reloading")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	h.Close(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close with a 200 ms context took %s", d.Round(time.Millisecond))
	}
}
