package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// errIdle is follower.nextMsg's answer when no message came within its wait.
var errIdle = errors.New("no message yet")

// errStreamRemade: the stream a follower reads was deleted and made again. Its sequences started again, so what
// the follower's reader holds counts in the old one.
var errStreamRemade = errors.New("the stream was made anew")

const (
	// stallCheck is how long a follower may go without a message before it asks the stream whether it moved on; a
	// consumer is replaced when two checks in a row find the same message undelivered.
	stallCheck = 2 * time.Second
	// remakeEvery is how often a follower without a consumer tries to make one.
	remakeEvery = time.Second
	// followerInactive is how long the server keeps a follower's consumer with no pull waiting: the fallback when
	// the follower's own deletion cannot reach it (a follower pulls all the time, idle stream or not; the library's
	// default is 5 minutes).
	followerInactive = time.Minute
)

// follower reads a stream in order, from a given sequence, through an ordered consumer, and keeps reading when
// that consumer dies quietly.
//
// On a NATS cluster, an ordered consumer lives on one server (its stream's leader when it was made). When that
// server dies, the client library is meant to notice the missing heartbeats and make a new consumer; in tests with
// a NATS node killed with -9 it sometimes did not, and the reader waited forever while the stream moved on. So a
// follower that got nothing for stallCheck asks the stream for the last sequence of the subjects it follows: if a
// message it found there is still not delivered at the next check, the consumer is stalled, and a new one replaces
// it, starting right after the last message delivered. An iterator that fails is replaced the same way. Nothing is skipped or
// delivered twice.
//
// The library's own recovery is limited to one attempt (MaxResetAttempts 1): left to itself, it retries making a
// consumer forever inside Next, each attempt up to 10 s, without regard to Next's context (nats.go's
// orderedSubscription.Next and orderedConsumer.reset), and the follower could neither report idleness nor check
// the stream meanwhile. Instead the follower, when it cannot make a consumer, stays without one and tries again
// every remakeEvery, answering errIdle meanwhile: its reader (the applier, the view) waits rather than restarts.
//
// A follower is used by one goroutine; close it when done.
type follower struct {
	js     jetstream.JetStream
	stream string
	filter string // one subject filter, or "" for the whole stream
	batch  int
	log    *slog.Logger

	created time.Time                 // when the stream was made, as the first consumer found it
	cons    jetstream.Consumer        // nil while a consumer could not be made
	it      jetstream.MessagesContext // nil while a consumer could not be made
	next    uint64                    // stream sequence of the next message wanted
	pending uint64                    // messages of the filter stored after the last one delivered, as it was delivered
	idle    time.Time                 // when the follower last delivered or checked the stream
	tried   time.Time                 // when the follower last tried to make a consumer
	remakes int                       // consumers replaced
	suspect uint64                    // a message the stream held at the last check and the consumer had not delivered
	// consumer is the name of the server consumer that make made (the stream's creation time checked after it was
	// made); the library's own recovery makes others, which may be on a stream made anew.
	consumer string
}

// follow starts reading stream (only filter's subjects, unless it is "") at sequence from (at least 1).
func follow(ctx context.Context, js jetstream.JetStream, stream, filter string, from uint64, batch int, log *slog.Logger) (*follower, error) {
	f := &follower{js: js, stream: stream, filter: filter, batch: batch, log: log, next: max(from, 1), idle: time.Now()}
	if err := f.make(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// make replaces the consumer with one starting at f.next. On error the follower has none.
func (f *follower) make(ctx context.Context) error {
	f.drop()
	f.tried = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ocfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: f.next,
		MaxResetAttempts: 1, InactiveThreshold: followerInactive}
	if f.filter != "" {
		ocfg.FilterSubjects = []string{f.filter}
	}
	cons, err := f.js.OrderedConsumer(cctx, f.stream, ocfg)
	if err != nil {
		return fmt.Errorf("%s consumer: %w", f.stream, err)
	}
	f.cons = cons
	it, err := cons.Messages(jetstream.PullMaxMessages(f.batch)) // makes the consumer on the server
	if err != nil {
		f.drop()
		return fmt.Errorf("%s messages: %w", f.stream, err)
	}
	f.it = it
	if info := cons.CachedInfo(); info != nil {
		f.consumer = info.Name
	}
	// A consumer made again after a failure may be on a stream made anew meanwhile, whose messages from f.next on
	// would pass for the ones that follow: the stream's creation time, asked after the consumer was made, tells.
	if err := f.checkCreated(cctx); err != nil {
		f.drop()
		return err
	}
	f.idle = time.Now()
	return nil
}

// checkCreated asks the stream when it was made: errStreamRemade if not when the follower's first consumer found.
func (f *follower) checkCreated(ctx context.Context) error {
	s, err := f.js.Stream(ctx, f.stream)
	if err != nil {
		return fmt.Errorf("%s info: %w", f.stream, err)
	}
	switch created := s.CachedInfo().Created; {
	case f.created.IsZero():
		f.created = created
	case !created.Equal(f.created):
		return fmt.Errorf("%w: %s was made at %s, and again at %s", errStreamRemade, f.stream, f.created, created)
	}
	return nil
}

// drop stops the current consumer and deletes it on the server, which the library leaves there until its
// inactivity threshold. The deletion is bounded: a server out of reach lets followerInactive clear it instead.
func (f *follower) drop() {
	if f.it != nil {
		f.it.Stop()
		f.it = nil
	}
	if f.cons == nil {
		return
	}
	if info := f.cons.CachedInfo(); info != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = f.js.DeleteConsumer(ctx, f.stream, info.Name)
		cancel()
	}
	f.cons = nil
}

