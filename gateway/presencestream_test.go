package gateway

// Tests on a bare USHER_PRESENCE stream written by the test: the view loading and missing events, and reads of
// stored events.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/gateway/subject"
	"github.com/usher-presence/usher/hub"
	"github.com/usher-presence/usher/test/testutil"
)

// gatedStore holds every GetInfo until gate is closed: a checkpoint that takes a while to load (a large roster, a
// NATS cluster electing a leader).
type gatedStore struct {
	jetstream.ObjectStore
	gate chan struct{}
}

func (s gatedStore) GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.ObjectStore.GetInfo(ctx, name, opts...)
}

// viewSource is the gateway's hub source over a bare liveView, with no stored events to replay.
type viewSource struct{ lv *liveView }

func (s viewSource) Snapshot(ch string) presence.Snapshot { return s.lv.snapshot(ch) }
func (s viewSource) Seq(ch string) uint64                 { return s.lv.channelSeq(ch) }
func (s viewSource) WaitSeq(ctx context.Context, seq uint64) error {
	return s.lv.waitSeq(ctx, seq)
}
func (s viewSource) Events(context.Context, string, uint64, uint64, int) ([]presence.Event, uint64, error) {
	return nil, 0, nil
}
func (s viewSource) Recent(string, uint64, uint64, int) ([]presence.Event, bool) { return nil, false }
func (s viewSource) FirstSeq(context.Context) (uint64, error)                    { return 1, nil }
func (s viewSource) Ready() bool                                                 { return s.lv.ready.Load() }
func (s viewSource) Epoch() string                                               { return s.lv.epochNow() }

var testRules = presence.Rules{Retention: time.Minute}

// presenceWriter plays the applier: it folds notifications into a state and stores the events in USHER_PRESENCE.
type presenceWriter struct {
	t       *testing.T
	ctx     context.Context
	js      jetstream.JetStream
	buckets bus.Buckets
	state   *presence.State
	seq     uint64
}

func newPresenceWriter(t *testing.T) *presenceWriter {
	js, ctx := testJetStream(t, 30*time.Second)
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &presenceWriter{t: t, ctx: ctx, js: js, buckets: buckets, state: presence.NewState(testRules)}
}

// join stores uid's audience join to channel X.
func (w *presenceWriter) join(uid uint32) {
	now := time.Now().UnixMilli()
	evs, _ := w.state.Apply(presence.Notice{NoticeID: fmt.Sprint("n", uid), Type: ncs.AudienceJoin, ReceivedMs: now,
		Event: &ncs.ChannelEvent{ChannelName: "X", UID: uid, ClientSeq: int64(uid), Ts: now / 1000}})
	for _, e := range evs {
		w.seq++
		e.Seq = w.seq
		w.state.Stored(e.Channel, e.Seq)
		b, _ := json.Marshal(e)
		if _, err := w.js.Publish(w.ctx, subject.Presence(e.Channel), b); err != nil {
			w.t.Fatal(err)
		}
	}
}

// checkpoint stores the state as the applier's checkpoint.
func (w *presenceWriter) checkpoint() {
	cp, _ := json.Marshal(checkpoint{NCSSeq: w.seq, PresenceSeq: w.seq, State: w.state})
	if _, err := w.buckets.Checkpoints.PutBytes(w.ctx, checkpointObject, cp); err != nil {
		w.t.Fatal(err)
	}
}

// runView runs lv until the test ends.
func runView(t *testing.T, lv *liveView) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); lv.run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
}

func audienceOf(s presence.Snapshot) []uint32 {
	out := []uint32{}
	for _, m := range s.Audience {
		out = append(out, m.UID)
	}
	slices.Sort(out)
	return out
}

