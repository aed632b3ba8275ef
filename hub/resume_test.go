package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
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

// resumeModes are the two ways a resume is answered: from the events the source keeps in memory (Source.Recent),
// and from its stored events (Source.Events) when its memory does not reach back to since. The resume tests run
// in both.
var resumeModes = []struct {
	name   string
	recent int64 // viewSource.recent
}{{"stored", 0}, {"memory", 1 << 30}}

// eachResumeMode runs test once in each resume mode, with a source made by src, and checks that the hub answered
// the resumes that way: no read of stored events from memory, and none answered from memory otherwise.
func eachResumeMode(t *testing.T, src func() *viewSource, test func(t *testing.T, src *viewSource)) {
	for _, mode := range resumeModes {
		t.Run(mode.name, func(t *testing.T) {
			s := src()
			s.recent.Store(mode.recent)
			test(t, s)
			if reads := s.eventReads.Load(); (mode.recent > 0) != (reads == 0) {
				t.Errorf("%d reads of stored events, resuming from %s", reads, mode.name)
			}
		})
	}
}

// A resume of more events than the send queue holds, by a client that starts reading late, is paced by the client:
// it gets every event, in order, and is not closed as too slow.
func TestResumeLongerThanTheQueue(t *testing.T) {
	const n = 5000
	eachResumeMode(t, func() *viewSource { return storedEvents(n, 1000) }, func(t *testing.T, src *viewSource) {
		h, dial := serveHub(t, Config{SendQueue: 256}, src)
		c := dial(nil)
		c.resumeFrom(0)
		time.Sleep(500 * time.Millisecond) // the replay is queued faster than anyone reads
		c.expect("subscribed", 0, 0)
		for seq := uint64(1); seq <= n; seq++ {
			c.expect("presence", seq, 0)
		}
		if st := h.Stats(); st.SlowClosed != 0 || st.ResumedMemory+st.ResumedStored != 1 || (st.ResumedMemory == 1) != (src.recent.Load() > 0) {
			t.Fatalf("%+v: want no client closed as too slow, and one resume answered from the right place", st)
		}
	})
}

// A resume further behind than MaxReplay gets reset and a snapshot, and no event before them.
func TestResumeOverMaxReplayResetsFirst(t *testing.T) {
	eachResumeMode(t, func() *viewSource { return storedEvents(2500, 10) }, func(t *testing.T, src *viewSource) {
		_, dial := serveHub(t, Config{MaxReplay: 1500}, src)
		c := dial(nil)
		c.resumeFrom(0)
		c.expect("subscribed", 0, 0)
		c.expect("reset", 0, 0)
		c.expect("snapshot", 2500, 2500)
	})
}

// MaxReplay as large as an int goes (no bound on a replay): a resume still gets every event after since. The memory
// was asked for MaxReplay+1 of them, which wrapped around to a negative limit: none came back, and the client
// went live after the last, without the events in between.
func TestResumeWithTheLargestMaxReplay(t *testing.T) {
	eachResumeMode(t, func() *viewSource { return storedEvents(5, 10) }, func(t *testing.T, src *viewSource) {
		h, dial := serveHub(t, Config{MaxReplay: math.MaxInt}, src)
		c := dial(nil)
		c.resumeFrom(1)
		c.expect("subscribed", 0, 0)
		for seq := uint64(2); seq <= 5; seq++ {
			c.expect("presence", seq, 0)
		}
		land(h, src, join(6, 6))
		c.expect("presence", 6, 0)
	})
}

