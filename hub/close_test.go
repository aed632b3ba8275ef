package hub

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
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

// An upgrade that Close overtakes (the session would start after closing began) is answered 1013, and its close
// handshake, which no session counts, ends with the hub: it waited 5 s for a peer that never answers.
func TestUpgradeOvertakenByCloseEndsWithTheHub(t *testing.T) {
	returned := make(chan time.Time, 1)
	h, dial := serveHubWith(t, Config{}, storedEvents(0, 0), func(srv *httptest.Server) {
		serve := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serve.ServeHTTP(w, r)
			returned <- time.Now()
		})
	})
	closed := make(chan time.Time, 1)
	h.afterAccept = func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			h.Close(ctx)
			closed <- time.Now()
		}()
		testutil.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
			h.mu.RLock()
			defer h.mu.RUnlock()
			return h.closing, "Close has not begun"
		})
	}
	dial(nil) // never reads: its library never answers the close frame
	var end, ret time.Time
	select {
	case end = <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case ret = <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the upgrade's handler did not return")
	}
	if late := ret.Sub(end); late > time.Second {
		t.Fatalf("the upgrade's handler returned %s after Close", late.Round(time.Millisecond))
	}
	if n := h.Stats().Connections; n != 0 {
		t.Fatalf("%d connections", n)
	}
}

// An upgrade that a whole Close overtook (the hub had ended before the session would start) is still answered 1013,
// as README says: the hub's end cuts the close handshake's wait for the peer, not the close frame.
func TestUpgradeAfterCloseEndedIsAnswered1013(t *testing.T) {
	h, dial := serveHub(t, Config{}, storedEvents(0, 0))
	h.afterAccept = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		h.Close(ctx) // no session: it returns at once, the hub's context ended
	}
	c := dial(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c.c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusTryAgainLater {
		t.Fatalf("the client read %v (close status %d), want the close status %d", err, got, websocket.StatusTryAgainLater)
	}
}
