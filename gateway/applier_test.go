package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
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

// applierStreams is a JetStream with Usher's streams, for 60 s at most.
func applierStreams(t *testing.T) (jetstream.JetStream, context.Context, bus.Buckets) {
	t.Helper()
	js, ctx := testJetStream(t, 60*time.Second)
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return js, ctx, buckets
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
	js, ctx, buckets := applierStreams(t)
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

// failOnce fails, once, the nth presence publish of notification id's events (and so every later one of that
// pipeline), as when a PubAck never comes.
type failOnce struct {
	jetstream.JetStream
	id     string
	nth    int64
	seen   atomic.Int64
	failed atomic.Bool
}

func (f *failOnce) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	var e presence.Event
	_ = json.Unmarshal(m.Data, &e)
	if e.NoticeID == f.id && f.seen.Add(1) == f.nth && f.failed.CompareAndSwap(false, true) {
		return failedAck{m}, nil
	}
	return f.JetStream.PublishMsgAsync(m, opts...)
}

// storeNCS stores body in USHER_NCS for channel "c", as ingest does.
func storeNCS(ctx context.Context, t *testing.T, js jetstream.JetStream, id, body string) {
	t.Helper()
	m := nats.NewMsg(subject.NCS("c"))
	m.Data = []byte(body)
	m.Header.Set(HeaderReceivedMs, strconv.FormatInt(time.Now().UnixMilli(), 10))
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// storeDestroy stores the destroy of channel "c", ts seconds from now.
func storeDestroy(ctx context.Context, t *testing.T, js jetstream.JetStream, id string, ts int64) {
	storeNCS(ctx, t, js, id, fmt.Sprintf(`{"noticeId":%q,"productId":1,"eventType":102,"notifyMs":%d,"payload":{"channelName":"c","ts":%d}}`,
		id, time.Now().UnixMilli(), time.Now().Unix()+ts))
}

// storePresence stores presence events as an earlier leader did: uid's join, derived from NCS sequence ncsSeq.
func storePresence(ctx context.Context, t *testing.T, js jetstream.JetStream, events ...struct {
	id          string
	uid, ncsSeq int
}) {
	t.Helper()
	for _, x := range events {
		b, _ := json.Marshal(presence.Event{Channel: "c", Event: presence.Join, Role: presence.Audience, UID: uint32(x.uid),
			ClientSeq: 1, NoticeID: x.id, Source: presence.SourceNCS})
		m := nats.NewMsg(subject.Presence("c"))
		m.Data = b
		m.Header.Set(HeaderNCSSeq, strconv.Itoa(x.ncsSeq))
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(x.id)); err != nil {
			t.Fatal(err)
		}
	}
}

// presenceStream lists USHER_PRESENCE as "seq:event uid<uid> (<id>)".
func presenceStream(ctx context.Context, t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ps, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ps.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := ps.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var e presence.Event
		_ = json.Unmarshal(m.Data, &e)
		got = append(got, fmt.Sprintf("%d:%s uid%d (%s)", seq, e.Event, e.UID, m.Header.Get(jetstream.MsgIDHeader)))
	}
	return got
}

// runTestApplier runs an applier on js until the test ends, or until stop (a clean stop: it saves its checkpoint).
func runTestApplier(ctx context.Context, t *testing.T, js jetstream.JetStream, buckets bus.Buckets, log *slog.Logger) (stop func()) {
	return runTestApplierEvery(ctx, t, js, buckets, log, time.Hour)
}

// runTestApplierEvery is runTestApplier with checkpoints saved every interval while it applies.
func runTestApplierEvery(ctx context.Context, t *testing.T, js jetstream.JetStream, buckets bus.Buckets, log *slog.Logger, every time.Duration) (stop func()) {
	return runTestApplierWith(ctx, t, js, buckets, log, "new", presence.Rules{}, every)
}

