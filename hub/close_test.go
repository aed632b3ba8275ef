package hub

import (
	"context"
	"testing"
	"time"
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
