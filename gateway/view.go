package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/presence"
)

// liveView is this instance's copy of every roster: the latest checkpoint, then every event of USHER_PRESENCE after
// it, in stream order. Every instance keeps one, whether or not it is the applier, so any instance serves any
// channel.
//
// All methods may be called concurrently.
type liveView struct {
	js    jetstream.JetStream
	store jetstream.ObjectStore
	rules presence.Rules
	log   *slog.Logger
	// publish is called with each event after the view applied it, in stream order, outside the view's lock.
	publish func(e presence.Event, raw []byte)
	// events are the events this instance's applier published, already decoded (nil: none).
	events *handoff[uint64, presence.Event]
	// onGap (if not nil) is called when the view finds it missed events, after it stopped serving: whatever it
	// served before may be wrong (the hub closes its connections, whose clients resume).
	onGap func()
	// ready is true while the view holds the rosters: from its first checkpoint loaded, until it finds it missed
	// events. Written by the view's goroutine (set with mu held, with the rosters it loaded).
	ready atomic.Bool
	// gapUpto is the last of the events the view found missing: it loads no checkpoint before it (view's goroutine).
	gapUpto uint64

	mu      sync.RWMutex
	v       *presence.View
	seq     uint64        // last presence event folded in
	epoch   string        // of the presence stream the rosters were loaded from (presenceStreamState)
	target  uint64        // the stream's last event when the rosters were loaded: caught up once seq reaches it
	changed chan struct{} // closed and replaced whenever seq moves
	recent  *recentEvents // the latest events applied, for resumes (set before run, or made at the first load)
}

// errViewGap: the view missed presence events, gone (expired, or deleted) before it read them.
var errViewGap = errors.New("presence view missed events")

// gapRetry is how often a view that missed events looks for a checkpoint past them (the applier stores one every
// USHER_CHECKPOINT_INTERVAL).
const gapRetry = 5 * time.Second

func newLiveView(js jetstream.JetStream, store jetstream.ObjectStore, rules presence.Rules, log *slog.Logger, publish func(presence.Event, []byte)) *liveView {
	return &liveView{js: js, store: store, rules: rules, log: log, publish: publish, v: presence.NewView(), changed: make(chan struct{})}
}