// runTestApplierWith is runTestApplierEvery for an applier called id, with rules.
func runTestApplierWith(ctx context.Context, t *testing.T, js jetstream.JetStream, buckets bus.Buckets, log *slog.Logger, id string, rules presence.Rules, every time.Duration) (stop func()) {
	a := &applier{js: js, buckets: buckets, rules: rules, ttl: 3 * time.Second, every: every, id: id, log: log, metrics: newMetrics()}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.run(actx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

type presenceEvent = struct {
	id          string
	uid, ncsSeq int
}

// waitStream waits until USHER_PRESENCE holds at least n events, then a second more (for anything that should not
// come), and returns it.
func waitStream(ctx context.Context, t *testing.T, js jetstream.JetStream, n int) []string {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
		got := presenceStream(ctx, t, js)
		return len(got) >= n, fmt.Sprintf("%d events, want %d: %v", len(got), n, got)
	})
	time.Sleep(time.Second)
	return presenceStream(ctx, t, js)
}

// Replays under rules that derive other events than an earlier leader stored from the same notifications (an upgrade
// that changed the rules, after the old leader died without a final checkpoint) lose no later event and publish none
// twice: the leader lines up with the stream's last event, by the notification it came from.
func TestReplayUnderOtherRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ncs   []string        // notifications stored (joins of uid i+1, "n1-again" a stale repeat of uid 1's)
		old   []presenceEvent // what the old rules published
		after string          // a notification after them
		want  []string
	}{
		{"fewer: the old rules derived an event today's do not",
			[]string{"n1", "n1-again"}, []presenceEvent{{"n1", 1, 1}, {"n1-again", 1, 2}}, "n3",
			[]string{"1:join uid1 (n1)", "2:join uid1 (n1-again)", "3:join uid3 (n3)"}},
		{"more: today's rules derive two events the old ones did not",
			[]string{"n1", "n2", "n3", "n4"}, []presenceEvent{{"n1", 1, 1}, {"n4", 4, 4}}, "n5",
			[]string{"1:join uid1 (n1)", "2:join uid4 (n4)", "3:join uid5 (n5)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js, ctx, buckets := applierStreams(t)
			for _, id := range tc.ncs {
				uid := 1
				if id != "n1-again" {
					uid, _ = strconv.Atoi(id[1:])
				}
				storeJoin(ctx, t, js, id, uid)
			}
			storePresence(ctx, t, js, tc.old...)
			time.Sleep(1100 * time.Millisecond) // past USHER_PRESENCE's de-duplication window, as after a real crash
			// The new leader replays every stored notification (its checkpoints, saved as it goes, say how far it got),
			// and stops cleanly: its checkpoint is what views start from.
			stop := runTestApplierEvery(ctx, t, js, buckets, slog.New(slog.DiscardHandler), 10*time.Millisecond)
			replayed := func() (*checkpoint, string) {
				cp, err := loadCheckpoint(ctx, js, buckets.Checkpoints, presence.Rules{})
				if err != nil {
					return nil, err.Error()
				}
				if cp.NCSSeq != uint64(len(tc.ncs)) {
					return nil, fmt.Sprintf("checkpoint after notification %d, want %d", cp.NCSSeq, len(tc.ncs))
				}
				return cp, ""
			}
			testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
				cp, why := replayed()
				return cp != nil, why
			})
			stop()
			cp, why := replayed()
			if cp == nil {
				t.Fatal(why)
			}
			runTestApplier(ctx, t, js, buckets, slog.New(slog.DiscardHandler))
			uid, _ := strconv.Atoi(tc.after[1:])
			storeJoin(ctx, t, js, tc.after, uid)
			if got := waitStream(ctx, t, js, len(tc.want)); !slices.Equal(got, tc.want) {
				t.Fatalf("USHER_PRESENCE holds %v, want %v", got, tc.want)
			}
			// A view built from that checkpoint, as an instance starting then builds it, takes every event after it.
			v := cp.State.View()
			v.RaiseFloor(cp.PresenceSeq)
			e := presence.Event{Seq: cp.PresenceSeq + 1, Channel: "c", Event: presence.Join, Role: presence.Audience,
				UID: uint32(uid), ClientSeq: 1, NoticeID: tc.after, Source: presence.SourceNCS}
			if !v.Apply(e) {
				t.Fatalf("a view from the checkpoint (event %d) drops the next event: a channel's seq is past the stream", cp.PresenceSeq)
			}
		})
	}
}

