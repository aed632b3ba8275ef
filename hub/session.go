package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/presence"
)

const (
	pageSize      = 1000
	resumeWait    = 2 * time.Second
	replayTimeout = 10 * time.Second
)

// session is one WebSocket connection: one read goroutine, a writer goroutine only while frames are queued, and an
// op worker only while client frames wait for their answers.
type session struct {
	h      *Hub
	conn   *websocket.Conn
	cork   *corkConn
	claims *auth.Claims
	ctx    context.Context
	cancel context.CancelFunc
	expiry *time.Timer

	room    chan struct{} // a token when the writer takes the queue, for waitRoom
	pinging atomic.Bool   // a ping waits for its pong
	mu      sync.Mutex
	queue   []outFrame
	writing bool
	closed  bool
	subs    map[string]*subscription
	once    sync.Once
	ops     []clientOp     // client frames waiting for the op worker, in order
	working bool           // the op worker runs
	workers sync.WaitGroup // the writer and the op worker
}

// subscription is one session's interest in one channel.
type subscription struct {
	s       *session
	channel string

	mu sync.Mutex
	// after: frames with seq <= after are covered by what the client already has (snapshot or replay).
	after uint64
	// live is false while a resume replays stored events; live frames then wait in pending.
	live    bool
	pending []pendingFrame
	// overflow: more live frames came while held back than a send queue holds; they were dropped.
	overflow bool
}

type pendingFrame struct {
	seq   uint64
	frame outFrame
}

// outFrame is a frame waiting to be written. notifyMs, when set, is the notifyMs of the live event it carries:
// the start of the end-to-end latency observed when it is written.
type outFrame struct {
	data     []byte
	notifyMs int64
}

func (h *Hub) newSession(conn *websocket.Conn, cork *corkConn, claims *auth.Claims) *session {
	ctx, cancel := context.WithCancel(h.ctx)
	s := &session{h: h, conn: conn, cork: cork, claims: claims, ctx: ctx, cancel: cancel, subs: map[string]*subscription{},
		room: make(chan struct{}, 1)}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		cancel()
		return nil
	}
	h.sessions[s] = struct{}{}
	h.sessWG.Add(1)
	h.mu.Unlock()
	h.nConns.Add(1)
	if claims.ExpiresAt != nil {
		s.mu.Lock() // the timer may fire at once; close reads s.expiry under s.mu
		s.expiry = time.AfterFunc(time.Until(claims.ExpiresAt.Time), func() { s.close(CloseTokenExpired, "token expired") })
		s.mu.Unlock()
	}
	return s
}

// readLoop reads client frames until the connection ends, and hands them to the op worker. It never waits for an
// operation (a resume may take seconds to go at the client's pace): it keeps reading, so that the client's pongs
// are seen. newSession counted it in the hub's WaitGroup.
func (s *session) readLoop() {
	defer s.h.sessWG.Done()
	defer s.close(websocket.StatusNormalClosure, "")
	for {
		typ, data, err := s.conn.Read(s.ctx)
		if err != nil {
			return // a close from either side, a frame over the limit, or a dead connection: none is logged
		}
		var o clientOp
		o.req, o.bad = parseRequest(typ == websocket.MessageText, data)
		if !s.queueOp(o) {
			s.close(websocket.StatusPolicyViolation, "too many requests waiting for an answer")
			return
		}
	}
}

// clientOp is a client frame for the op worker: a request (parseRequest's), or the error that answers a frame that
// was not one.
type clientOp struct {
	req request
	bad []byte
}

// maxWaiting is how many client frames may wait for the op worker: twice the subscriptions allowed, and some; at
// least 64, so that with few subscriptions allowed a client may still unsubscribe from all it has while its
// window of subscribes waits (usher.js keeps 16 in flight, and unsubscribes get no answer to wait for).
func (h *Hub) maxWaiting() int { return max(2*h.cfg.MaxSubscriptions+16, 64) }

