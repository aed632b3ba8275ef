package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// viewSource is a Source over a presence.View, fed by the test as the gateway's view is fed by USHER_PRESENCE.
// hook, when set, runs inside Snapshot (once): before the copy with early, after it otherwise. It is how a test
// makes an event land while a snapshot is being made.
type viewSource struct {
	mu     sync.Mutex
	v      *presence.View
	events []presence.Event
	copies int
	hook   func()
	early  bool
	// loading makes Ready false, as the gateway's view before its rosters are loaded.
	loading atomic.Bool
	// epoch is the source's Epoch (a test changes it as a stream made anew would).
	epoch atomic.Pointer[string]
	// recent is how many of the latest events Recent holds in memory, as the gateway's view does; 0: none, so
	// that every resume reads Events.
	recent atomic.Int64
	// eventReads counts the calls of Events.
	eventReads atomic.Int64
}

func (s *viewSource) apply(e presence.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v.Apply(e)
	s.events = append(s.events, e)
}

func (s *viewSource) Snapshot(channel string) presence.Snapshot {
	hook := s.hook
	s.hook = nil // Snapshot runs under the channel's snapshot lock: no other call reads hook meanwhile
	if hook != nil && s.early {
		hook()
	}
	s.mu.Lock()
	s.copies++
	snap := s.v.Snapshot(channel)
	snap.Epoch = s.Epoch()
	s.mu.Unlock()
	if hook != nil && !s.early {
		hook()
	}
	return snap
}

// lastSeq is the seq of the last event applied (any channel).
func (s *viewSource) lastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.events) == 0 {
		return 0
	}
	return s.events[len(s.events)-1].Seq
}

func (s *viewSource) Seq(channel string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v.Seq(channel)
}

func (s *viewSource) WaitSeq(context.Context, uint64) error { return nil }

func (s *viewSource) Events(_ context.Context, channel string, since, until uint64, limit int) ([]presence.Event, uint64, error) {
	s.eventReads.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []presence.Event
	var stored uint64
	for _, e := range s.events {
		if e.Channel == channel && e.Seq > since {
			stored++
			if e.Seq <= until && len(out) < limit {
				out = append(out, e)
			}
		}
	}
	return out, stored, nil
}

func (s *viewSource) Recent(channel string, since, until uint64, limit int) ([]presence.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until <= since {
		return nil, true
	}
	kept := s.events[max(0, len(s.events)-int(s.recent.Load())):]
	if len(kept) == 0 || since+1 < kept[0].Seq {
		return nil, false // an event after since may be older than those kept
	}
	var out []presence.Event
	for _, e := range kept {
		if e.Channel == channel && e.Seq > since && e.Seq <= until && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, true
}

func (s *viewSource) FirstSeq(context.Context) (uint64, error) { return 1, nil }

func (s *viewSource) Ready() bool { return !s.loading.Load() }

func (s *viewSource) Epoch() string {
	if e := s.epoch.Load(); e != nil {
		return *e
	}
	return ""
}

func join(seq uint64, uid uint32) presence.Event {
	return presence.Event{Seq: seq, Channel: "show", Event: presence.Join, Role: presence.Audience, UID: uid, ClientSeq: 1, Ts: 1, NoticeID: "n", Source: "ncs"}
}

// testClient is a real WebSocket client of a hub served over loopback.
type testClient struct {
	t testing.TB
	c *websocket.Conn
}

// serveHub serves a hub with cfg over src on loopback, and returns it with a dial for clients (opts may be nil).
func serveHub(t testing.TB, cfg Config, src Source) (*Hub, func(opts *websocket.DialOptions) *testClient) {
	return serveHubWith(t, cfg, src, nil)
}

// serveHubWith is serveHub with setup (if not nil) called on the server before it starts.
func serveHubWith(t testing.TB, cfg Config, src Source, setup func(*httptest.Server)) (*Hub, func(opts *websocket.DialOptions) *testClient) {
	h := New(cfg, src, auth.NewVerifier(testSecret))
	srv := httptest.NewUnstartedServer(h)
	if setup != nil {
		setup(srv)
	}
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Close(ctx)
		srv.Close()
	})
	tok, err := auth.Issue(testSecret, []string{"show"}, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	return h, func(opts *websocket.DialOptions) *testClient {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"?token="+tok, opts)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadLimit(64 << 20)
		t.Cleanup(func() { _ = c.CloseNow() })
		return &testClient{t: t, c: c}
	}
}