// run follows the presence stream until ctx ends.
func (lv *liveView) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := lv.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		pause := time.Second
		if errors.Is(err, errViewGap) {
			pause = gapRetry
			lv.log.Error("presence view not serving: it missed events; waiting for a checkpoint past them", "err", err)
		} else {
			lv.log.Warn("presence view interrupted; resuming", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

func (lv *liveView) follow(ctx context.Context) error {
	if !lv.ready.Load() {
		// The view goes on from the checkpoint with the events after it: each of them must still be stored. The
		// stream is read first: when it is behind the checkpoint, the applier goes on from its last seq as it finds
		// it, and saves a checkpoint before it publishes anything more (see lead); read after the checkpoint, the
		// stream might hold events published since, which the clamp below would skip.
		st, err := presenceStreamState(ctx, lv.js)
		if err != nil {
			return err
		}
		cp, err := loadCheckpoint(ctx, lv.js, lv.store, lv.rules)
		if err != nil {
			return err
		}
		lv.mu.RLock()
		remade := st.epoch != lv.epoch
		lv.mu.RUnlock()
		if remade {
			lv.gapUpto = 0 // the events found missing were another stream's
		}
		upto := lv.gapUpto // the events before first, and those found missing before, are gone
		if st.first > 0 {
			upto = max(upto, st.first-1)
		}
		if cp.PresenceSeq < upto {
			return fmt.Errorf("%w: the latest checkpoint is at presence event %d, and events up to %d are gone",
				errViewGap, cp.PresenceSeq, upto)
		}
		if st.last < cp.PresenceSeq {
			// The stream is behind the checkpoint (made anew, or restored from an older backup): the applier goes on
			// from the stream with the checkpoint's rosters (see lead), and so does the view.
			cp.State.ClampSeqs(st.last)
			cp.PresenceSeq = st.last
		}
		// The events found missing are behind this checkpoint: a later one may be before them again, when the
		// stream is restored behind them and the applier goes on from its last event.
		lv.gapUpto = 0
		lv.mu.Lock()
		// Caught up (ready, for /readyz) once the view holds every event stored before it loaded: a target of the
		// stream it loaded from, so that a stream made anew or restored behind it is not waited for.
		lv.v, lv.seq, lv.epoch, lv.target = cp.State.View(), cp.PresenceSeq, st.epoch, st.last
		if lv.recent == nil { // not set by its maker
			lv.recent = newRecentEvents(DefaultRecentEvents)
		}
		lv.recent.reset(cp.PresenceSeq)
		lv.ready.Store(true)
		lv.v.RaiseFloor(cp.PresenceSeq)
		close(lv.changed) // waitSeq callers: the checkpoint may hold what they wait for (no event may follow it)
		lv.changed = make(chan struct{})
		lv.mu.Unlock()
	}
	lv.mu.RLock()
	from := lv.seq + 1
	lv.mu.RUnlock()
	f, err := follow(ctx, lv.js, bus.PresenceStream, "", from, 1024, lv.log)
	if err != nil {
		return err
	}
	defer f.close()
	if epoch := epochOf(f.created); epoch != lv.epochNow() { // made anew since the rosters were loaded
		return lv.remade(fmt.Errorf("epoch %s, the rosters came from %s", epoch, lv.epochNow()))
	}
	// The stream's state is asked for in the background, one request at a time, stallCheck after the last answer:
	// on a busy cluster the answer may take seconds, and the events must not wait for it.
	checks := make(chan streamCheck, 1)
	cctx, cancel := context.WithCancel(ctx)
	var asking sync.WaitGroup
	defer asking.Wait() // bounded: cancel ends the request
	defer cancel()
	inFlight, checked := false, time.Now()
	var behind uint64 // a check found the stream's last event before this next one the view had read; 0: none
	for next := from; ; {
		if !inFlight && time.Since(checked) >= stallCheck {
			inFlight = true
			asked := next
			asking.Go(func() {
				qctx, qcancel := context.WithTimeout(cctx, streamCheckTimeout)
				defer qcancel()
				st, err := presenceStreamState(qctx, lv.js)
				checks <- streamCheck{st: st, err: err, next: asked}
			})
		}
		select {
		case c := <-checks:
			// Whether it is still the stream the rosters came from, idle or not: a stream made anew soon holds the
			// seqs this view waits for, and while events come it would take them for the old stream's, for good.
			// When nothing came since the question (no event may follow the missing ones for a while), whether the
			// next event is still kept.
			inFlight, checked = false, time.Now()
			switch st := c.st; {
			case c.err != nil:
			case st.epoch != lv.epochNow():
				return lv.remade(fmt.Errorf("epoch %s, the rosters came from %s", st.epoch, lv.epochNow()))
			case st.last+1 < c.next:
				// The same stream, gone back: restored from a backup older than what this view read (the answer
				// came after the question, when the view had read up to c.next-1). Its next seqs will not be the
				// events this view waits for. Two checks in a row must find it so: on a NATS cluster the stream's
				// state may answer a little behind the events its consumers already delivered.
				if behind > 0 && st.last+1 < behind {
					return lv.remade(fmt.Errorf("its last event is %d, and this view has read up to %d (restored from an older backup?)", st.last, behind-1))
				}
				behind = c.next
			case next == c.next && st.first > next:
				return lv.missed(next, st.first-1)
			default:
				behind = 0
			}
		default:
		}
		msg, seq, err := f.nextMsg(ctx, time.Second)
		if errors.Is(err, errIdle) {
			continue
		}
		if errors.Is(err, errStreamRemade) {
			return lv.remade(err)
		}
		if err != nil {
			return fmt.Errorf("presence messages: %w", err)
		}
		if seq != next {
			// JetStream went on from the oldest event it keeps: those before it expired while this view was not
			// reading (cut off from NATS, or every instance down, for longer than USHER_PRESENCE_MAX_AGE).
			return lv.missed(next, seq-1)
		}
		next = seq + 1
		raw := msg.Data()
		e, ok := lv.events.take(seq, raw)
		if !ok {
			e = presence.Event{}
			if err := json.Unmarshal(raw, &e); err != nil {
				lv.log.Warn("presence message is not an event; skipped", "seq", seq, "err", err)
			}
		}
		if e.Seq != seq {
			raw = nil // not as the applier stores events: clients get it encoded with its stream sequence
		}
		e.Seq = seq
		lv.mu.Lock()
		applied := e.Channel != "" && lv.v.Apply(e)
		if applied {
			lv.recent.add(e) // with the roster it changed: a resume that finds the channel's seq finds the event
		}
		lv.seq = e.Seq
		close(lv.changed)
		lv.changed = make(chan struct{})
		lv.mu.Unlock()
		if applied {
			lv.publish(e, raw)
		}
	}
}

// streamCheck is the answer to the view's question about USHER_PRESENCE's state, asked when the next event it
// wanted was next.
type streamCheck struct {
	st   presenceState
	err  error
	next uint64
}

// streamCheckTimeout bounds the view's question about USHER_PRESENCE's state.
const streamCheckTimeout = 10 * time.Second

// missed stops the view serving, after it found that events from to upto are gone, and tells onGap.
func (lv *liveView) missed(from, upto uint64) error {
	lv.ready.Store(false)
	lv.gapUpto = upto
	if lv.onGap != nil {
		lv.onGap()
	}
	return fmt.Errorf("%w: events %d to %d are gone (expired, or deleted) and this instance had not read them", errViewGap, from, upto)
}

// remade stops the view serving, after it found USHER_PRESENCE made anew (how it found out: why): its rosters and
// seqs belong to the old stream. It loads the new stream's checkpoint, and tells onGap, so that clients get a
// snapshot.
func (lv *liveView) remade(why error) error {
	lv.ready.Store(false)
	if lv.onGap != nil {
		lv.onGap()
	}
	return fmt.Errorf("%w: USHER_PRESENCE was made anew: %w", errViewGap, why)
}

// epochNow is the epoch of the stream the rosters came from.
func (lv *liveView) epochNow() string {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	return lv.epoch
}

// snapshot returns a channel's roster.
func (lv *liveView) snapshot(channel string) presence.Snapshot {
	lv.mu.RLock()
	s := lv.v.Copy(channel)
	s.Epoch = lv.epoch
	lv.mu.RUnlock()
	s.Sort() // not under the lock: a large roster's sort would hold up every channel's events
	return s
}

// channels lists the channels with members whose name contains match, regardless of ASCII case (with first above
// 0, only the first that many), in order, and tells how many matched.
func (lv *liveView) channels(match string, first int, order func(a, b presence.Summary) int) ([]presence.Summary, int) {
	lv.mu.RLock()
	s, total := lv.v.CopyChannels(match, first, order)
	lv.mu.RUnlock()
	slices.SortFunc(s, order) // not under the lock, as in snapshot
	return s, total
}

// waitSeq waits until the view is ready and holds presence event seq, or ctx ends.
func (lv *liveView) waitSeq(ctx context.Context, seq uint64) error {
	return lv.waitUntil(ctx, func() uint64 { return seq }, "waiting for")
}

// caughtUp reports whether the view holds its rosters and every event stored when it loaded them, with the last
// event it holds and the one it catches up to.
func (lv *liveView) caughtUp() (ok bool, seq, target uint64) {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	return lv.ready.Load() && lv.seq >= lv.target, lv.seq, lv.target
}

// waitCaughtUp waits until caughtUp, or ctx ends.
func (lv *liveView) waitCaughtUp(ctx context.Context) error {
	return lv.waitUntil(ctx, func() uint64 { return lv.target }, "catching up to")
}

// waitUntil waits until the view is ready and holds presence event target() (called under the view's lock), or
// ctx ends; what says what the wait is for, in the error.
func (lv *liveView) waitUntil(ctx context.Context, target func() uint64, what string) error {
	for {
		lv.mu.RLock()
		cur, want, ch, ready := lv.seq, target(), lv.changed, lv.ready.Load()
		lv.mu.RUnlock()
		if ready && cur >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), fmt.Errorf("view at %d (rosters loaded: %v), %s %d", cur, ready, what, want))
		case <-ch:
		}
	}
}