// A client that subscribes while the view has not loaded its checkpoint yet (the gateway serves anyway once
// ViewCatchUp has passed) gets error unavailable, not an empty roster at seq 0 followed by only the events after
// the checkpoint; subscribing again once the checkpoint is in gives the whole roster.
func TestNoSnapshotBeforeTheViewLoaded(t *testing.T) {
	t.Parallel()
	w := newPresenceWriter(t)
	w.join(1)
	w.join(2)
	w.checkpoint()

	gate := make(chan struct{})
	var h *hub.Hub
	lv := newLiveView(w.js, gatedStore{w.buckets.Checkpoints, gate}, testRules, slog.New(slog.DiscardHandler),
		func(e presence.Event, raw []byte) { h.Publish(e, raw) })
	const secret = "0123456789abcdef0123456789abcdef"
	h = hub.New(hub.Config{}, viewSource{lv}, auth.NewVerifier(secret))
	t.Cleanup(func() { h.Close(context.Background()) })
	runView(t, lv)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tok, _ := auth.Issue(secret, []string{"X"}, time.Minute, "")
	c, _, err := websocket.Dial(w.ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	type frame struct {
		Type, Code string
		Seq        uint64
		Audience   []presence.Member
	}
	subscribe := func() frame {
		if err := c.Write(w.ctx, websocket.MessageText, []byte(`{"op":"subscribe","channel":"X"}`)); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		defer cancel()
		_, b, err := c.Read(rctx)
		if err != nil {
			t.Fatal(err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		if f.Type == "subscribed" {
			if _, b, err = c.Read(rctx); err != nil {
				t.Fatal(err)
			}
			f = frame{}
			_ = json.Unmarshal(b, &f)
		}
		return f
	}
	if f := subscribe(); f.Type != "error" || f.Code != hub.CodeUnavailable {
		t.Fatalf("subscribe before the checkpoint loaded: %+v, want error unavailable", f)
	}
	close(gate)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) { return lv.ready.Load(), "not ready" })
	f := subscribe()
	if got := audienceOf(presence.Snapshot{Audience: f.Audience}); f.Type != "snapshot" || f.Seq != w.seq || !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("subscribe once loaded: %+v, want the snapshot of uids 1 and 2 at seq %d", f, w.seq)
	}
}

// expire removes the events before seq from USHER_PRESENCE, as its max age does.
func (w *presenceWriter) expire(seq uint64) {
	ps, err := w.js.Stream(w.ctx, bus.PresenceStream)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := ps.Purge(w.ctx, jetstream.WithPurgeSequence(seq)); err != nil {
		w.t.Fatal(err)
	}
}

// remove deletes event seq from USHER_PRESENCE.
func (w *presenceWriter) remove(seq uint64) {
	ps, err := w.js.Stream(w.ctx, bus.PresenceStream)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := ps.DeleteMsg(w.ctx, seq); err != nil {
		w.t.Fatal(err)
	}
}

// A view that starts from a checkpoint older than the oldest event kept (every instance down for longer than
// USHER_PRESENCE_MAX_AGE after the last checkpoint) does not serve, rather than go on from the oldest event kept
// with a roster that misses those before it; it serves from a checkpoint past them.
func TestViewStartsOnlyFromACheckpointPastExpiredEvents(t *testing.T) {
	t.Parallel()
	w := newPresenceWriter(t)
	w.join(1)
	w.checkpoint()
	w.join(2) // after the last checkpoint; then every instance goes down
	w.join(3) // a new applier replays the notifications and stores what follows
	w.expire(3)

	var logs testutil.SyncBuffer
	var gaps atomic.Int32
	lv := newLiveView(w.js, w.buckets.Checkpoints, testRules, slog.New(slog.NewJSONHandler(&logs, nil)), func(presence.Event, []byte) {})
	lv.onGap = func() { gaps.Add(1) } // only a view that served has anything to take back
	runView(t, lv)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		return strings.Contains(logs.String(), "missed events"), "no word of the missed events"
	})
	if lv.ready.Load() {
		t.Fatalf("the view serves from a checkpoint at 1 while events up to 2 are gone: %v", audienceOf(lv.snapshot("X")))
	}
	w.checkpoint() // the new applier's next checkpoint: uids 1, 2 and 3 at seq 3
	testutil.Eventually(t, 3*gapRetry, 10*time.Millisecond, func() (bool, string) {
		return lv.ready.Load() && lv.lastSeq() == w.seq, fmt.Sprintf("ready %v at seq %d", lv.ready.Load(), lv.lastSeq())
	})
	if got := audienceOf(lv.snapshot("X")); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("the view holds %v, want uids 1, 2 and 3", got)
	}
	if n := gaps.Load(); n != 0 {
		t.Fatalf("the view served from the old checkpoint before it found the gap (onGap called %d times)", n)
	}
}