// queueOp queues a client frame for the op worker, starting it if it is not running. It reports false when more
// than maxWaiting frames wait.
func (s *session) queueOp(o clientOp) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true
	}
	if len(s.ops) >= s.h.maxWaiting() {
		s.mu.Unlock()
		return false
	}
	s.ops = append(s.ops, o)
	start := !s.working
	if start {
		s.working = true
		s.workers.Add(1)
	}
	s.mu.Unlock()
	if start {
		go s.opLoop()
	}
	return true
}

// opLoop answers the client's frames in the order they came, and exits when none waits. Like the writer, it runs
// only while there is work: an idle connection has no goroutine of ours.
func (s *session) opLoop() {
	defer s.workers.Done()
	for {
		s.mu.Lock()
		if len(s.ops) == 0 || s.closed {
			s.ops, s.working = nil, false
			s.mu.Unlock()
			return
		}
		o := s.ops[0]
		s.ops = s.ops[1:]
		s.mu.Unlock()
		s.do(o)
	}
}

// do answers one client frame.
func (s *session) do(o clientOp) {
	if o.bad != nil {
		s.enqueue(o.bad)
		return
	}
	req := o.req
	switch req.Op {
	case opPing:
		s.enqueue(pongFrame)
	case opSubscribe:
		s.subscribe(req)
	case opUnsubscribe:
		s.unsubscribe(req.Channel)
	}
}

func (s *session) subscribe(req request) {
	ch := req.Channel // a valid name: parseRequest checked it
	if !s.claims.Channels.Allows(ch) {
		s.enqueue(encodeError(CodeForbidden, ch, "the token does not grant this channel"))
		return
	}
	if !s.h.src.Ready() {
		s.enqueue(encodeError(CodeUnavailable, ch, "this server is loading its rosters: subscribe again in a moment"))
		return
	}
	s.mu.Lock()
	_, again := s.subs[ch]
	n := len(s.subs)
	s.mu.Unlock()
	if again {
		s.unsubscribe(ch) // a second subscribe starts over
	} else if n >= s.h.cfg.MaxSubscriptions {
		s.enqueue(encodeError(CodeTooManySubscriptions, ch, fmt.Sprintf("at most %d subscriptions per connection", s.h.cfg.MaxSubscriptions)))
		return
	}
	sub := &subscription{s: s, channel: ch}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.subs[ch] = sub
	s.mu.Unlock()
	s.h.nSubs.Add(1)
	s.enqueue(encodeChannel("subscribed", ch))
	if req.Since == nil {
		s.sendSnapshot(sub)
		return
	}
	err := errOtherEpoch
	if req.Epoch == "" || req.Epoch == s.h.src.Epoch() {
		err = s.resume(sub, *req.Since)
	}
	if err != nil && s.isClosed() {
		return // the client went during the resume (its own context was cancelled): nobody to reset, nothing wrong
	}
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, errTooOld) || errors.Is(err, errHeldOverflow) || errors.Is(err, errOtherEpoch) {
			level = slog.LevelDebug // what reset is for, not a fault
		}
		s.h.log.Log(context.Background(), level, "resume not possible; sending a snapshot", "channel", ch, "err", err)
		s.h.detach(sub)
		s.enqueue(encodeChannel("reset", ch))
		s.sendSnapshot(sub)
	}
}

// sendSnapshot attaches sub with its live frames held back, sends a snapshot of the channel, then the held frames
// it does not cover. The snapshot is made outside every lock the fan-out takes.
func (s *session) sendSnapshot(sub *subscription) {
	ch, seq, ok := s.h.attach(sub)
	if !ok {
		return // the session closed meanwhile: nobody to send a snapshot to
	}
	frame, at := ch.snapshot(s.h.src, sub.channel, seq)
	s.enqueue(frame)
	ctx, cancel := context.WithTimeout(s.ctx, replayTimeout)
	defer cancel()
	if err := s.goLive(ctx, sub, at); err != nil { // goLive answers nil when the session closed meanwhile
		s.closeSlow() // the client did not take its held frames in time, or more came than a queue holds
	}
}

// errTooOld sends a resume down the reset path.
var errTooOld = errors.New("since is older than what is retained")

