package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/gateway/subject"
	"github.com/usher-presence/usher/test/testutil"
)

// failingPublishes is a JetStream whose presence publishes for the notification at NCS sequence failSeq fail
// without being stored, as when the PubAck never comes or the stream has no leader.
type failingPublishes struct {
	jetstream.JetStream
	failSeq  string
	attempts atomic.Int64
}

type failedAck struct{ m *nats.Msg }

func (f failedAck) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedAck) Err() <-chan error {
	c := make(chan error, 1)
	c <- errors.New("nats: no response from stream")
	return c
}
func (f failedAck) Msg() *nats.Msg { return f.m }

func (f *failingPublishes) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if m.Header.Get(HeaderNCSSeq) == f.failSeq {
		f.attempts.Add(1)
		return failedAck{m}, nil
	}
	return f.JetStream.PublishMsgAsync(m, opts...)
}

// storeJoin stores an audience join of channel "c" in USHER_NCS, as ingest does.
func storeJoin(ctx context.Context, t *testing.T, js jetstream.JetStream, id string, uid int) {
	t.Helper()
	body := fmt.Sprintf(`{"noticeId":%q,"productId":1,"eventType":105,"notifyMs":%d,"payload":{"channelName":"c","uid":%d,"clientSeq":1,"ts":%d}}`,
		id, time.Now().UnixMilli(), uid, time.Now().Unix())
	m := nats.NewMsg(subject.NCS("c"))
	m.Data = []byte(body)
	m.Header.Set(HeaderReceivedMs, strconv.FormatInt(time.Now().UnixMilli(), 10))
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// A presence event whose publish fails is never skipped: the leader that derived it stops without a checkpoint
// that counts it (it used to log the failure at a checkpoint and go on, and its final checkpoint then claimed the
// event), so the next leader derives it again and publishes it.
func TestFailedPublishIsNotSkipped(t *testing.T) {
	js, ctx := testJetStream(t, 60*time.Second)
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	newApplier := func(j jetstream.JetStream, id string) *applier {
		return &applier{js: j, buckets: buckets, ttl: 3 * time.Second, every: 100 * time.Millisecond, id: id,
			log: log.With("applier", id), metrics: newMetrics()}
	}
	runApplier := func(a *applier) (stop func()) {
		actx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); a.run(actx) }()
		return func() { cancel(); <-done }
	}

	// A: its publish of the event of NCS sequence 1 fails, while a checkpoint is due (it has been idle for longer
	// than its interval).
	failing := &failingPublishes{JetStream: js, failSeq: "1"}
	a := newApplier(failing, "a")
	stopA := runApplier(a)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) { return a.leading.Load(), "a not leading" })
	time.Sleep(200 * time.Millisecond) // idle past its checkpoint interval
	storeJoin(ctx, t, js, "n1", 1)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		return failing.attempts.Load() > 0, "no publish of the event attempted"
	})
	time.Sleep(300 * time.Millisecond) // what A does after the failure: a checkpoint, more notifications, or both
	stopA()                            // a rolling restart: A hands over

	// B, healthy, takes over and applies a later notification.
	stopB := runApplier(newApplier(js, "b"))
	defer stopB()
	storeJoin(ctx, t, js, "n2", 2)
	ps, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, func() (bool, string) {
		info, err := ps.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= 2, fmt.Sprintf("%d presence events, want 2", info.State.Msgs)
	})
	stopB()
	info, err := ps.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var uids []uint32
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := ps.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var e presence.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatal(err)
		}
		uids = append(uids, e.UID)
	}
	if len(uids) != 2 || uids[0] != 1 || uids[1] != 2 {
		t.Fatalf("USHER_PRESENCE holds the joins of %v, want [1 2]: the join of uid 1 was acknowledged to Agora", uids)
	}
}