// A view that was serving and finds, when it reads on, that events expired before it read them (this instance cut
// off from NATS for longer than USHER_PRESENCE_MAX_AGE) stops serving and calls onGap (the hub closes its
// connections: what they were sent may be wrong), then serves again from a checkpoint past the gap: whether an
// event follows the missing ones (the view sees its seq jump) or none does (the view asks the stream).
func TestViewThatMissedEventsStopsServing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lose func(w *presenceWriter) // while the view is cut off, after events 2 and 3 were stored
	}{
		{"an event after them", func(w *presenceWriter) { w.expire(3) }},
		{"none after them", func(w *presenceWriter) { w.expire(4) }},
		// An event deleted from the middle (by hand: Usher never does): the view must not go back to a checkpoint
		// before it, find it missing again, and close its connections every few seconds.
		{"a hole", func(w *presenceWriter) { w.join(4); w.remove(3) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newPresenceWriter(t)
			w.join(1)
			w.checkpoint()
			var gaps atomic.Int32
			lv := newLiveView(w.js, w.buckets.Checkpoints, testRules, slog.New(slog.DiscardHandler), func(presence.Event, []byte) {})
			lv.onGap = func() { gaps.Add(1) }
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); lv.run(ctx) }()
			testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
				return lv.ready.Load() && lv.lastSeq() == 1, fmt.Sprintf("ready %v at seq %d", lv.ready.Load(), lv.lastSeq())
			})
			stop() // cut off
			<-done
			w.join(2)
			w.join(3)
			tc.lose(w)
			runView(t, lv) // back: it reads on from event 2, which is gone
			testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
				return gaps.Load() == 1 && !lv.ready.Load(), fmt.Sprintf("%d gaps, ready %v", gaps.Load(), lv.ready.Load())
			})
			// With no newer checkpoint, the view's next attempts change nothing: it does not serve again from the old
			// one (and find the gap again).
			time.Sleep(gapRetry + time.Second)
			if n, ready := gaps.Load(), lv.ready.Load(); n != 1 || ready {
				t.Fatalf("%d gaps, ready %v before a checkpoint past them", n, ready)
			}
			w.checkpoint()
			testutil.Eventually(t, 3*gapRetry, 10*time.Millisecond, func() (bool, string) {
				return lv.ready.Load() && lv.lastSeq() == w.seq, fmt.Sprintf("ready %v at seq %d", lv.ready.Load(), lv.lastSeq())
			})
			want := []uint32{}
			for uid := range uint32(w.seq) {
				want = append(want, uid+1)
			}
			if got := audienceOf(lv.snapshot("X")); !slices.Equal(got, want) {
				t.Fatalf("the view holds %v, want %v", got, want)
			}
			if n := gaps.Load(); n != 1 {
				t.Fatalf("onGap called %d times, want once", n)
			}
		})
	}
}

// consumerCounter is a JetStream that counts the ordered consumers made and not yet deleted, and the most at once.
type consumerCounter struct {
	jetstream.JetStream
	live, most atomic.Int32
}

