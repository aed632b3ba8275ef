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
)

// resumeFrom asks for every event of "show" after since.
func (c *testClient) resumeFrom(since uint64) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg := fmt.Sprintf(`{"op":"subscribe","channel":"show","since":%d}`, since)
	if err := c.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatal(err)
	}
}

// storedEvents makes a source holding n joins of "show", each with an account of accountLen bytes.
func storedEvents(n, accountLen int) *viewSource {
	src := &viewSource{v: presence.NewView()}
	for i := 1; i <= n; i++ {
		e := join(uint64(i), uint32(i))
		e.Account = strings.Repeat("a", accountLen)
		src.apply(e)
	}
	return src
}

// A resume of more events than the send queue holds, by a client that starts reading late, is paced by the client:
// it gets every event, in order, and is not closed as too slow.
func TestResumeLongerThanTheQueue(t *testing.T) {
	const n = 5000
	h, dial := serveHub(t, Config{SendQueue: 256}, storedEvents(n, 1000))
	c := dial(nil)
	c.resumeFrom(0)
	time.Sleep(500 * time.Millisecond) // the replay is queued faster than anyone reads
	c.expect("subscribed", 0, 0)
	for seq := uint64(1); seq <= n; seq++ {
		c.expect("presence", seq, 0)
	}
	if slow := h.Stats().SlowClosed; slow != 0 {
		t.Fatalf("%d clients closed as too slow", slow)
	}
}

// A resume further behind than MaxReplay gets reset and a snapshot, and no event before them.
func TestResumeOverMaxReplayResetsFirst(t *testing.T) {
	_, dial := serveHub(t, Config{MaxReplay: 1500}, storedEvents(2500, 10))
	c := dial(nil)
	c.resumeFrom(0)
	c.expect("subscribed", 0, 0)
	c.expect("reset", 0, 0)
	c.expect("snapshot", 2500, 2500)
}

// expiringSource is a source whose oldest events expire, at expireAt, once the first page of a replay is read.
type expiringSource struct {
	*viewSource
	first    atomic.Uint64
	expireAt uint64
}

func (s *expiringSource) Events(ctx context.Context, channel string, since, until uint64, limit int) ([]presence.Event, uint64, error) {
	events, stored, err := s.viewSource.Events(ctx, channel, max(since, s.first.Load()-1), until, limit)
	s.first.Store(s.expireAt)
	return events, stored, err
}

func (s *expiringSource) FirstSeq(context.Context) (uint64, error) { return s.first.Load(), nil }

// Events that expire while a resume replays them cannot leave a silent gap: the client gets reset and a snapshot.
func TestResumeWhileEventsExpire(t *testing.T) {
	src := &expiringSource{viewSource: storedEvents(3000, 10), expireAt: 2500}
	src.first.Store(1)
	_, dial := serveHub(t, Config{}, src)
	c := dial(nil)
	c.resumeFrom(0)
	c.expect("subscribed", 0, 0)
	for {
		typ, seq, _ := c.next(5 * time.Second)
		if typ == "reset" {
			break
		}
		if typ != "presence" || seq > pageSize {
			t.Fatalf("got a %q frame at seq %d, want the first page's events, then reset", typ, seq)
		}
	}
	c.expect("snapshot", 3000, 3000)
}

// A since that is not a whole number gets bad_request naming the channel, so the client knows which subscription
// failed; nothing is subscribed.
func TestBadSinceNamesTheChannel(t *testing.T) {
	h, dial := serveHub(t, Config{}, storedEvents(3, 10))
	c := dial(nil)
	for _, since := range []string{"-1", "1.5", `"41"`, "18446744073709551616"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		msg := `{"op":"subscribe","since":` + since + `,"channel":"show"}`
		if err := c.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := c.c.Read(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var f errorFrame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		if f.Type != "error" || f.Code != CodeBadRequest || f.Channel != "show" || !strings.Contains(f.Message, "since") {
			t.Fatalf("since %s: got %s, want a bad_request error for channel show about since", since, b)
		}
	}
	if n := h.Stats().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions after bad requests", n)
	}
}