func (c *testClient) subscribe() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","channel":"show"}`)); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next frame's type and seq; typ "" when none came within wait.
func (c *testClient) next(wait time.Duration) (typ string, seq uint64, members int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, b, err := c.c.Read(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return "", 0, 0
	}
	if err != nil {
		c.t.Fatal(err)
	}
	var f struct {
		Type     string
		Seq      uint64
		Audience []presence.Member
	}
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatal(err)
	}
	return f.Type, f.Seq, len(f.Audience)
}

// expect reads the next frame and fails unless it is typ at seq (seq 0: any) with members audience members.
func (c *testClient) expect(typ string, seq uint64, members int) {
	c.t.Helper()
	gotTyp, gotSeq, gotMembers := c.next(5 * time.Second)
	if gotTyp != typ || (seq != 0 && gotSeq != seq) || gotMembers != members {
		c.t.Fatalf("got a %q frame at seq %d with %d members, want %q at %d with %d", gotTyp, gotSeq, gotMembers, typ, seq, members)
	}
}

// subscribeForSnapshot subscribes and reads the subscribed frame and a snapshot at seq with members audience members.
func (c *testClient) subscribeForSnapshot(seq uint64, members int) {
	c.t.Helper()
	c.subscribe()
	c.expect("subscribed", 0, 0)
	c.expect("snapshot", seq, members)
}

// land applies e to src and fans it out, as the gateway's view does with each stored event.
func land(h *Hub, src *viewSource, e presence.Event) {
	src.apply(e)
	h.Publish(e, nil)
}

// An event the view applied before the snapshot was copied, but fanned out only once the subscriber was attached,
// is in the snapshot and is not sent again after it.
func TestSnapshotCoversAnEventFannedOutDuringIt(t *testing.T) {
	src := &viewSource{v: presence.NewView()}
	src.apply(join(1, 1))
	h, dial := serveHub(t, Config{}, src)
	src.early = true
	src.hook = func() { land(h, src, join(2, 2)) }
	c := dial(nil)
	c.subscribeForSnapshot(2, 2)
	land(h, src, join(3, 3))
	c.expect("presence", 3, 0) // not 2 again
}

// An event that lands after the snapshot was copied reaches the subscriber after the snapshot.
func TestEventAfterTheSnapshotFollowsIt(t *testing.T) {
	src := &viewSource{v: presence.NewView()}
	src.apply(join(1, 1))
	h, dial := serveHub(t, Config{}, src)
	src.hook = func() { land(h, src, join(2, 2)) }
	c := dial(nil)
	c.subscribeForSnapshot(1, 1)
	c.expect("presence", 2, 0)
	if typ, seq, _ := c.next(200 * time.Millisecond); typ != "" {
		t.Fatalf("then a %s frame at %d: want nothing more", typ, seq)
	}
}

// Subscribers share a snapshot while the channel does not change; the next change makes a new one.
func TestSubscribersShareASnapshot(t *testing.T) {
	src := &viewSource{v: presence.NewView()}
	src.apply(join(1, 1))
	h, dial := serveHub(t, Config{}, src)
	for range 3 {
		c := dial(nil)
		c.subscribeForSnapshot(1, 1)
	}
	land(h, src, join(2, 2))
	c := dial(nil)
	c.subscribeForSnapshot(2, 2)
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.copies != 2 {
		t.Fatalf("%d snapshots made for 4 subscribers over two states of the channel; want 2", src.copies)
	}
}

// slowConn reads at most 16 KiB at a time, 10 ms apart: about 1.6 MB/s, with a small receive window.
type slowConn struct{ net.Conn }

func (c slowConn) Read(p []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return c.Conn.Read(p[:min(len(p), 16<<10)])
}