func (c *consumerCounter) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	n := c.live.Add(1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
	time.Sleep(20 * time.Millisecond) // a slow server: reads overlap
	return c.JetStream.OrderedConsumer(ctx, stream, cfg)
}

func (c *consumerCounter) DeleteConsumer(ctx context.Context, stream, name string) error {
	c.live.Add(-1)
	return c.JetStream.DeleteConsumer(ctx, stream, name)
}

// Reads of stored events (GET .../events, WebSocket resumes) run at most cap(g.reads) at once, each with a consumer
// on the NATS server; the others wait their turn and are answered too.
func TestEventReadsAreBounded(t *testing.T) {
	t.Parallel()
	w := newPresenceWriter(t)
	w.join(1)
	w.join(2)
	js := &consumerCounter{JetStream: w.js}
	g := &Gateway{js: js, reads: make(chan struct{}, 2)}
	const readers = 12
	errs := make(chan error, readers)
	for range readers {
		go func() {
			events, _, err := g.events(w.ctx, "X", 0, 10)
			if err == nil && len(events) != 2 {
				err = fmt.Errorf("read %d events, want 2", len(events))
			}
			errs <- err
		}()
	}
	for range readers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if most := js.most.Load(); most > 2 {
		t.Fatalf("%d consumers at once, want at most 2", most)
	}
}