// errOtherEpoch: the client's since counts in a stream that has since been made anew.
var errOtherEpoch = errors.New("since is of another epoch of the presence stream")

// resume replays the channel's stored events after since, then goes live without a gap or a repeat.
func (s *session) resume(sub *subscription, since uint64) error {
	src := s.h.src
	ctx, cancel := context.WithTimeout(s.ctx, replayTimeout)
	defer cancel()
	if since > src.Seq(sub.channel) {
		// The client may come from an instance whose view is a little ahead of ours: wait for ours.
		wctx, wcancel := context.WithTimeout(ctx, resumeWait)
		err := src.WaitSeq(wctx, since)
		wcancel()
		if err != nil {
			return fmt.Errorf("since %d is ahead of this instance: %w", since, err)
		}
	}
	if served, err := s.resumeFromMemory(ctx, sub, since); served {
		return err
	}
	first, err := src.FirstSeq(ctx)
	if err != nil {
		return err
	}
	known := since // the channel's events up to known are not needed: the client has them, or there were none
	if since+1 < first {
		if !s.quietUntil(ctx, sub.channel, since, first-1) {
			return errTooOld
		}
		known = first - 1
	}
	_, until, ok := s.h.attach(sub) // live frames now wait in sub.pending
	if !ok {
		return nil // the session closed meanwhile
	}
	last := since
	for page := 0; last < until; page++ {
		events, stored, err := src.Events(ctx, sub.channel, last, until, pageSize)
		if err != nil {
			return err
		}
		if page == 0 && stored > uint64(s.h.cfg.MaxReplay) {
			return fmt.Errorf("%w: %d events to replay, more than %d", errTooOld, stored, s.h.cfg.MaxReplay)
		}
		// Events are removed oldest first (USHER_PRESENCE_MAX_AGE): if none after last has gone, none was missed.
		if first, err := src.FirstSeq(ctx); err != nil {
			return err
		} else if max(last, known)+1 < first {
			return fmt.Errorf("%w: events after %d expired during the replay", errTooOld, max(last, known))
		}
		if len(events) == 0 {
			break
		}
		if err := s.replay(ctx, sub, events, &last); errors.Is(err, errSessionClosed) {
			return nil
		} else if err != nil {
			return err
		}
	}
	s.h.nResumedStored.Add(1)
	return s.goLiveAfterReplay(sub, max(last, until))
}

// goLiveAfterReplay is goLive after a replay up to seq: the held frames get their own time, like a replay.
func (s *session) goLiveAfterReplay(sub *subscription, seq uint64) error {
	ctx, cancel := context.WithTimeout(s.ctx, replayTimeout)
	defer cancel()
	return s.goLive(ctx, sub, seq)
}

// resumeFromMemory resumes sub from since with the events its source keeps in memory (Source.Recent), without
// reading the stored ones: a crowd of clients back after a short absence costs no read of the stream. served is
// false when the source does not hold every event needed there; sub is then detached again, for the stored events.
func (s *session) resumeFromMemory(ctx context.Context, sub *subscription, since uint64) (served bool, err error) {
	_, until, ok := s.h.attach(sub) // live frames now wait in sub.pending
	if !ok {
		return true, nil // the session closed meanwhile
	}
	// One more than a replay may hold tells a resume too far behind: the source's memory may hold many more of the
	// channel's events, which would all be copied only to be dropped. (Not past math.MaxInt: wrapped around, the
	// limit would cut the replay short, a gap.)
	limit := s.h.cfg.MaxReplay
	if limit < math.MaxInt {
		limit++
	}
	events, ok := s.h.src.Recent(sub.channel, since, until, limit)
	if !ok {
		s.h.detach(sub)
		return false, nil
	}
	if len(events) > s.h.cfg.MaxReplay {
		return true, fmt.Errorf("%w: %d events to replay, more than %d", errTooOld, len(events), s.h.cfg.MaxReplay)
	}
	last := since
	if err := s.replay(ctx, sub, events, &last); errors.Is(err, errSessionClosed) {
		return true, nil
	} else if err != nil {
		return true, err
	}
	s.h.nResumedMemory.Add(1)
	return true, s.goLiveAfterReplay(sub, max(last, until))
}

