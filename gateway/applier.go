package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/gateway/subject"
)

// HeaderNCSSeq is set on each presence event: the USHER_NCS sequence of the notification it came from.
const HeaderNCSSeq = "Usher-Ncs-Seq"

// HeaderNCSEpoch is set on each presence event: the epoch of the USHER_NCS stream its Usher-Ncs-Seq counts in.
const HeaderNCSEpoch = "Usher-Ncs-Epoch"

const (
	leaseKey         = "applier"
	checkpointObject = "applier"
	// pruneEvery: tombstones are pruned each time the NCS sequence crosses a multiple of it. Pruning at fixed
	// sequence points keeps the applier deterministic, so replay from a checkpoint decides exactly as the first run.
	pruneEvery    = 1000
	effectTimeout = 5 * time.Second
	// pubAckForget is when the JetStream client drops an asynchronous publish still waiting for its PubAck.
	pubAckForget = 2 * effectTimeout
	// maxInflight bounds the presence events published and not yet acknowledged. They are pipelined: each carries
	// the exact sequence it must land at, so if one fails, every later one fails too, and the applier restarts
	// from its checkpoint.
	maxInflight = 256
)

// checkpoint is the applier's state after the notification at NCSSeq, when the last presence event was PresenceSeq.
type checkpoint struct {
	NCSSeq      uint64          `json:"ncsSeq"`
	PresenceSeq uint64          `json:"presenceSeq"`
	State       *presence.State `json:"state"`
	// Rules are the roster rules of the leader that saved it (absent from checkpoints before they were recorded).
	Rules *checkpointRules `json:"rules,omitempty"`
	// NCSEpoch is the epoch of the USHER_NCS stream that NCSSeq counts in (absent from checkpoints before it was
	// recorded): a stream made anew starts its seqs again.
	NCSEpoch string `json:"ncsEpoch,omitempty"`
}

// checkpointRules are roster rules as a checkpoint records them.
type checkpointRules struct {
	RetentionMs int64 `json:"retentionMs"`
	ClockSkewMs int64 `json:"clockSkewMs"`
}

func rulesOf(r presence.Rules) checkpointRules {
	r = r.WithDefaults()
	return checkpointRules{RetentionMs: r.Retention.Milliseconds(), ClockSkewMs: r.ClockSkew.Milliseconds()}
}

// applier folds stored notifications into rosters and publishes the effective changes to USHER_PRESENCE.
//
// Work division: across all instances on one NATS, exactly one applier runs at a time, the holder of the lease key
// in bucket USHER_LEASES (created only if absent, renewed with compare-and-set, expiring after LeaseTTL if its
// holder dies). Every presence publish also carries Nats-Expected-Last-Sequence, so a former holder that has not yet
// noticed it lost the lease cannot interleave an event: its publish fails and it stops.
//
// Exactly once: the applier is deterministic. It starts from the latest checkpoint (state at NCS sequence N, last
// presence sequence P) and applies the notifications after N in stream order; the k-th event it derives must have
// sequence P+k. Events whose sequence is already in the stream were published before a crash or a hand-over and are
// skipped; the rest are published with that exact expected sequence.
type applier struct {
	js      jetstream.JetStream
	buckets bus.Buckets
	rules   presence.Rules
	ttl     time.Duration
	every   time.Duration // checkpoint interval
	id      string
	log     *slog.Logger
	metrics *metrics
	decoded *handoff[string, *ncs.Decoded]   // from this instance's ingest, by noticeId
	events  *handoff[uint64, presence.Event] // to this instance's view, by presence sequence

	leading atomic.Bool
	// storedNCS is USHER_NCS's last notification as the leader last saw it, and settledNCS the last one whose events
	// are all stored: the difference is the backlog (usher_applier_backlog). Kept after a failed lead (the applier
	// retries, and the backlog grows), cleared when another instance leads or this one stops.
	storedNCS, settledNCS atomic.Uint64
	backlogEpoch          string // the USHER_NCS they count in (the applier's goroutine only)

	// countedEpoch and countedSeq are the last notification whose outcome this instance counted (the applier's
	// goroutine only): a leader that starts again from a checkpoint applies the ones after it again, and they are
	// counted once.
	countedEpoch string
	countedSeq   uint64
}