// With the same rules, a leader that stops in the middle of a notification's events (a destroy: two leaves and
// channel.destroy; the third publish fails) publishes the rest on its retry, from the same old checkpoint, and the
// lining up with the stream changes nothing (no error logged), Agora's colon-laden noticeIds included.
func TestRestartInTheMiddleOfANotification(t *testing.T) {
	t.Parallel()
	js, ctx, buckets := applierStreams(t)
	const destroy = "2000001428:4330:107"
	var logs testutil.SyncBuffer
	runTestApplier(ctx, t, &failOnce{JetStream: js, id: destroy, nth: 3}, buckets, slog.New(slog.NewTextHandler(&logs, nil)))
	storeJoin(ctx, t, js, "2000001428:4330", 1) // a noticeId that begins the destroy's
	storeJoin(ctx, t, js, "2000001428:4330:106", 2)
	storeDestroy(ctx, t, js, destroy, 10)
	waitStream(ctx, t, js, 5)
	storeNCS(ctx, t, js, "after", fmt.Sprintf(`{"noticeId":"after","productId":1,"eventType":105,"notifyMs":%d,"payload":{"channelName":"c","uid":3,"clientSeq":1,"ts":%d}}`,
		time.Now().UnixMilli(), time.Now().Unix()+20))
	want := []string{"1:join uid1 (2000001428:4330)", "2:join uid2 (2000001428:4330:106)", "3:leave uid1 (" + destroy + ")",
		"4:leave uid2 (" + destroy + ":1)", "5:channel.destroy uid0 (" + destroy + ":2)", "6:join uid3 (after)"}
	if got := waitStream(ctx, t, js, len(want)); !slices.Equal(got, want) {
		t.Fatalf("USHER_PRESENCE holds %v, want %v", got, want)
	}
	if strings.Contains(logs.String(), "roster rules changed") || strings.Contains(logs.String(), "does not name") {
		t.Fatalf("the same rules lined up with the stream by force:\n%s", logs.String())
	}
}

// Under other rules, after the leader lined up with the stream, a publish fails in the middle of a notification of
// several events (the second of a destroy's), and the leader starts again from the same old checkpoint: the retry
// lines up with the partly stored notification and publishes the rest of its events.
func TestRestartAfterLiningUpLosesNone(t *testing.T) {
	t.Parallel()
	js, ctx, buckets := applierStreams(t)
	storeJoin(ctx, t, js, "n1", 1)
	storeJoin(ctx, t, js, "n1-again", 1)
	storePresence(ctx, t, js, presenceEvent{"n1", 1, 1}, presenceEvent{"n1-again", 1, 2}) // the old rules' work
	runTestApplier(ctx, t, &failOnce{JetStream: js, id: "d", nth: 2}, buckets, slog.New(slog.DiscardHandler))
	storeJoin(ctx, t, js, "n2", 2)
	waitStream(ctx, t, js, 3)
	storeDestroy(ctx, t, js, "d", 10)
	want := []string{"1:join uid1 (n1)", "2:join uid1 (n1-again)", "3:join uid2 (n2)", "4:leave uid1 (d)", "5:leave uid2 (d:1)",
		"6:channel.destroy uid0 (d:2)"}
	if got := waitStream(ctx, t, js, len(want)); !slices.Equal(got, want) {
		t.Fatalf("USHER_PRESENCE holds %v, want %v", got, want)
	}
}

// A checkpoint records the rules of the leader that saved it, and a leader with other rules says so (instances
// with different USHER_TOMBSTONE_RETENTION decide late notifications differently); one with the same rules does not.
func TestCheckpointUnderOtherRulesIsReported(t *testing.T) {
	js, ctx, buckets := applierStreams(t)
	start := func(id string, retention time.Duration, log *slog.Logger) (stop func()) {
		return runTestApplierWith(ctx, t, js, buckets, log, id, presence.Rules{Retention: retention}, time.Hour)
	}
	// The first leader, on the default rules, applies a join and saves its final checkpoint as it stops.
	stop := start("a", 0, slog.New(slog.DiscardHandler))
	storeJoin(ctx, t, js, "n1", 1)
	waitStream(ctx, t, js, 1)
	stop()
	cp, err := loadCheckpoint(ctx, js, buckets.Checkpoints, presence.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (checkpointRules{RetentionMs: 600_000, ClockSkewMs: 60_000}); cp.Rules == nil || *cp.Rules != want {
		t.Fatalf("checkpoint rules %+v, want %+v", cp.Rules, want)
	}

	for _, tc := range []struct {
		retention time.Duration
		warned    bool
	}{{presence.DefaultRetention, false}, {20 * time.Minute, true}} {
		var logs testutil.SyncBuffer
		stop := start(fmt.Sprintf("retention-%s", tc.retention), tc.retention,
			slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
		// Once it applies a new join, it has loaded the checkpoint.
		id := fmt.Sprintf("n-%s", tc.retention)
		storeJoin(ctx, t, js, id, int(tc.retention/time.Minute)+1)
		testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
			got := presenceStream(ctx, t, js)
			return strings.Contains(strings.Join(got, " "), "("+id+")"), fmt.Sprintf("stream %v", got)
		})
		stop()
		warned := strings.Contains(logs.String(), "other roster rules")
		if warned != tc.warned || tc.warned && !strings.Contains(logs.String(), "checkpointRetention=10m0s retention=20m0s") {
			t.Errorf("retention %s: warned %v, want %v; logs:\n%s", tc.retention, warned, tc.warned, logs.String())
		}
	}
}