// A resume from memory gives exactly the events of the channel after since (not another channel's, nor one the
// client has), then the live ones; a since older than the memory reaches back is answered from the stored events,
// the same.
func TestResumeFromMemoryOrStore(t *testing.T) {
	for _, tc := range []struct {
		since    uint64
		memory   bool
		expected []uint64
	}{
		{39, true, nil},
		{35, true, []uint64{37, 39}},
		{30, true, []uint64{31, 33, 35, 37, 39}},
		{29, false, []uint64{31, 33, 35, 37, 39}}, // the memory cannot tell of which channel 30 was
		{28, false, []uint64{29, 31, 33, 35, 37, 39}},
		{0, false, []uint64{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33, 35, 37, 39}},
	} {
		t.Run(fmt.Sprint("since ", tc.since), func(t *testing.T) {
			src := storedEvents(0, 0)
			for seq := uint64(1); seq <= 40; seq++ {
				e := join(seq, uint32(seq))
				if seq%2 == 0 {
					e.Channel = "other"
				}
				src.apply(e)
			}
			src.recent.Store(10) // events 31 to 40
			h, dial := serveHub(t, Config{}, src)
			c := dial(nil)
			c.resumeFrom(tc.since)
			c.expect("subscribed", 0, 0)
			for _, seq := range tc.expected {
				c.expect("presence", seq, 0)
			}
			// Then live, and nothing in between.
			land(h, src, join(41, 1000))
			c.expect("presence", 41, 0)
			st := h.Stats()
			if reads := src.eventReads.Load(); (st.ResumedMemory == 1 && reads == 0) != tc.memory || st.ResumedMemory+st.ResumedStored != 1 {
				t.Errorf("%+v, %d reads of stored events; want it answered from memory: %v", st, reads, tc.memory)
			}
		})
	}
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

// quietSource holds 2 events of "show" and 8 of "other", of which the first 7 expired: "show" has been quiet since
// seq 2. Once the resume has checked that (WaitSeq, then Seq), a third event of "show" is stored, before the
// subscription attaches. It keeps no event in memory (Recent): the stored path is under test.
type quietSource struct {
	*viewSource
	checking atomic.Bool
}

func (s *quietSource) Recent(string, uint64, uint64, int) ([]presence.Event, bool) { return nil, false }

func (s *quietSource) FirstSeq(context.Context) (uint64, error) { return 8, nil }

func (s *quietSource) WaitSeq(ctx context.Context, seq uint64) error {
	s.checking.Store(true)
	return s.viewSource.WaitSeq(ctx, seq)
}

func (s *quietSource) Seq(channel string) uint64 {
	seq := s.viewSource.Seq(channel)
	if s.checking.CompareAndSwap(true, false) {
		s.apply(join(11, 3))
	}
	return seq
}

// A resume from the last event of a channel quiet since before the oldest event kept misses nothing: no reset, and
// an event of the channel stored meanwhile is replayed, not taken for one that expired.
func TestResumeAQuietChannel(t *testing.T) {
	src := &quietSource{viewSource: storedEvents(2, 10)}
	for seq := uint64(3); seq <= 10; seq++ {
		e := join(seq, uint32(seq))
		e.Channel = "other"
		src.apply(e)
	}
	_, dial := serveHub(t, Config{}, src)
	c := dial(nil)
	c.resumeFrom(2)
	c.expect("subscribed", 0, 0)
	c.expect("presence", 11, 0)
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

// resumeUnderLoad resumes from 0 over n stored events of accountLen-byte accounts (more than the socket buffers
// hold, so the replay waits for the client), lands live more events while the client does not read, then reads.
// The live events land once the replay holds the subscription's live frames back. It returns the types of the frames read, in order, and their seqs.
func resumeUnderLoad(t *testing.T, cfg Config, src *viewSource, n, accountLen, live int) (*Hub, []string, []uint64) {
	t.Helper()
	h, dial := serveHub(t, cfg, src)
	c := dial(nil)
	c.resumeFrom(0)
	waitReplaying(t, h, src)
	for i := range live {
		e := join(uint64(n+1+i), uint32(n+1+i))
		e.Account = strings.Repeat("b", accountLen)
		land(h, src, e)
	}
	var types []string
	var seqs []uint64
	for {
		typ, seq, _ := c.next(5 * time.Second)
		if typ == "" {
			return h, types, seqs
		}
		types, seqs = append(types, typ), append(seqs, seq)
		if seq == uint64(n+live) && (typ == "presence" || typ == "snapshot") {
			return h, types, seqs
		}
	}
}

// waitReplaying waits until "show" has a subscriber held back by a replay: from the stored events once it has read
// them (before, its live frames may be held only while the source's memory is asked), from memory otherwise.
func waitReplaying(t *testing.T, h *Hub, src *viewSource) {
	t.Helper()
	if src.recent.Load() == 0 {
		testutil.Eventually(t, 10*time.Second, time.Millisecond, func() (bool, string) {
			return src.eventReads.Load() > 0, "no read of stored events"
		})
	}
	waitHeld(t, h, "show")
}

// waitHeld waits until channel has a subscriber whose live frames are held back, as they are while a resume
// replays: every event published from then on waits for the end of the replay.
func waitHeld(t *testing.T, h *Hub, channel string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() (bool, string) {
		h.mu.RLock()
		ch := h.channels[channel]
		h.mu.RUnlock()
		if ch == nil {
			return false, "no subscriber of " + channel
		}
		ch.mu.Lock()
		defer ch.mu.Unlock()
		for sub := range ch.subs {
			sub.mu.Lock()
			held := !sub.live
			sub.mu.Unlock()
			if held {
				return true, ""
			}
		}
		return false, "no subscriber of " + channel + " is held back"
	})
}

// Live events that come while a long resume is paced by the client are held, then sent after the replay at the
// client's pace too: it gets every event in order, and is not closed as too slow.
func TestResumeHoldsLiveEventsAtTheClientsPace(t *testing.T) {
	const n, live = 3000, 200
	eachResumeMode(t, func() *viewSource { return storedEvents(n, 4000) }, func(t *testing.T, src *viewSource) {
		h, types, seqs := resumeUnderLoad(t, Config{SendQueue: 256}, src, n, 4000, live)
		if len(types) != 1+n+live || types[0] != "subscribed" {
			t.Fatalf("%d frames (first %q), want subscribed and %d events", len(types), types[0], n+live)
		}
		for i, seq := range seqs[1:] {
			if types[i+1] != "presence" || seq != uint64(i+1) {
				t.Fatalf("frame %d: %s at %d, want presence %d", i+1, types[i+1], seq, i+1)
			}
		}
		if slow := h.Stats().SlowClosed; slow != 0 {
			t.Fatalf("%d clients closed as too slow", slow)
		}
	})
}

// More live events than a send queue holds, while a resume waits for the client: the client gets reset and a
// snapshot that covers them, not a close, even though the replay has just filled the send queue (the reset waits
// for room, as every answer to the client does). The events land while the replay fills the queue, until the
// subscription overflows, and no more: a burst that also overflowed what is held behind the snapshot would close
// the client, as it would a live one.
func TestResumeOverflowedByLiveEventsResets(t *testing.T) {
	eachResumeMode(t, func() *viewSource { return storedEvents(3000, 4000) }, resumeOverflowedByLiveEvents)
}

func resumeOverflowedByLiveEvents(t *testing.T, src *viewSource) {
	const n = 3000
	h, dial := serveHub(t, Config{SendQueue: 64}, src)
	c := dial(nil)
	c.resumeFrom(0)
	waitReplaying(t, h, src)
	seq := uint64(n)
	for !overflowed(h, "show") {
		if seq == n+1000 {
			t.Fatal("1,000 live events held, and no overflow")
		}
		seq++
		e := join(seq, uint32(seq))
		e.Account = strings.Repeat("b", 4000)
		land(h, src, e)
	}
	var types []string
	var seqs []uint64
	for len(types) == 0 || types[len(types)-1] != "snapshot" {
		typ, at, _ := c.next(5 * time.Second)
		if typ == "" {
			t.Fatalf("no more frames after %d: %v", len(types), types[max(0, len(types)-3):])
		}
		types, seqs = append(types, typ), append(seqs, at)
	}
	last := len(types) - 1
	if last < 2 || seqs[last] != seq || types[last-1] != "reset" {
		t.Fatalf("the frames end with %v at %v, want reset, then a snapshot at %d", types[max(0, last-1):], seqs[max(0, last-1):], seq)
	}
	if replayed := last - 2; replayed >= n { // the snapshot covers them: the replay stops once it overflowed
		t.Fatalf("%d events replayed before the reset, all of them", replayed)
	}
	land(h, src, join(seq+1, 1))
	c.expect("presence", seq+1, 0)
	if slow := h.Stats().SlowClosed; slow != 0 {
		t.Fatalf("%d clients closed as too slow", slow)
	}
}

// overflowed reports whether a subscriber of channel had more live frames held back than its send queue holds.
func overflowed(h *Hub, channel string) bool {
	h.mu.RLock()
	ch := h.channels[channel]
	h.mu.RUnlock()
	if ch == nil {
		return false
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for sub := range ch.subs {
		sub.mu.Lock()
		o := sub.overflow
		sub.mu.Unlock()
		if o {
			return true
		}
	}
	return false
}

// A resume that goes at a slow client's pace for longer than the ping interval does not get the client dropped:
// the server goes on reading the client's frames, pongs among them, while the replay waits. (Socket buffers of
// 256 KiB on both ends, so that what waits in them takes the client a fraction of a second to read, not seconds: a
// ping written behind them is answered in time. Much smaller ones stall loopback TCP on window updates.)
func TestLongResumeDoesNotMissPongs(t *testing.T) {
	const n = 3000
	// A short send queue keeps each batch far inside the ping interval, which bounds a batch's write; the replay
	// must stay inside its own 10 s bound, under -race on a loaded machine too.
	const interval = 1500 * time.Millisecond
	h, dial := serveHubWith(t, Config{SendQueue: 16, PingInterval: interval}, storedEvents(n, 4000), func(srv *httptest.Server) {
		srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
			if tc, ok := c.(*net.TCPConn); ok && st == http.StateNew {
				_ = tc.SetWriteBuffer(256 << 10)
			}
		}
	})
	dialer := &net.Dialer{}
	c := dial(&websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(256 << 10)
			}
			return c, err
		}}}})
	c.resumeFrom(0)
	c.expect("subscribed", 0, 0)
	start := time.Now()
	for seq := uint64(1); seq <= n; seq++ {
		c.expect("presence", seq, 0)
		time.Sleep(time.Millisecond) // a slow reader: over 3 s for the replay
	}
	if d := time.Since(start); d < 2*interval {
		t.Fatalf("the replay took %s: too short to span a ping and its timeout, the test proves nothing", d)
	}
	if st := h.Stats(); st.Connections != 1 {
		t.Fatalf("%+v: the client was dropped", st)
	}
}