// run applies notifications while it holds the lease, until ctx ends.
func (a *applier) run(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := a.acquire(ctx)
		if err != nil {
			return // ctx ended
		}
		a.log.Info("applier lease acquired", "instance", a.id)
		leadCtx, cancel := context.WithCancel(ctx)
		var (
			wg   sync.WaitGroup
			lost atomic.Bool
		)
		wg.Go(func() { rev = a.renew(leadCtx, cancel, rev, &lost) })
		a.leading.Store(true)
		st, err := a.lead(leadCtx)
		a.leading.Store(false)
		cancel()
		wg.Wait()
		if err == nil || lost.Load() || ctx.Err() != nil {
			a.storedNCS.Store(0)
			a.settledNCS.Store(0)
		}
		if !lost.Load() {
			// The renewer may not have noticed a loss yet (this instance stalled past the lease's TTL, say): renew once
			// more, so that a final checkpoint never overwrites a newer leader's.
			if held, ok := a.confirm(rev); ok {
				if st != nil {
					_ = a.saveCheckpoint(context.Background(), st.NCSEpoch, st.NCSSeq, st.PresenceSeq, st.State)
				}
				a.release(held)
			}
		}
		if err != nil && ctx.Err() == nil {
			a.log.Error("applier stopped; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// acquire blocks until this instance holds the lease, and returns its revision.
func (a *applier) acquire(ctx context.Context) (uint64, error) {
	t := time.NewTicker(a.ttl / 3)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, a.ttl)
		rev, err := a.buckets.Leases.Create(cctx, leaseKey, []byte(a.id))
		cancel()
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			a.log.Debug("applier lease not acquired", "err", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// renew keeps the lease until ctx ends; when a renewal fails it marks the lease lost and cancels the leader.
func (a *applier) renew(ctx context.Context, stop context.CancelFunc, rev uint64, lost *atomic.Bool) uint64 {
	t := time.NewTicker(a.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, a.ttl/3)
		next, err := a.buckets.Leases.Update(rctx, leaseKey, []byte(a.id), rev)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return rev
			}
			a.log.Warn("applier lease lost", "err", err)
			lost.Store(true)
			stop()
			return rev
		}
		rev = next
	}
}

// confirm renews the lease at rev, and reports whether this instance still held it; the lease then lasts a TTL more.
func (a *applier) confirm(rev uint64) (uint64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	next, err := a.buckets.Leases.Update(ctx, leaseKey, []byte(a.id), rev)
	if err != nil {
		// The renewal that stopping interrupted may have landed: then the lease is still this instance's, at a
		// revision the renewer never learnt.
		if e, gerr := a.buckets.Leases.Get(ctx, leaseKey); gerr == nil && string(e.Value()) == a.id {
			next, err = a.buckets.Leases.Update(ctx, leaseKey, []byte(a.id), e.Revision())
		}
	}
	if err != nil {
		a.log.Warn("applier lease lost before its final checkpoint; not saved", "err", err)
		return 0, false
	}
	return next, true
}

// release gives the lease up at once, so another instance need not wait for it to expire.
func (a *applier) release(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.buckets.Leases.Delete(ctx, leaseKey, jetstream.LastRevision(rev)); err != nil {
		a.log.Debug("applier lease not released", "err", err)
	}
}

// leader is the applier's working state while it holds the lease.
type leader struct {
	state    *presence.State
	ncsEpoch string // of the USHER_NCS stream ncsSeq counts in
	ncsSeq   uint64 // last notification applied
	last     uint64 // sequence of the last presence event derived
	stored   uint64 // USHER_PRESENCE's last sequence when this leader started
	// storedNcs and storedID are the USHER_NCS sequence of the notification the stream's last event came from (0:
	// not known), and that event's message id: the notification's noticeId, with ":<i>" for its i-th event after the
	// first.
	storedNcs uint64
	storedID  string
	inflight  []inflight
}

// inflight is a presence event published and not yet acknowledged.
type inflight struct {
	seq uint64
	ack jetstream.PubAckFuture
}

// lead loads the latest checkpoint and applies notifications after it until ctx ends or an error. It returns the
// state reached (for a final checkpoint), or nil when it has none worth saving.
func (a *applier) lead(ctx context.Context) (*checkpoint, error) {
	cp, err := a.loadCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := a.js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		return nil, fmt.Errorf("presence stream: %w", err)
	}
	info, err := ps.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence stream info: %w", err)
	}
	if mine := rulesOf(a.rules); cp.Rules != nil && *cp.Rules != mine {
		// Each leader applies its own rules: with different settings, two leaders decide the same late notification
		// differently, and a replay across the hand-over derives other events than were stored (see alignReplay).
		a.log.Warn("the last checkpoint was saved under other roster rules: set the same USHER_TOMBSTONE_RETENTION on every instance",
			"checkpointRetention", time.Duration(cp.Rules.RetentionMs)*time.Millisecond, "retention", time.Duration(mine.RetentionMs)*time.Millisecond,
			"checkpointClockSkew", time.Duration(cp.Rules.ClockSkewMs)*time.Millisecond, "clockSkew", time.Duration(mine.ClockSkewMs)*time.Millisecond)
	}
	ns, err := a.js.Stream(ctx, bus.NCSStream)
	if err != nil {
		return nil, fmt.Errorf("ncs stream: %w", err)
	}
	l := &leader{state: cp.State, ncsEpoch: epochOf(ns.CachedInfo().Created), ncsSeq: cp.NCSSeq, last: cp.PresenceSeq,
		stored: info.State.LastSeq}
	if cp.NCSEpoch != "" && cp.NCSEpoch != l.ncsEpoch {
		// USHER_NCS was deleted and made again (by hand): its seqs started again, and every notification in it came
		// after the checkpoint. They are applied from the first, onto the checkpoint's rosters, and their events go
		// after the presence stream's last. What the old stream held after the checkpoint is gone: events already
		// published from it stay in USHER_PRESENCE, but the rosters here lack them.
		a.log.Error("USHER_NCS was made anew since the last checkpoint; applying it from its first notification",
			"checkpointNcsSeq", cp.NCSSeq, "checkpointPresenceSeq", cp.PresenceSeq, "presenceStream", l.stored)
		l.ncsSeq, l.last = 0, l.stored
		l.state.ClampSeqs(l.last)
		// Saved before anything is applied, as below: a later leader must not apply the new stream from its first
		// notification again, publishing its events twice.
		if err := a.saveCheckpoint(ctx, l.ncsEpoch, l.ncsSeq, l.last, l.state); err != nil {
			return nil, fmt.Errorf("checkpoint for the USHER_NCS made anew: %w", err)
		}
	}
	if l.stored < l.last {
		// Only from outside (USHER_PRESENCE purged, or restored from an older backup than the checkpoints): the
		// rosters hold events the stream does not, and clients will not see them.
		a.log.Error("presence stream is behind the checkpoint; continuing from the stream", "checkpoint", l.last, "stream", l.stored)
		l.last = l.stored
		l.state.ClampSeqs(l.stored) // or a view made from the next checkpoint would drop those channels' next events
		// Saved before any event is published after it: a view that loads the old checkpoint then knows that the
		// stream it found (read before the checkpoint) is where this leader went on from (see liveView.follow), and
		// a later leader does not derive this one's events again at new seqs.
		if err := a.saveCheckpoint(ctx, l.ncsEpoch, l.ncsSeq, l.last, l.state); err != nil {
			return nil, fmt.Errorf("checkpoint of the rosters clamped to the presence stream: %w", err)
		}
	}
	if l.last < l.stored {
		// The stream's last event: which notification it came from, and its place among that one's events (its id).
		m, err := ps.GetMsg(ctx, l.stored)
		switch {
		case err == nil && m.Header.Get(HeaderNCSEpoch) != "" && m.Header.Get(HeaderNCSEpoch) != l.ncsEpoch:
			// Derived from another USHER_NCS than the checkpoint's (by a former leader, from the stream before it was
			// made anew, after the checkpoint that counts in the new one): its Usher-Ncs-Seq counts there, and the
			// events after the checkpoint are none of this stream's. They are taken as they are.
			a.log.Error("the presence stream's last event came from an USHER_NCS made before the checkpoint's; continuing after it",
				"checkpoint", l.last, "stream", l.stored, "eventNcsEpoch", m.Header.Get(HeaderNCSEpoch), "ncsEpoch", l.ncsEpoch)
			l.last = l.stored
		case err == nil:
			l.storedNcs, _ = strconv.ParseUint(m.Header.Get(HeaderNCSSeq), 10, 64)
			l.storedID = m.Header.Get(jetstream.MsgIDHeader)
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, fmt.Errorf("presence event %d: %w", l.stored, err)
		}
	}

	if a.backlogEpoch != l.ncsEpoch { // the last notification seen was of another USHER_NCS
		a.storedNCS.Store(0)
		a.backlogEpoch = l.ncsEpoch
	}
	a.settledNCS.Store(l.ncsSeq)
	a.storedNCS.Store(max(a.storedNCS.Load(), l.ncsSeq)) // the first message taken tells the rest
	f, err := follow(ctx, a.js, bus.NCSStream, subject.NCSPrefix+">", l.ncsSeq+1, 512, a.log)
	if err != nil {
		return nil, err
	}
	defer f.close()
	if epochOf(f.created) != l.ncsEpoch { // made anew just now: start again
		return nil, fmt.Errorf("%w: USHER_NCS, as this leader started", errStreamRemade)
	}

	// current is the state to checkpoint: only once every event derived so far is acknowledged. An event that was
	// not is counted in l.last and in the state, so this leader must stop, with no checkpoint: the next one
	// derives it again from the last checkpoint and publishes it.
	current := func() (*checkpoint, error) {
		if err := a.settle(l); err != nil {
			return nil, err
		}
		return &checkpoint{NCSSeq: l.ncsSeq, PresenceSeq: l.last, State: l.state, NCSEpoch: l.ncsEpoch}, nil
	}
	// Checkpoints are encoded and stored in the background from a frozen copy of the state, so a large roster does
	// not hold up the notifications behind it; the final one (when this leader ends) is saved by run, after this.
	var saving chan struct{} // closed when the background save ends; nil when none runs
	defer func() {
		if saving != nil {
			<-saving // bounded: saveCheckpoint's store times out
		}
	}()
	saved := time.Now()
	dirty := false
	for {
		msg, seq, err := f.nextMsg(ctx, 250*time.Millisecond)
		if ctx.Err() != nil {
			return current()
		}
		if err == nil {
			a.storedNCS.Store(seq + f.pending)
			if err := a.applyMsg(l, msg, seq); err != nil {
				// What was published is in the stream; the next leader starts from a checkpoint.
				return nil, errors.Join(err, a.settle(l))
			}
			dirty = true
		} else if !errors.Is(err, errIdle) {
			cp, serr := current()
			return cp, errors.Join(fmt.Errorf("ncs messages: %w", err), serr)
		} else if err := a.settle(l); err != nil { // idle: collect the acknowledgements
			return nil, err
		}
		if saving != nil {
			select {
			case <-saving:
				saving = nil
			default:
			}
		}
		if dirty && saving == nil && time.Since(saved) > a.every {
			cp, err := current()
			if err != nil {
				return nil, err
			}
			frozen := cp.State.Freeze()
			done := make(chan struct{})
			go func() {
				defer close(done)
				defer frozen.Release()
				_ = a.saveCheckpoint(ctx, cp.NCSEpoch, cp.NCSSeq, cp.PresenceSeq, frozen) // ends with the lease: a later leader's must not be overwritten
			}()
			saving = done
			saved, dirty = time.Now(), false
		}
	}
}