// readSnapshotSlowly subscribes a client that reads at about 1.6 MB/s to a channel of 100,000 members with
// 48-character accounts (an 8 MB snapshot: more than the kernel's buffers take at once) on a hub with cfg, and
// returns the snapshot's size, the read's error, and how many clients the hub closed as too slow.
func readSnapshotSlowly(t *testing.T, cfg Config) (int, error, int64) {
	const members = 100_000
	src := &viewSource{v: presence.NewView()}
	for uid := range uint32(members) {
		e := join(uint64(uid+1), uid+1)
		e.Account = fmt.Sprintf("account-%040d", uid)
		src.apply(e)
	}
	h, dial := serveHub(t, cfg, src)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		_ = c.(*net.TCPConn).SetReadBuffer(32 << 10)
		return slowConn{c}, nil
	}}}
	c := dial(&websocket.DialOptions{HTTPClient: client})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.subscribe()
	c.expect("subscribed", 0, 0)
	_, data, err := c.c.Read(ctx)
	if err == nil && (!strings.HasPrefix(string(data), `{"type":"snapshot"`) || len(data) < members*70) {
		t.Fatalf("got %d bytes, not the snapshot of %d members", len(data), members)
	}
	// The hub counts a slow client when it closes it, just after the failed write: give it a moment.
	for deadline := time.Now().Add(2 * time.Second); err != nil && h.Stats().SlowClosed == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return len(data), err, h.Stats().SlowClosed
}

// A client that reads a large snapshot slowly but steadily is served, not closed as too slow: the write timeout
// bounds each 64 KiB of a write, not the whole of a frame of several megabytes. (3 s: the 8 MB take about 5 s to
// read, so a timeout on the whole write fails, while 64 KiB take about 40 ms, with room for a loaded machine.)
func TestLargeSnapshotToASteadyReader(t *testing.T) {
	start := time.Now()
	n, err, slow := readSnapshotSlowly(t, Config{WriteTimeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("reading the snapshot after %s: %v (closed as slow: %d)", time.Since(start).Round(time.Millisecond), err, slow)
	}
	t.Logf("%d-byte snapshot read in %s with a 3 s write timeout", n, time.Since(start).Round(time.Millisecond))
}

// One batch must still go out within the ping interval (pings wait behind it): past it the client is closed and
// counted as too slow, however steadily it reads.
func TestSnapshotBoundByPingInterval(t *testing.T) {
	_, err, slow := readSnapshotSlowly(t, Config{WriteTimeout: time.Second, PingInterval: 2 * time.Second})
	if err == nil || slow != 1 {
		t.Fatalf("read error %v, closed as slow %d: want the client closed as too slow", err, slow)
	}
}

// A subscribe while the source is not ready (its rosters not loaded yet) gets error unavailable and nothing else;
// once it is ready, the same subscribe is served.
func TestSubscribeWhileLoading(t *testing.T) {
	src := &viewSource{v: presence.NewView()}
	src.apply(join(1, 1))
	src.loading.Store(true)
	_, dial := serveHub(t, Config{}, src)
	c := dial(nil)
	c.subscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Type, Code, Channel, Message string }
	if err := json.Unmarshal(b, &f); err != nil || f.Type != "error" || f.Code != CodeUnavailable || f.Channel != "show" || f.Message == "" {
		t.Fatalf("got %s, want error unavailable for show", b)
	}
	// Nothing else for that subscribe: the answer to a later ping comes next.
	if err := c.c.Write(ctx, websocket.MessageText, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	c.expect("pong", 0, 0)
	src.loading.Store(false)
	c.subscribeForSnapshot(1, 1)
}

// Resync closes every connection with 1012 and keeps serving: a client that reconnects subscribes again.
func TestResync(t *testing.T) {
	src := &viewSource{v: presence.NewView()}
	src.apply(join(1, 1))
	h, dial := serveHub(t, Config{}, src)
	a, b := dial(nil), dial(nil)
	a.subscribeForSnapshot(1, 1)
	b.subscribeForSnapshot(1, 1)
	h.Resync("reloading")
	for _, c := range []*testClient{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := c.c.Read(ctx)
		cancel()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusServiceRestart || ce.Reason != "reloading" {
			t.Fatalf("read after Resync: %v, want close 1012 reloading", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		st := h.Stats()
		return st.Connections == 0 && st.Subscriptions == 0, fmt.Sprintf("%+v", st)
	})
	c := dial(nil)
	c.subscribeForSnapshot(1, 1)
}