// Client frames wait for their answers in a bounded queue: a client that sends far more than it lets the server
// answer (here, pings while a resume waits for it to read) is closed with 1008.
func TestTooManyFramesWaiting(t *testing.T) {
	for _, tc := range []struct{ maxSubs, bound int }{{40, 2*40 + 16}, {2, 64}} {
		t.Run(fmt.Sprint(tc.maxSubs, " subscriptions"), func(t *testing.T) {
			h, dial := serveHub(t, Config{MaxSubscriptions: tc.maxSubs}, storedEvents(3000, 4000))
			c := dial(nil)
			c.resumeFrom(0) // the replay waits for the client, which does not read yet
			waitHeld(t, h, "show")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Up to the bound (the resume's own frame is being answered): the connection stays.
			for i := range tc.bound {
				msg := `{"op":"ping"}`
				if i%2 == 1 { // an unsubscribe gets no answer, and waits all the same
					msg = fmt.Sprintf(`{"op":"unsubscribe","channel":"c-%d"}`, i)
				}
				if err := c.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatal(err)
				}
			}
			testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
				h.mu.RLock()
				defer h.mu.RUnlock()
				for s := range h.sessions {
					s.mu.Lock()
					n := len(s.ops)
					s.mu.Unlock()
					return n == tc.bound, fmt.Sprintf("%d frames waiting, want %d", n, tc.bound)
				}
				return false, "no session"
			})
			if n := h.Stats().Connections; n != 1 {
				t.Fatalf("%d connections with %d frames waiting, the most allowed", n, tc.bound)
			}
			// One more: closed.
			_ = c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"ping"}`))
			for {
				if _, _, err := c.c.Read(ctx); err != nil {
					if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
						t.Fatalf("closed with %v (status %d), want 1008", err, got)
					}
					break
				}
			}
			testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
				return h.Stats().Connections == 0, "still connected"
			})
		})
	}
}

// A resume names the epoch its since counts in: one of another epoch (the stream was made anew, its seqs started
// again) gets reset and a snapshot of this epoch, even where the seq exists here; one of this epoch, or none (a
// client that does not send it), is resumed.
func TestResumeFromAnotherEpoch(t *testing.T) {
	src := storedEvents(5, 1)
	epoch := "1764115200000"
	src.epoch.Store(&epoch)
	_, dial := serveHub(t, Config{}, src)
	resume := func(c *testClient, field string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","channel":"show","since":2`+field+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, field := range []string{``, `,"epoch":"` + epoch + `"`} {
		c := dial(nil)
		resume(c, field)
		c.expect("subscribed", 0, 0)
		for seq := uint64(3); seq <= 5; seq++ {
			c.expect("presence", seq, 0)
		}
	}

	c := dial(nil)
	resume(c, `,"epoch":"1700000000000"`)
	c.expect("subscribed", 0, 0)
	c.expect("reset", 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var snap presence.Snapshot
	if err := json.Unmarshal(b, &snap); err != nil || !strings.Contains(string(b), `"type":"snapshot"`) || snap.Seq != 5 || snap.Epoch != epoch {
		t.Fatalf("after the reset: %s (%v); want the snapshot at 5 of epoch %s", b, err, epoch)
	}

	// A snapshot built before the stream was made anew is not served after it, even to a subscriber at a lower seq.
	src2 := storedEvents(2, 1)
	src.mu.Lock()
	src.v, src.events = src2.v, src2.events
	src.mu.Unlock()
	newer := "1764115300000"
	src.epoch.Store(&newer)
	c2 := dial(nil)
	c2.subscribe()
	c2.expect("subscribed", 0, 0)
	c2.expect("snapshot", 2, 2)
}

// A subscribe with an epoch that is not a string is refused with bad_request naming the field.
func TestBadEpoch(t *testing.T) {
	_, dial := serveHub(t, Config{}, storedEvents(1, 1))
	c := dial(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","channel":"show","since":1,"epoch":17}`)); err != nil {
		t.Fatal(err)
	}
	_, b, err := c.c.Read(ctx)
	if err != nil || !strings.Contains(string(b), `"code":"bad_request"`) || !strings.Contains(string(b), "epoch must be a string") {
		t.Fatalf("got %s (%v)", b, err)
	}
}

// An answer to the client (here a pong) that finds the send queue full, as a replay may just have left it, waits
// for room rather than closing the client as too slow; the client then gets it.
func TestAnswerWaitsForRoom(t *testing.T) {
	h, dial := serveHub(t, Config{SendQueue: 8}, storedEvents(1, 1))
	c := dial(nil)
	var s *session
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() (bool, string) {
		h.mu.RLock()
		defer h.mu.RUnlock()
		for x := range h.sessions {
			s = x
		}
		return s != nil, "no session"
	})
	// The queue is full, and its writer busy (as if blocked on the socket): nothing makes room until the test does.
	s.mu.Lock()
	writing := s.writing
	s.writing = true
	for range 8 {
		s.queue = append(s.queue, outFrame{data: []byte(`{"type":"pong"}`)})
	}
	s.mu.Unlock()
	if writing {
		t.Fatal("the writer was running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() (bool, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed || s.working && len(s.ops) == 0, "the ping is not taken yet"
	})
	// Being answered: it waits, and the client is not closed (a close would come at once; 200 ms is plenty).
	time.Sleep(200 * time.Millisecond)
	if s.isClosed() {
		t.Fatal("closed with its queue full")
	}
	s.mu.Lock()
	s.writing, s.queue = false, nil
	s.mu.Unlock()
	s.room <- struct{}{}
	c.expect("pong", 0, 0)
	if slow := h.Stats().SlowClosed; slow != 0 {
		t.Fatalf("%d clients closed as too slow", slow)
	}
}