// settle waits for every in-flight event's acknowledgement, all of them within effectTimeout, and checks that
// each landed at its sequence.
func (a *applier) settle(l *leader) error {
	defer func() { l.inflight = l.inflight[:0] }()
	if len(l.inflight) == 0 {
		a.settledNCS.Store(l.ncsSeq)
		return nil
	}
	deadline := time.NewTimer(effectTimeout)
	defer deadline.Stop()
	var first error
	for _, f := range l.inflight {
		select {
		case ack := <-f.ack.Ok():
			if ack.Duplicate || ack.Sequence != f.seq {
				first = cmp.Or(first, fmt.Errorf("presence event %d stored as %d (duplicate %v)", f.seq, ack.Sequence, ack.Duplicate))
			} else {
				// Counted once stored: a publish that fails is derived and published again by the next leader.
				a.metrics.events.Inc()
			}
		case err := <-f.ack.Err():
			first = cmp.Or(first, fmt.Errorf("publish presence event %d: %w", f.seq, err))
		case <-deadline.C:
			return cmp.Or(first, fmt.Errorf("publish presence event %d: no acknowledgement within %s", f.seq, effectTimeout))
		}
	}
	if first == nil {
		a.settledNCS.Store(l.ncsSeq) // mid-notification (inflight full), the one before: its events are all stored
	}
	return first
}