// A leader that lost its lease without noticing (it stalled past the lease's TTL, and another instance took over)
// does not save a final checkpoint when it stops: that would overwrite the new leader's.
func TestFormerLeaderSavesNoFinalCheckpoint(t *testing.T) {
	js, ctx := testJetStream(t, 60*time.Second)
	const ttl = 30 * time.Second // renewed every 10 s: the test ends before the renewer would notice
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{js: js, buckets: buckets, ttl: ttl, every: time.Hour, id: "a", log: slog.New(slog.DiscardHandler), metrics: newMetrics()}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.run(actx) }()
	storeJoin(ctx, t, js, "n1", 1)
	ps, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		info, err := ps.Info(ctx)
		return err == nil && info.State.Msgs == 1, "the join not applied"
	})
	// Another instance takes the lease, as it may once the lease has expired.
	if err := buckets.Leases.Delete(ctx, leaseKey); err != nil {
		t.Fatal(err)
	}
	if _, err := buckets.Leases.Create(ctx, leaseKey, []byte("b")); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if _, err := buckets.Checkpoints.GetInfo(ctx, checkpointObject); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("the former leader saved a checkpoint (info error %v)", err)
	}
	if v, err := buckets.Leases.Get(ctx, leaseKey); err != nil || string(v.Value()) != "b" {
		t.Fatalf("the new leader's lease: %v, %v", v, err)
	}
}

// A renewal that landed on the server after the renewer stopped waiting for it leaves the renewer a stale
// revision: confirm still finds the lease this instance's, so the final checkpoint is saved and the lease released.
func TestConfirmAfterAnUnseenRenewal(t *testing.T) {
	js, ctx := testJetStream(t, 30*time.Second)
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{js: js, buckets: buckets, ttl: 30 * time.Second, id: "a", log: slog.New(slog.DiscardHandler), metrics: newMetrics()}
	rev, err := buckets.Leases.Create(ctx, leaseKey, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := buckets.Leases.Update(ctx, leaseKey, []byte("a"), rev); err != nil { // the renewal nobody saw
		t.Fatal(err)
	}
	if _, ok := a.confirm(rev); !ok {
		t.Fatal("confirm gave up a lease this instance still holds")
	}
	if _, err := buckets.Leases.Update(ctx, leaseKey, []byte("b"), rev); err == nil {
		t.Fatal("the test's stale revision still works")
	}
	// Another instance's lease is never taken.
	e, err := buckets.Leases.Get(ctx, leaseKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := buckets.Leases.Update(ctx, leaseKey, []byte("b"), e.Revision()); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.confirm(e.Revision()); ok {
		t.Fatal("confirm took another instance's lease")
	}
}

// A replay that derives fewer events than an earlier leader stored from the same notifications (its rules differed:
// an upgrade that changed them, after the old leader died without a final checkpoint) loses none of the events
// after: the next one is published after the stream's last, not taken as already stored.
func TestReplayDerivingFewerEventsLosesNone(t *testing.T) {
	js, ctx := testJetStream(t, 60*time.Second)
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The old leader's work, with no checkpoint: two notifications, from each of which its rules derived an event.
	// The second (uid 1's join again, same clientSeq, new noticeId) is stale under today's rules.
	storeJoin(ctx, t, js, "n1", 1)
	storeJoin(ctx, t, js, "n1-again", 1)
	for ncsSeq, id := range []string{"n1", "n1-again"} {
		e := presence.Event{Seq: uint64(ncsSeq + 1), Channel: "c", Event: presence.Join, Role: presence.Audience, UID: 1,
			ClientSeq: 1, NoticeID: id, Source: presence.SourceNCS}
		b, _ := json.Marshal(e)
		m := nats.NewMsg(subject.Presence("c"))
		m.Data = b
		m.Header.Set(HeaderNCSSeq, strconv.Itoa(ncsSeq+1))
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}

	a := &applier{js: js, buckets: buckets, ttl: 3 * time.Second, every: time.Hour, id: "new",
		log: slog.New(slog.DiscardHandler), metrics: newMetrics()}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.run(actx) }()
	defer func() { cancel(); <-done }()
	storeJoin(ctx, t, js, "n2", 2)

	ps, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		m, err := ps.GetMsg(ctx, 3)
		if err != nil {
			return false, fmt.Sprintf("no event 3: %v", err)
		}
		var e presence.Event
		_ = json.Unmarshal(m.Data, &e)
		return e.UID == 2 && e.Event == presence.Join, fmt.Sprintf("event 3 is %s", m.Data)
	})
}