// nextMsg returns the next message and its stream sequence, waiting at most wait (errIdle past it) and never past
// ctx. Any other error means the follower could not go on: the caller starts again from what it has.
func (f *follower) nextMsg(ctx context.Context, wait time.Duration) (jetstream.Msg, uint64, error) {
	if f.it == nil {
		return nil, 0, f.retryMake(ctx, wait)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	msg, err := f.it.Next(jetstream.NextContext(wctx))
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil, 0, ctx.Err()
	case err == nil:
		meta, err := msg.Metadata()
		if err != nil {
			return nil, 0, fmt.Errorf("%s message metadata: %w", f.stream, err)
		}
		if meta.Consumer != f.consumer {
			// The library made its consumer again by itself (after "consumer deleted", or missing heartbeats), from
			// the stream of that name: if that is one made anew, this message counts in it, and the old stream's
			// next would be taken from it. Asked after the consumer was made, the stream's creation time tells.
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := f.checkCreated(ictx)
			cancel()
			if errors.Is(err, errStreamRemade) {
				f.drop()
				return nil, 0, err
			}
			if err != nil { // cannot tell: this message is not delivered, and is read again from a consumer made anew
				f.log.Warn("cannot tell whether the stream was made anew; making a new consumer", "stream", f.stream,
					"from", f.next, "err", err)
				return nil, 0, f.remake(ctx)
			}
			f.consumer = meta.Consumer
		}
		f.next, f.idle, f.pending = meta.Sequence.Stream+1, time.Now(), meta.NumPending
		return msg, meta.Sequence.Stream, nil
	case errors.Is(err, context.DeadlineExceeded):
		return nil, 0, f.checkStalled(ctx)
	default:
		f.log.Warn("ordered consumer failed; making a new one", "stream", f.stream, "from", f.next, "err", err)
		return nil, 0, f.remake(ctx)
	}
}

// checkStalled answers errIdle, after making a new consumer if the current one is stalled: a message the stream
// held at one check is still not delivered at the next, stallCheck later. (One sighting is not enough: a message
// stored just before the check may simply be on its way.)
func (f *follower) checkStalled(ctx context.Context) error {
	if time.Since(f.idle) < stallCheck {
		return errIdle
	}
	f.idle = time.Now()
	last, err := f.lastSeq(ctx)
	if err != nil {
		f.log.Warn("cannot tell whether the ordered consumer is stalled", "stream", f.stream, "from", f.next, "err", err)
		return errIdle
	}
	if last < f.next {
		f.suspect = 0
		return errIdle // nothing new
	}
	if f.suspect < f.next { // first sighting, or what was suspected has come since
		f.suspect = last
		return errIdle
	}
	f.suspect = 0
	f.log.Warn("ordered consumer stalled while the stream moved on; making a new one", "stream", f.stream,
		"from", f.next, "last", last)
	return f.remake(ctx)
}

// lastSeq is the stream sequence of the last message on the follower's subjects (0: none).
func (f *follower) lastSeq(ctx context.Context) (uint64, error) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := f.js.Stream(ictx, f.stream)
	if err != nil {
		return 0, err
	}
	if f.filter == "" {
		return s.CachedInfo().State.LastSeq, nil // Stream has just fetched it
	}
	m, err := s.GetLastMsgForSubject(ictx, f.filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// remake replaces the consumer. It answers errIdle (or ctx's error): when no consumer can be made now, the next
// calls try again.
func (f *follower) remake(ctx context.Context) error {
	f.remakes++
	if err := f.make(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errStreamRemade) {
			return err
		}
		f.log.Warn("cannot make an ordered consumer; trying again", "stream", f.stream, "from", f.next, "err", err)
	}
	return errIdle
}

// retryMake waits until remakeEvery has passed since the last attempt (at most wait), then tries to make a
// consumer again. It answers errIdle, or ctx's error.
func (f *follower) retryMake(ctx context.Context, wait time.Duration) error {
	if d := time.Until(f.tried.Add(remakeEvery)); d > 0 {
		t := time.NewTimer(min(d, wait))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if d > wait {
			return errIdle
		}
	}
	return f.remake(ctx)
}

func (f *follower) close() { f.drop() }