// replay queues events (of sub's channel, in order) no faster than the client reads: it waits for room in the
// send queue, a part at a time. *last is the seq of the last one queued. errSessionClosed: the session closed.
func (s *session) replay(ctx context.Context, sub *subscription, events []presence.Event, last *uint64) error {
	for part := range slices.Chunk(events, max(1, s.h.cfg.SendQueue/2)) {
		sub.mu.Lock()
		overflow := sub.overflow
		sub.mu.Unlock()
		if overflow { // the reset and snapshot that follow cover the rest: replaying it would be waste
			return errHeldOverflow
		}
		if err := s.waitRoom(ctx, len(part)); errors.Is(err, errSessionClosed) {
			return err
		} else if err != nil {
			return fmt.Errorf("the client did not read its replay in time: %w", err)
		}
		for _, e := range part {
			s.enqueue(EncodeEvent(e))
			*last = e.Seq
		}
	}
	return nil
}

// quietUntil reports whether channel had no event after since up to upto, as this instance's view shows once it
// has passed upto. A channel with no event for longer than the stream keeps events (USHER_PRESENCE_MAX_AGE) has a
// snapshot seq older than the oldest event kept; a client resuming from it has missed nothing, and a reset would
// give it a snapshot at that same seq again, on every reconnect.
func (s *session) quietUntil(ctx context.Context, channel string, since, upto uint64) bool {
	wctx, cancel := context.WithTimeout(ctx, resumeWait)
	defer cancel()
	if s.h.src.WaitSeq(wctx, upto) != nil {
		return false
	}
	return s.h.src.Seq(channel) <= since
}

// errSessionClosed: the session closed while waiting.
var errSessionClosed = errors.New("session closed")

// waitRoom waits until the send queue has room for n more frames, or ctx ends.
func (s *session) waitRoom(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		closed, free := s.closed, s.h.cfg.SendQueue-len(s.queue)
		s.mu.Unlock()
		switch {
		case closed:
			return errSessionClosed
		case free >= n:
			return nil
		}
		select {
		case <-s.room:
		case <-ctx.Done():
			if s.isClosed() {
				return errSessionClosed
			}
			return ctx.Err()
		}
	}
}

// errHeldOverflow: more live frames came while a subscription was held back than a send queue holds.
var errHeldOverflow = errors.New("more events came during the replay than a send queue holds")

// goLive sends the live frames held back while the client was given everything up to seq, the ones after seq in
// order, and lets the next ones through. Like a replay, it goes at the client's pace, half a send queue at a time:
// a long replay of a busy channel holds back many frames.
func (s *session) goLive(ctx context.Context, sub *subscription, seq uint64) error {
	part := max(1, s.h.cfg.SendQueue/2)
	for {
		if err := s.waitRoom(ctx, part); errors.Is(err, errSessionClosed) {
			return nil
		} else if err != nil {
			return fmt.Errorf("the client did not read its held frames in time: %w", err)
		}
		sub.mu.Lock()
		if sub.overflow {
			sub.mu.Unlock()
			return errHeldOverflow
		}
		n := 0
		for _, p := range sub.pending {
			if n == part {
				break
			}
			n++
			if p.seq > seq {
				sub.s.enqueueFrame(p.frame)
				seq = p.seq
			}
		}
		sub.pending = sub.pending[n:]
		if len(sub.pending) == 0 {
			sub.pending, sub.after, sub.live = nil, seq, true
			sub.mu.Unlock()
			return nil
		}
		sub.mu.Unlock()
	}
}