// USHER_PRESENCE made anew while a view follows it and events keep coming: the new stream soon holds the seq the
// view waits for, and the view must not take the new stream's events for the old one's for as long as they come.
// It stops serving (and its clients get reset and a snapshot) once it sees the stream's epoch change, busy or idle.
func TestViewNoticesAStreamMadeAnewWhileBusy(t *testing.T) {
	t.Parallel()
	w := newPresenceWriter(t)
	for uid := range uint32(3) {
		w.join(uid + 1)
	}
	w.checkpoint()
	var gaps atomic.Int32
	lv := newLiveView(w.js, w.buckets.Checkpoints, testRules, slog.New(slog.DiscardHandler), func(presence.Event, []byte) {})
	lv.onGap = func() { gaps.Add(1) }
	runView(t, lv)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		return lv.ready.Load() && lv.lastSeq() == 3, fmt.Sprintf("ready %v at seq %d", lv.ready.Load(), lv.lastSeq())
	})
	old := lv.epochNow()

	// Made anew; the applier goes on in it from the checkpoint's rosters, clamped to it, and saves them first.
	if err := w.js.DeleteStream(w.ctx, bus.PresenceStream); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureStreams(w.ctx, w.js, bus.StreamConfig{Dedup: time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	w.seq = 0
	w.state.ClampSeqs(0)
	w.checkpoint()
	uid := uint32(3)
	for range 4 { // past the view's seq at once
		uid++
		w.join(uid)
	}
	// An event every 100 ms: the view is never idle for long.
	deadline := time.Now().Add(4 * stallCheck)
	for gaps.Load() == 0 && lv.epochNow() == old {
		if time.Now().After(deadline) {
			t.Fatalf("the view still serves the old stream's rosters %s after it was made anew, at seq %d with %v",
				4*stallCheck, lv.lastSeq(), audienceOf(lv.snapshot("X")))
		}
		uid++
		w.join(uid)
		time.Sleep(100 * time.Millisecond)
	}
	testutil.Eventually(t, 3*gapRetry, 10*time.Millisecond, func() (bool, string) {
		return lv.ready.Load() && lv.epochNow() != old && lv.lastSeq() == w.seq,
			fmt.Sprintf("ready %v at seq %d of %d, epoch %s (old %s)", lv.ready.Load(), lv.lastSeq(), w.seq, lv.epochNow(), old)
	})
	want := []uint32{}
	for u := range uid {
		want = append(want, u+1)
	}
	if got := audienceOf(lv.snapshot("X")); !slices.Equal(got, want) {
		t.Fatalf("the view holds %v, want %v", got, want)
	}
}

// slowStreamInfo answers USHER_PRESENCE's stream info requests only after delay: a JetStream API slow under load
// (its answers go through the stream's leader) while messages still flow.
type slowStreamInfo struct {
	jetstream.JetStream
	delay atomic.Int64 // nanoseconds
}

func (s *slowStreamInfo) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if d := time.Duration(s.delay.Load()); d > 0 && name == bus.PresenceStream {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.JetStream.Stream(ctx, name)
}

// The view asks for USHER_PRESENCE's state every 2 s while events come (its epoch, its last seq). When that answer
// is slow, the events must not wait for it: each is folded in (and fanned out to the WebSockets) as it comes, not
// one per answer.
func TestViewEventsDoNotWaitForASlowStreamCheck(t *testing.T) {
	t.Parallel()
	w := newPresenceWriter(t)
	js := &slowStreamInfo{JetStream: w.js}
	lv := viewAfterThreeJoins(t, w, js, nil)
	// The consumer's creation is checked against the stream's answer, which events cannot do without.
	waitFollowing(t, w, lv)

	js.delay.Store(int64(3 * time.Second))
	var worst time.Duration
	for uid, start := uint32(5), time.Now(); time.Since(start) < 3*stallCheck; uid++ {
		w.join(uid)
		published := time.Now()
		for lv.lastSeq() < w.seq {
			if time.Since(published) > time.Second {
				t.Fatalf("event %d not in the view %s after it was stored (the view at %d); the view waits for its stream check",
					w.seq, time.Since(published).Round(time.Millisecond), lv.lastSeq())
			}
			time.Sleep(5 * time.Millisecond)
		}
		worst = max(worst, time.Since(published))
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("slowest event: %s", worst)
}

// editedStreamInfo answers USHER_PRESENCE's stream info with its state changed by an edit, once armed: as a NATS
// cluster whose state trails what its consumers delivered (the next answer only), or a stream restored from an
// older backup (every answer).
type editedStreamInfo struct {
	jetstream.JetStream
	edit atomic.Pointer[streamEdit]
}

type streamEdit struct {
	change func(*jetstream.StreamState)
	once   bool // the next answer only
}

type editedStream struct {
	jetstream.Stream
	change func(*jetstream.StreamState)
}

func (s editedStream) CachedInfo() *jetstream.StreamInfo {
	info := *s.Stream.CachedInfo()
	s.change(&info.State)
	return &info
}

func (s *editedStreamInfo) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := s.JetStream.Stream(ctx, name)
	if e := s.edit.Load(); err == nil && e != nil && name == bus.PresenceStream {
		if e.once && !s.edit.CompareAndSwap(e, nil) {
			return st, err // another answer took it
		}
		return editedStream{Stream: st, change: e.change}, nil
	}
	return st, err
}

// arm changes the next answer (once), or every answer from now on.
func (s *editedStreamInfo) arm(change func(*jetstream.StreamState), once bool) {
	s.edit.Store(&streamEdit{change: change, once: once})
}

// A stream state that answers once a little behind what the view read is not a stream restored from a backup: the
// view goes on serving (it reloaded, closing every WebSocket of the instance, on a NATS cluster under load).
func TestViewToleratesAStreamStateALittleBehind(t *testing.T) {
	t.Parallel()
	w := newPresenceWriter(t)
	js := &editedStreamInfo{JetStream: w.js}
	var gaps atomic.Int32
	lv := viewAfterThreeJoins(t, w, js, func() { gaps.Add(1) })
	// Armed before the view made its consumer, the lag went to the consumer's creation check, which reads only when
	// the stream was made: no check of the stream's state saw it, and the test passed whatever the view did with it.
	waitFollowing(t, w, lv)
	js.arm(func(st *jetstream.StreamState) { st.LastSeq -= min(2, st.LastSeq) }, true)
	for uid, start := uint32(5), time.Now(); time.Since(start) < 3*stallCheck; uid++ { // three checks, or more
		w.join(uid)
		time.Sleep(100 * time.Millisecond)
	}
	if n := gaps.Load(); n != 0 || !lv.ready.Load() {
		t.Fatalf("the view stopped serving %d times (ready %v) after one stream state a little behind", n, lv.ready.Load())
	}
	if js.edit.Load() != nil {
		t.Fatal("the view asked for the stream's state no more")
	}
}

// viewAfterThreeJoins stores three joins through w and a checkpoint of them, then runs a view reading through js
// (w's JetStream, wrapped by the test), with onGap, and waits until it serves the three.
func viewAfterThreeJoins(t *testing.T, w *presenceWriter, js jetstream.JetStream, onGap func()) *liveView {
	t.Helper()
	for uid := range uint32(3) {
		w.join(uid + 1)
	}
	w.checkpoint()
	lv := newLiveView(js, w.buckets.Checkpoints, testRules, slog.New(slog.DiscardHandler), func(presence.Event, []byte) {})
	lv.onGap = onGap
	runView(t, lv)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		return lv.ready.Load() && lv.lastSeq() == 3, fmt.Sprintf("ready %v at seq %d", lv.ready.Load(), lv.lastSeq())
	})
	return lv
}