// USHER_NCS made anew (deleted and made again by hand) between two leaders: its seqs started again, so the next
// leader applies it from its first notification, onto the checkpoint's rosters, with events after the presence
// stream's last; and it saves a checkpoint in the new stream's epoch before it applies anything, so that a leader
// after it (this one dying before its next checkpoint) does not apply the new stream from the first again.
func TestLeaderOnAnNCSStreamMadeAnew(t *testing.T) {
	js, ctx, buckets := applierStreams(t)
	log := slog.New(slog.DiscardHandler)
	applyOldJoins(ctx, t, js, buckets, log) // its final checkpoint: notification 3 of the old stream

	if err := js.DeleteStream(ctx, bus.NCSStream); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	ns, err := js.Stream(ctx, bus.NCSStream)
	if err != nil {
		t.Fatal(err)
	}
	newEpoch := epochOf(ns.CachedInfo().Created)
	storeJoin(ctx, t, js, "new-1", 4)
	storeJoin(ctx, t, js, "new-2", 5)

	runTestApplier(ctx, t, js, buckets, log)
	got := waitStream(ctx, t, js, 5)
	want := []string{"1:join uid1 (old-1)", "2:join uid2 (old-2)", "3:join uid3 (old-3)", "4:join uid4 (new-1)", "5:join uid5 (new-2)"}
	if !slices.Equal(got, want) {
		t.Fatalf("presence stream %v, want %v", got, want)
	}
	// While it runs (no checkpoint due for an hour), the checkpoint already counts in the new stream.
	cp, err := loadCheckpoint(ctx, js, buckets.Checkpoints, presence.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	if cp.NCSEpoch != newEpoch || cp.NCSSeq != 0 || cp.PresenceSeq != 3 {
		t.Fatalf("checkpoint: ncs epoch %s seq %d, presence %d; want epoch %s, before the new stream's first, after event 3",
			cp.NCSEpoch, cp.NCSSeq, cp.PresenceSeq, newEpoch)
	}
}

// gatedPublishes holds the presence publish of notification id until release is closed.
type gatedPublishes struct {
	jetstream.JetStream
	id      string
	held    chan struct{}
	release chan struct{}
	once    atomic.Bool
}

func (g *gatedPublishes) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	var e presence.Event
	_ = json.Unmarshal(m.Data, &e)
	if e.NoticeID == g.id && g.once.CompareAndSwap(false, true) {
		close(g.held)
		<-g.release
	}
	return g.JetStream.PublishMsgAsync(m, opts...)
}