// failOnceByID fails, once, the presence publish with Nats-Msg-Id id (and so every later one of that pipeline).
type failOnceByID struct {
	jetstream.JetStream
	id     string
	seen   atomic.Int64
	failed atomic.Bool
}

func (f *failOnceByID) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	var e presence.Event
	_ = json.Unmarshal(m.Data, &e)
	if e.NoticeID == f.id && f.seen.Add(1) == 2 && f.failed.CompareAndSwap(false, true) { // its second event
		return failedAck{m}, nil
	}
	return f.JetStream.PublishMsgAsync(m, opts...)
}

// After a leader went on from the stream (its replay derived fewer events than were stored), a publish fails in the
// middle of a notification of several events, and the leader starts again from the same old checkpoint: the replay
// must line up with the partly stored notification and publish the rest of its events.
func TestRestartAfterAlignmentLosesNone(t *testing.T) {
	js, ctx := testJetStream(t, 60*time.Second)
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Old rules' work (no checkpoint), as in TestReplayDerivingFewerEventsLosesNone.
	storeJoin(ctx, t, js, "n1", 1)
	storeJoin(ctx, t, js, "n1-again", 1)
	for ncsSeq, id := range []string{"n1", "n1-again"} {
		e := presence.Event{Seq: uint64(ncsSeq + 1), Channel: "c", Event: presence.Join, Role: presence.Audience, UID: 1,
			ClientSeq: 1, NoticeID: id, Source: presence.SourceNCS}
		b, _ := json.Marshal(e)
		m := nats.NewMsg(subject.Presence("c"))
		m.Data = b
		m.Header.Set(HeaderNCSSeq, strconv.Itoa(ncsSeq+1))
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}

	wrapped := &failOnceByID{JetStream: js, id: "d"}
	a := &applier{js: wrapped, buckets: buckets, ttl: 3 * time.Second, every: time.Hour, id: "new",
		log: slog.New(slog.DiscardHandler), metrics: newMetrics()}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.run(actx) }()
	defer func() { cancel(); <-done }()
	storeJoin(ctx, t, js, "n2", 2) // event 3
	ps, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		_, err := ps.GetMsg(ctx, 3)
		return err == nil, "no event 3"
	})
	// A destroy: leave uid 1 (id d), leave uid 2 (id d:1, fails once), channel.destroy (id d:2).
	body := fmt.Sprintf(`{"noticeId":"d","productId":1,"eventType":102,"notifyMs":%d,"payload":{"channelName":"c","ts":%d}}`,
		time.Now().UnixMilli(), time.Now().Unix()+10)
	m := nats.NewMsg(subject.NCS("c"))
	m.Data = []byte(body)
	m.Header.Set(HeaderReceivedMs, strconv.FormatInt(time.Now().UnixMilli(), 10))
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID("d")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, 50*time.Millisecond, func() (bool, string) {
		info, _ := ps.Info(ctx)
		return wrapped.failed.Load() && info.State.LastSeq >= 5, fmt.Sprintf("last %d", info.State.LastSeq)
	})
	time.Sleep(2 * time.Second) // the leader's retry, and anything it would wrongly publish
	info, _ := ps.Info(ctx)
	var got []string
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := ps.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var e presence.Event
		_ = json.Unmarshal(m.Data, &e)
		got = append(got, fmt.Sprintf("%d:%s uid%d (%s)", seq, e.Event, e.UID, m.Header.Get(jetstream.MsgIDHeader)))
	}
	if len(got) != 6 {
		t.Fatalf("want 6 events (…, 4 leave uid1, 5 leave uid2, 6 destroy), got %v", got)
	}
}