// landingSource lands live events of "show" (applied, then fanned out, as the view does) while the hub asks its
// memory, the subscription attached with its live frames held: from memory they are held behind the replay; when
// the memory does not reach back, the subscription is detached and attached again for the stored events, and they
// must be among those.
type landingSource struct {
	*viewSource
	h    *Hub
	next atomic.Uint64 // the seq of the next event to land; 0: none
}

func (s *landingSource) Recent(channel string, since, until uint64, limit int) ([]presence.Event, bool) {
	if seq := s.next.Swap(0); seq > 0 {
		land(s.h, s.viewSource, join(seq, uint32(seq)))
		land(s.h, s.viewSource, join(seq+1, uint32(seq+1)))
	}
	return s.viewSource.Recent(channel, since, until, limit)
}

// Events that come while the hub asks the source's memory are neither lost nor sent twice, whether the memory then
// answers the resume or the stored events do.
func TestResumeWithEventsLandingMeanwhile(t *testing.T) {
	eachResumeMode(t, func() *viewSource { return storedEvents(5, 10) }, func(t *testing.T, vs *viewSource) {
		src := &landingSource{viewSource: vs}
		h, dial := serveHub(t, Config{}, src)
		src.h = h
		src.next.Store(6)
		c := dial(nil)
		c.resumeFrom(2)
		c.expect("subscribed", 0, 0)
		for seq := uint64(3); seq <= 7; seq++ {
			c.expect("presence", seq, 0)
		}
		land(h, vs, join(8, 8))
		c.expect("presence", 8, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		c.expect("pong", 0, 0) // and no event again before it
	})
}

// stalledSource holds every read of stored events until the reader's context ends: a resume from the stream that
// waits on a slow NATS.
type stalledSource struct {
	*viewSource
	reading atomic.Bool
}

func (s *stalledSource) Events(ctx context.Context, channel string, since, until uint64, limit int) ([]presence.Event, uint64, error) {
	s.reading.Store(true)
	<-ctx.Done()
	return nil, 0, ctx.Err()
}

// A client that goes while its resume reads the stored events ends the resume quietly: its cancelled read is no
// failure to log at warn, and it gets no reset or snapshot.
func TestClientGoneDuringAResume(t *testing.T) {
	var logs testutil.SyncBuffer
	src := &stalledSource{viewSource: storedEvents(3, 10)}
	h, dial := serveHub(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, src)
	c := dial(nil)
	c.resumeFrom(1)
	c.expect("subscribed", 0, 0)
	testutil.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) { return src.reading.Load(), "no read of stored events" })
	_ = c.c.CloseNow()
	testutil.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		return h.Stats().Connections == 0, "the session is still open"
	})
	closeWithin(t, h, time.Second) // waits for the session's goroutines, its request worker among them
	if strings.Contains(logs.String(), "resume not possible") {
		t.Fatalf("logged:\n%s", logs.String())
	}
}