// applyMsg applies one stored notification, stored at seq, and publishes the events it derives that the stream
// does not hold yet.
func (a *applier) applyMsg(l *leader, msg jetstream.Msg, seq uint64) error {
	n := a.noticeOf(msg)
	// Re-deriving what an earlier leader published (not counted again): every notification up to the one the stream's
	// last event came from, and any event at or before that last event.
	replaying := l.last < l.stored || seq <= l.storedNcs
	if seq == l.storedNcs {
		a.alignReplay(l, n.NoticeID)
	}
	events, outcome := l.state.Apply(n)
	if !replaying && (l.ncsEpoch != a.countedEpoch || seq > a.countedSeq) {
		a.metrics.notices[outcome].Inc()
		a.countedEpoch, a.countedSeq = l.ncsEpoch, seq
	}
	for i, e := range events {
		e.Seq = l.last + 1
		// Nothing of a notification before storedNcs is published: the stream holds all it gave (more here would be
		// of other rules).
		if e.Seq > l.stored && seq >= l.storedNcs {
			id := n.NoticeID
			if i > 0 {
				id += ":" + strconv.Itoa(i)
			}
			f, err := a.publish(e, id, l.ncsEpoch, seq, l.last)
			if err != nil {
				return err
			}
			l.inflight = append(l.inflight, inflight{seq: e.Seq, ack: f})
			if len(l.inflight) >= maxInflight {
				if err := a.settle(l); err != nil {
					return err
				}
			}
		}
		l.last = e.Seq
		l.state.Stored(e.Channel, e.Seq)
	}
	if seq == l.storedNcs && l.last < l.stored {
		// This notification gave fewer events than were stored from it: the stream's are taken as they are.
		a.log.Error("the replayed notification derives fewer presence events than were stored from it (the roster rules changed?); going on from the stream",
			"derived", l.last, "stored", l.stored, "noticeId", n.NoticeID)
		l.last = l.stored
	}
	if seq/pruneEvery != l.ncsSeq/pruneEvery {
		l.state.Prune(n.ReceivedMs)
	}
	l.ncsSeq = seq
	if len(l.inflight) == 0 {
		a.settledNCS.Store(seq) // nothing of it, or before it, waits for an acknowledgement
	}
	return nil
}