// deliver passes a live frame to the subscription: dropped if the client has it, held while a resume replays. It
// reports whether the session's writer must be started, which the caller does once it holds no lock (startWriter).
func (sub *subscription) deliver(seq uint64, frame outFrame) (start bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if seq <= sub.after {
		return false
	}
	if !sub.live {
		if sub.overflow {
			return false
		}
		if len(sub.pending) >= sub.s.h.cfg.SendQueue { // goLive gives up: a resume then sends reset and a snapshot
			sub.overflow, sub.pending = true, nil
			return false
		}
		sub.pending = append(sub.pending, pendingFrame{seq, frame})
		return false
	}
	sub.after = seq
	return sub.s.queueFrame(frame)
}

// attach registers sub with its channel, not live: its live frames wait in sub.pending until goLive. It returns the
// channel and the last event the view has for it: every event after that one reaches pending. It returns false,
// and leaves no trace in the hub, when the session has closed.
func (h *Hub) attach(sub *subscription) (*channel, uint64, bool) {
	for {
		h.mu.Lock()
		ch := h.channels[sub.channel]
		if ch == nil {
			ch = &channel{subs: map[*subscription]struct{}{}}
			h.channels[sub.channel] = ch
		}
		h.mu.Unlock()
		ch.mu.Lock()
		if ch.subs == nil { // emptied and dropped by detach meanwhile
			ch.mu.Unlock()
			continue
		}
		// Under ch.mu no event of this channel is being fanned out: the view applies an event before Publish
		// fans it out, so every event after seq is fanned out after this, to pending.
		seq := h.src.Seq(sub.channel)
		sub.mu.Lock()
		sub.live, sub.pending, sub.overflow = false, nil, false
		sub.mu.Unlock()
		ch.subs[sub] = struct{}{}
		closed := sub.s.isClosed() // closed meanwhile: its close may have run its detach already
		ch.mu.Unlock()
		if closed {
			h.detach(sub) // drops the channel too if it has no one else
			return nil, 0, false
		}
		return ch, seq, true
	}
}

// detach removes sub from its channel, dropping the channel when it has no subscriber left.
func (h *Hub) detach(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.channels[sub.channel]
	if ch == nil {
		return
	}
	ch.mu.Lock()
	delete(ch.subs, sub)
	if len(ch.subs) == 0 {
		ch.subs = nil
		delete(h.channels, sub.channel)
	}
	ch.mu.Unlock()
}

func (s *session) unsubscribe(channel string) {
	s.mu.Lock()
	sub := s.subs[channel]
	delete(s.subs, channel)
	s.mu.Unlock()
	if sub != nil {
		s.h.detach(sub)
		s.h.nSubs.Add(-1)
	}
}

// enqueue queues a frame of the connection's own goroutine: an answer to the client's request, or a replayed event.
// Unlike live events, which never wait, it waits for room in the send queue (a replay, or the live events held back
// during it, may have just filled it), and closes the client as too slow only when it makes no room within
// replayTimeout.
func (s *session) enqueue(frame []byte) {
	var ctx context.Context // made only for a frame that has to wait (a replay queues thousands that need not)
	for {
		// Room is looked for and taken under one lock: a live event cannot take the last place in between.
		queued, start := s.tryQueue(outFrame{data: frame})
		if start {
			s.startWriter()
		}
		if queued {
			return
		}
		if ctx == nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(s.ctx, replayTimeout)
			defer cancel()
		}
		if err := s.waitRoom(ctx, 1); err != nil {
			if !errors.Is(err, errSessionClosed) {
				s.closeSlow()
			}
			return
		}
	}
}

func (s *session) enqueueFrame(frame outFrame) {
	if s.queueFrame(frame) {
		s.startWriter()
	}
}

// queueFrame queues a frame and reports whether the writer must be started: it was not running, and is now
// counted as running, so that exactly one caller starts it. A client whose queue is full is closed.
func (s *session) queueFrame(frame outFrame) (start bool) {
	queued, start := s.tryQueue(frame)
	if !queued {
		s.closeSlow()
	}
	return start
}

// tryQueue queues a frame when the queue has room; queued is true when it did, or when the session is closed (the
// frame is dropped: there is no one to send it to). start is as for queueFrame.
func (s *session) tryQueue(frame outFrame) (queued, start bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true, false
	}
	if len(s.queue) >= s.h.cfg.SendQueue {
		s.mu.Unlock()
		return false, false
	}
	s.queue = append(s.queue, frame)
	start = !s.writing
	if start {
		s.writing = true
		s.workers.Add(1)
	}
	s.mu.Unlock()
	return true, start
}