// USHER_NCS deleted and made again while the leader is busy between two reads (here, publishing): the ordered
// consumer's own recovery makes its consumer again on the new stream, from the old one's next seq. The leader must
// still apply the new stream from its first notification: each was answered 200.
func TestNCSStreamMadeAnewWhileTheLeaderIsBusy(t *testing.T) {
	js, ctx, buckets := applierStreams(t)
	log := slog.New(slog.DiscardHandler)
	gated := &gatedPublishes{JetStream: js, id: "old-3", held: make(chan struct{}), release: make(chan struct{})}
	runTestApplierWith(ctx, t, gated, buckets, log, "new", presence.Rules{}, time.Hour)
	for i := 1; i <= 3; i++ {
		storeJoin(ctx, t, js, fmt.Sprintf("old-%d", i), i)
	}
	select {
	case <-gated.held:
	case <-ctx.Done():
		t.Fatal("old-3's event was not published")
	}
	if err := js.DeleteStream(ctx, bus.NCSStream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if _, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		storeJoin(ctx, t, js, fmt.Sprintf("new-%d", i), 3+i)
	}
	close(gated.release)
	got := waitStream(ctx, t, js, 8)
	want := []string{"1:join uid1 (old-1)", "2:join uid2 (old-2)", "3:join uid3 (old-3)", "4:join uid4 (new-1)",
		"5:join uid5 (new-2)", "6:join uid6 (new-3)", "7:join uid7 (new-4)", "8:join uid8 (new-5)"}
	if !slices.Equal(got, want) {
		t.Fatalf("presence stream %v, want %v", got, want)
	}
}

// A former leader that has not yet noticed it lost the lease publishes one more event from the old USHER_NCS (a
// message it had buffered before the stream was deleted) right after the next leader, on the stream made anew, saved
// its checkpoint in the new epoch: the event lands, since it goes exactly after the stream's last, and the new
// leader's publish fails. The leader after it must not read that event's Usher-Ncs-Seq (4, a seq of the old stream)
// as one of the new stream: it would take the new stream's notifications up to 4 as published already, and derive
// events past the stream's last.
func TestOldStreamEventAfterTheNewEpochCheckpoint(t *testing.T) {
	js, ctx, buckets := applierStreams(t)
	log := slog.New(slog.DiscardHandler)
	applyOldJoins(ctx, t, js, buckets, log)
	ns, err := js.Stream(ctx, bus.NCSStream)
	if err != nil {
		t.Fatal(err)
	}
	oldEpoch := epochOf(ns.CachedInfo().Created)

	if err := js.DeleteStream(ctx, bus.NCSStream); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	storeJoin(ctx, t, js, "new-1", 4)
	gated := &gatedPublishes{JetStream: js, id: "new-1", held: make(chan struct{}), release: make(chan struct{})}
	runTestApplierWith(ctx, t, gated, buckets, log, "new", presence.Rules{}, time.Hour)
	select {
	case <-gated.held: // the checkpoint in the new epoch is saved
	case <-ctx.Done():
		t.Fatal("new-1's event was not published")
	}
	// The former leader's, from the old stream's seq 4, as it publishes one.
	b, _ := json.Marshal(presence.Event{Channel: "c", Event: presence.Join, Role: presence.Audience, UID: 9, ClientSeq: 1,
		NoticeID: "old-4", Source: presence.SourceNCS})
	m := nats.NewMsg(subject.Presence("c"))
	m.Data = b
	m.Header.Set(HeaderNCSSeq, "4")
	m.Header.Set(HeaderNCSEpoch, oldEpoch)
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID("old-4"), jetstream.WithExpectLastSequence(3)); err != nil {
		t.Fatal(err)
	}
	close(gated.release)
	time.Sleep(2 * time.Second) // the leader's publish fails; the next starts
	for i := 2; i <= 5; i++ {
		storeJoin(ctx, t, js, fmt.Sprintf("new-%d", i), 3+i)
	}

	got := waitStream(ctx, t, js, 9)
	want := []string{"1:join uid1 (old-1)", "2:join uid2 (old-2)", "3:join uid3 (old-3)", "4:join uid9 (old-4)",
		"5:join uid4 (new-1)", "6:join uid5 (new-2)", "7:join uid6 (new-3)", "8:join uid7 (new-4)", "9:join uid8 (new-5)"}
	if !slices.Equal(got, want) {
		t.Fatalf("presence stream %v, want %v", got, want)
	}
}

// applyOldJoins has an applier apply three joins, old-1 to old-3, then stop, saving its final checkpoint.
func applyOldJoins(ctx context.Context, t *testing.T, js jetstream.JetStream, buckets bus.Buckets, log *slog.Logger) {
	t.Helper()
	stop := runTestApplier(ctx, t, js, buckets, log)
	for i := 1; i <= 3; i++ {
		storeJoin(ctx, t, js, fmt.Sprintf("old-%d", i), i)
	}
	waitStream(ctx, t, js, 3)
	stop()
}