// alignReplay is called as the replay reaches the notification the stream's last event came from (noticeID): the
// events derived so far must end just before that notification's first stored event. With the same rules they do,
// and the notification's events then land on the stored ones, the rest after them (a leader may have stopped in the
// middle of a notification's events). When they do not (an upgrade changed the rules, after a leader died without a
// final checkpoint), the stream is taken as it is, here and after the notification (applyMsg): otherwise this and
// the next notifications' events would get seqs the stream already holds and never be published (fewer derived),
// or be published twice (more derived).
func (a *applier) alignReplay(l *leader, noticeID string) {
	index := uint64(0) // of the stream's last event among this notification's events
	if l.storedID != noticeID {
		rest, ok := strings.CutPrefix(l.storedID, noticeID+":")
		i, err := strconv.ParseUint(rest, 10, 64)
		if !ok || err != nil || i >= l.stored {
			a.log.Error("the presence stream's last event does not name the notification it came from", "id", l.storedID, "noticeId", noticeID)
			return
		}
		index = i
	}
	if want := l.stored - index - 1; l.last != want {
		a.log.Error("the replayed notifications derive other presence events than were stored (the roster rules changed?); going on from the stream",
			"derived", l.last, "stored", want, "noticeId", noticeID)
		if l.last > want {
			l.state.ClampSeqs(want) // the events derived past want were not stored
		}
		l.last = want
	}
}