// waitFollowing stores one more join through w and waits until lv holds it. A view serves once it loaded the
// checkpoint, and makes its consumer after (asking the stream when it was made): an event it delivers says it has
// one, and that its next question about the stream is a periodic check of its state.
func waitFollowing(t *testing.T, w *presenceWriter, lv *liveView) {
	t.Helper()
	w.join(uint32(w.seq) + 1)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, func() (bool, string) {
		return lv.lastSeq() == w.seq, fmt.Sprintf("view at %d, want %d", lv.lastSeq(), w.seq)
	})
}

// A view that once missed events (up to seq 3), and served again from a checkpoint past them, takes a later
// checkpoint before those events when the stream is restored behind them: the applier goes on from the restored
// stream's last event and saves its checkpoint there. It used to refuse every checkpoint before the events it had
// once missed, and did not serve until the stream grew past them.
func TestViewAfterAGapTakesTheCheckpointOfAStreamRestoredBehindIt(t *testing.T) {
	t.Parallel()
	w := newPresenceWriter(t)
	w.join(1)
	w.checkpoint()
	cp1, err := w.buckets.Checkpoints.GetBytes(w.ctx, checkpointObject)
	if err != nil {
		t.Fatal(err)
	}
	js := &editedStreamInfo{JetStream: w.js}
	lv := newLiveView(js, w.buckets.Checkpoints, testRules, slog.New(slog.DiscardHandler), func(presence.Event, []byte) {})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); lv.run(ctx) }()
	serving := func(seq uint64, within time.Duration) {
		t.Helper()
		testutil.Eventually(t, within, 10*time.Millisecond, func() (bool, string) {
			return lv.ready.Load() && lv.lastSeq() == seq, fmt.Sprintf("ready %v at seq %d, want %d", lv.ready.Load(), lv.lastSeq(), seq)
		})
	}
	serving(1, 10*time.Second)
	stop() // cut off while events 2 and 3 are stored and expire
	<-done
	w.join(2)
	w.join(3)
	w.expire(4)
	runView(t, lv)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		return !lv.ready.Load(), "the view did not notice the events it missed"
	})
	w.checkpoint()
	serving(3, 3*gapRetry)

	// The restore: the stream back at event 1, and the applier's checkpoint there.
	js.arm(func(st *jetstream.StreamState) { st.FirstSeq, st.LastSeq = 1, 1 }, false)
	if _, err := w.buckets.Checkpoints.PutBytes(w.ctx, checkpointObject, cp1); err != nil {
		t.Fatal(err)
	}
	serving(1, 4*stallCheck+3*gapRetry)
}