// startWriter runs the writer that queueFrame counted.
func (s *session) startWriter() { go s.writeLoop() }

// writeLoop writes what is queued, each batch corked into as few syscalls as it fits, and exits when the queue is
// empty.
func (s *session) writeLoop() {
	defer s.workers.Done()
	var batch []outFrame
	for {
		s.mu.Lock()
		batch, s.queue = s.queue, batch[:0]
		if len(batch) == 0 || s.closed {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		select {
		case s.room <- struct{}{}:
		default:
		}
		s.cork.cork(s.h.cfg.WriteTimeout, s.h.cfg.PingInterval)
		for _, f := range batch {
			if err := s.conn.Write(s.ctx, websocket.MessageText, f.data); err != nil {
				_ = s.cork.flush()
				if s.cork.slow() {
					s.closeSlow()
				} else {
					s.close(websocket.StatusInternalError, "write failed")
				}
				return
			}
		}
		if err := s.cork.flush(); err != nil {
			s.closeSlow()
			return
		}
		s.h.nFrames.Add(int64(len(batch)))
		if lat := s.h.cfg.DeliveryLatency; lat != nil {
			now := time.Now().UnixMilli()
			for _, f := range batch {
				if f.notifyMs > 0 {
					lat.Observe(float64(now-f.notifyMs) / 1000)
				}
			}
		}
		clear(batch)
	}
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// ping checks that the peer answers within timeout, and drops it if not.
func (s *session) ping(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	if err := s.conn.Ping(ctx); err != nil && s.ctx.Err() == nil {
		if s.cork.slow() {
			// A write to this client missed its deadline, and coder/websocket closed the connection under the ping
			// waiting behind it: the client is too slow, which this goroutine may notice before the writer does.
			s.closeSlow()
			return
		}
		s.h.log.Debug("peer did not answer a ping; dropped", "err", err)
		s.close(websocket.StatusGoingAway, "no pong")
	}
}

// closeSlow closes a client that does not keep up, and counts it once (a writer failing on the connection closed
// here would otherwise count it again).
func (s *session) closeSlow() {
	if s.close(CloseTooSlow, "too slow: the client did not read its frames in time") {
		s.h.nSlow.Add(1)
	}
}

// close ends the session once, and reports whether this call did. It may be called with a channel's lock held (by Publish, for a slow client), so
// everything that takes registry locks or waits on the peer runs in the background, owned by the hub.
func (s *session) close(code websocket.StatusCode, reason string) (closed bool) {
	s.once.Do(func() {
		closed = true
		s.mu.Lock()
		s.closed = true
		s.queue = nil
		select {
		case s.room <- struct{}{}: // wakes a replay waiting for room
		default:
		}
		subs := s.subs
		s.subs = map[string]*subscription{}
		expiry := s.expiry
		s.mu.Unlock()
		if expiry != nil {
			expiry.Stop()
		}
		s.h.nConns.Add(-1)
		s.h.nSubs.Add(-int64(len(subs)))
		s.h.sessWG.Go(func() {
			for _, sub := range subs {
				s.h.detach(sub)
			}
			s.h.mu.Lock()
			delete(s.h.sessions, s)
			s.h.releaseLocked(s.claims.Subject)
			s.h.mu.Unlock()
			// coder/websocket's close handshake first reads the rest of a frame the peer began, with no deadline: a
			// peer that sent the header of a frame over the read limit (1009) and no more held the connection, no
			// longer counted, for as long as it liked. It gets WriteTimeout to take the close, as for any frame.
			cut := time.AfterFunc(s.h.cfg.WriteTimeout, func() { _ = s.cork.Close() })
			_ = s.conn.Close(code, reason)
			cut.Stop()
			s.cancel()
			s.workers.Wait()
		})
	})
	return closed
}