// channelSeq is the last event of channel the view holds.
func (lv *liveView) channelSeq(channel string) uint64 {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	return lv.v.Seq(channel)
}

// recentEvents returns the first limit of channel's events with since < seq <= until from memory, oldest first,
// when the view holds them all there: until is at most the view's last event, and since no older than the oldest
// kept (the latest DefaultRecentEvents, or Config.RecentEvents, of every channel).
func (lv *liveView) recentEvents(channel string, since, until uint64, limit int) ([]presence.Event, bool) {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	if !lv.ready.Load() || lv.recent == nil || until > lv.seq {
		return nil, false
	}
	return lv.recent.channelEvents(channel, since, until, max(limit, 1))
}

// recentPage returns up to limit of channel's events after since, oldest first, from memory, with the epoch they
// count in, when the view holds every one of them there (see recentEvents). Events stored but not applied by the
// view yet are not in it: the reader gets them at its next read.
func (lv *liveView) recentPage(channel string, since uint64, limit int) ([]presence.Event, string, bool) {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	if !lv.ready.Load() || lv.recent == nil {
		return nil, "", false
	}
	events, ok := lv.recent.channelEvents(channel, since, lv.seq, limit)
	if !ok {
		return nil, "", false
	}
	if events == nil {
		events = []presence.Event{} // [] in JSON, as from the stream
	}
	return events, lv.epoch, true
}

// lastSeq is the last presence event the view holds.
func (lv *liveView) lastSeq() uint64 {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	return lv.seq
}