// noticeOf is a stored notification as a notice: decoded by this instance's ingest when it was stored here, decoded
// now otherwise. One that does not decode (it passed Decode when it was accepted, so only a foreign publisher could
// have put it there) becomes a notice with no event, which Apply ignores.
func (a *applier) noticeOf(msg jetstream.Msg) presence.Notice {
	received, _ := strconv.ParseInt(msg.Headers().Get(HeaderReceivedMs), 10, 64)
	d, ok := a.decoded.take(msg.Headers().Get(jetstream.MsgIDHeader), msg.Data())
	if !ok {
		var err error
		if d, err = ncs.Decode(msg.Data()); err != nil {
			return presence.Notice{ReceivedMs: received}
		}
	}
	return presence.Notice{NoticeID: d.NoticeID, Type: d.EventType, Event: d.Event, NotifyMs: d.NotifyMs, ReceivedMs: received}
}

// publish sends one event to be stored at exactly sequence expectLast+1; settle collects the outcome.
func (a *applier) publish(e presence.Event, id, ncsEpoch string, ncsSeq, expectLast uint64) (jetstream.PubAckFuture, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode presence event: %w", err)
	}
	a.events.put(e.Seq, body, e) // for this instance's view, if the stream stores it at e.Seq
	msg := nats.NewMsg(subject.Presence(e.Channel))
	msg.Data = body
	msg.Header.Set(HeaderNCSSeq, strconv.FormatUint(ncsSeq, 10))
	msg.Header.Set(HeaderNCSEpoch, ncsEpoch)
	f, err := a.js.PublishMsgAsync(msg, jetstream.WithMsgID(id),
		jetstream.WithExpectLastSequence(expectLast), jetstream.WithExpectStream(bus.PresenceStream))
	if err != nil {
		return nil, fmt.Errorf("publish presence event %d: %w", e.Seq, err)
	}
	return f, nil
}

// loadCheckpoint returns the latest checkpoint, or an empty state before the first notification.
func (a *applier) loadCheckpoint(ctx context.Context) (*checkpoint, error) {
	return loadCheckpoint(ctx, a.js, a.buckets.Checkpoints, a.rules)
}

func loadCheckpoint(ctx context.Context, js jetstream.JetStream, store jetstream.ObjectStore, rules presence.Rules) (*checkpoint, error) {
	cp := &checkpoint{State: presence.NewState(rules)}
	b, err := readObject(ctx, js, store, checkpointObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return cp, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	if err := json.Unmarshal(b, cp); err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	return cp, nil
}

// saveCheckpoint stores the state (a *presence.State, or a *presence.Frozen) after the notification at ncsSeq (of the
// USHER_NCS of epoch ncsEpoch), when
// the last presence event was presenceSeq, unless ctx ends first. A failure is logged, not fatal: an older
// checkpoint only means a longer replay (it is returned for the one caller that needs it saved).
func (a *applier) saveCheckpoint(parent context.Context, ncsEpoch string, ncsSeq, presenceSeq uint64, state json.Marshaler) error {
	start := time.Now()
	b, err := json.Marshal(struct {
		NCSSeq      uint64          `json:"ncsSeq"`
		PresenceSeq uint64          `json:"presenceSeq"`
		State       json.Marshaler  `json:"state"`
		Rules       checkpointRules `json:"rules"`
		NCSEpoch    string          `json:"ncsEpoch"`
	}{ncsSeq, presenceSeq, state, rulesOf(a.rules), ncsEpoch})
	if err != nil {
		a.metrics.checkpointFailures.Inc()
		a.log.Error("encode checkpoint", "err", err)
		return err
	}
	ctx, cancel := context.WithTimeout(parent, 10*time.Second)
	defer cancel()
	if _, err := a.buckets.Checkpoints.PutBytes(ctx, checkpointObject, b); err != nil {
		level := slog.LevelWarn
		if parent.Err() != nil {
			level = slog.LevelDebug // the lease ended (shutdown, or lost): the final or the next leader's counts
		} else {
			a.metrics.checkpointFailures.Inc()
		}
		a.log.Log(context.Background(), level, "checkpoint not saved", "err", err)
		return err
	}
	a.metrics.checkpointSeconds.Observe(time.Since(start).Seconds())
	a.metrics.checkpointBytes.Set(float64(len(b)))
	a.log.Debug("checkpoint saved", "ncsSeq", ncsSeq, "presenceSeq", presenceSeq, "bytes", len(b))
	return nil
}
