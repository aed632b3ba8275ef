package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

// A client that stops reading is closed as too slow once its send queue is full: the queue's bound alone does it
// here (the write timeout and the ping interval are an hour). Publish never waits for it, and another subscriber
// of the channel, which reads, gets every event in order.
func TestStalledClientClosedAtItsQueueBound(t *testing.T) {
	// 6000 events of about 4 KB: far more than the socket buffers hold for the stalled client.
	const n, queue = 6000, 64
	src := &viewSource{v: presence.NewView()}
	h, dial := serveHub(t, Config{SendQueue: queue, WriteTimeout: time.Hour, PingInterval: time.Hour}, src)
	stalled, reader := dial(nil), dial(nil)
	stalled.subscribeForSnapshot(0, 0)
	reader.subscribeForSnapshot(0, 0)

	// The reader reads all the time; the publisher keeps at most half a queue ahead of it, so that only the stalled
	// client can fill its queue.
	var read atomic.Uint64
	readerDone := make(chan error, 1)
	go func() {
		for after := uint64(0); after < n; {
			typ, seq, _ := reader.next(30 * time.Second)
			if typ != "presence" || seq != after+1 {
				readerDone <- fmt.Errorf("the reader got a %q frame at seq %d after %d", typ, seq, after)
				return
			}
			after = seq
			read.Store(after)
		}
		readerDone <- nil
	}()
	published := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := uint64(1); i <= n; i++ {
			for read.Load()+queue/2 < i {
				select {
				case <-ctx.Done():
					published <- fmt.Errorf("the reader read %d of %d events", read.Load(), n)
					return
				case <-time.After(time.Millisecond):
				}
			}
			e := join(i, uint32(i))
			e.Account = strings.Repeat("a", 4000)
			land(h, src, e)
		}
		published <- nil
	}()
	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Publish waited for a client that does not read")
	}
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		st := h.Stats()
		return st.SlowClosed == 1 && st.Connections == 1, fmt.Sprintf("%+v: the stalled client is not closed as too slow", st)
	})
	// The stalled client, reading at last, finds its connection closed (4008, or dropped if the close frame could not
	// be written behind what was on its way).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	for frames := 0; err == nil; frames++ {
		var b []byte
		if _, b, err = stalled.c.Read(ctx); err == nil {
			var f struct{ Type string }
			if jerr := json.Unmarshal(b, &f); jerr != nil || f.Type != "presence" || frames > n {
				t.Fatalf("stalled client: frame %d: %.100s", frames, b)
			}
		}
	}
	if code := websocket.CloseStatus(err); code != CloseTooSlow && code != -1 {
		t.Fatalf("stalled client: %v, want close %d or a dropped connection", err, CloseTooSlow)
	}
}
