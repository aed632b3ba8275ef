package sim

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// RunConfig configures Run. The zero value sends one delivery at a time, as fast as the receiver answers, until
// the context ends.
type RunConfig struct {
	// Rate is the deliveries per second Run makes at most. Zero means as fast as the workers take them.
	Rate float64
	// Count is how many deliveries to make. Zero means no limit: Run stops when its context ends.
	Count int
	// Concurrency is how many deliveries are sent at once. Zero means 1. With more than one, the receiver may get
	// them in another order than the generator made them, as it may from Agora.
	Concurrency int
	// Drain makes Run, once it made Count deliveries, also send what the generator still owes (its Flush), so that
	// every original was delivered and Truth can be compared with the receiver. Sent may then exceed Count.
	Drain bool
	// Clock is the generator's clock. Nil means time.Now.
	Clock func() time.Time
}

// Stats counts what Run did.
type Stats struct {
	// Sent is the number of deliveries handed to the sender; Sent = Acked + Failed.
	Sent int
	// Acked is the number of deliveries answered 200, some after resends.
	Acked int
	// Failed is the number of deliveries never answered 200: the resends ran out or the context ended.
	Failed int
	// Retries is the number of resends made.
	Retries int
	// NoAnswer is the number of requests, resends included, that got no answer (timeout or transport error).
	NoAnswer int
	// Status counts the answers of every request, resends included, by HTTP status.
	Status map[int]int
	// Kinds counts the deliveries sent by kind.
	Kinds map[Kind]int
}

func newStats() Stats { return Stats{Status: make(map[int]int), Kinds: make(map[Kind]int)} }

func (st *Stats) add(d Delivery, res Result, err error) {
	st.Sent++
	st.Kinds[d.Kind]++
	if err == nil {
		st.Acked++
	} else {
		st.Failed++
	}
	st.Retries += max(res.Attempts-1, 0)
	for _, s := range res.Statuses {
		if s == 0 {
			st.NoAnswer++
			continue
		}
		st.Status[s]++
	}
}

func (st *Stats) merge(o Stats) {
	st.Sent += o.Sent
	st.Acked += o.Acked
	st.Failed += o.Failed
	st.Retries += o.Retries
	st.NoAnswer += o.NoAnswer
	for k, v := range o.Status {
		st.Status[k] += v
	}
	for k, v := range o.Kinds {
		st.Kinds[k] += v
	}
}

// idleWait is how long Run waits before asking again a generator that had nothing to deliver.
const idleWait = 10 * time.Millisecond

// Run takes deliveries from gen and sends them with s, Concurrency at a time, at most Rate a second, until it made
// Count of them (and, with Drain, flushed gen) or ctx ends. Deliveries that fail are counted, not returned as
// errors. Every goroutine Run starts has stopped when it returns. gen must not be given deliveries by anyone else
// while Run runs.
//
// The error is nil when Run stopped by itself, or when ctx ended and Count is zero. It wraps ctx.Err() when ctx
// ended before Count deliveries were made. For an invalid RunConfig it wraps ErrConfig and names the bad setting.
func Run(ctx context.Context, gen *Generator, s *Sender, cfg RunConfig) (Stats, error) {
	switch {
	case !(cfg.Rate >= 0 && cfg.Rate <= math.MaxInt32):
		return Stats{}, fmt.Errorf("%w: Rate is %v, must be from 0 to %d", ErrConfig, cfg.Rate, math.MaxInt32)
	case cfg.Count < 0:
		return Stats{}, fmt.Errorf("%w: Count is %d, must not be negative", ErrConfig, cfg.Count)
	case cfg.Concurrency < 0:
		return Stats{}, fmt.Errorf("%w: Concurrency is %d, must not be negative", ErrConfig, cfg.Concurrency)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}

	jobs := make(chan Delivery)
	perWorker := make([]Stats, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range perWorker {
		perWorker[i] = newStats()
		wg.Go(func() {
			for d := range jobs {
				res, err := s.Send(ctx, d)
				perWorker[i].add(d, res, err)
			}
		})
	}
	err := produce(ctx, gen, jobs, cfg)
	close(jobs)
	wg.Wait()

	st := newStats()
	for _, w := range perWorker {
		st.merge(w)
	}
	if err != nil && cfg.Count > 0 {
		return st, fmt.Errorf("sim: run stopped after %d of %d deliveries: %w", st.Sent, cfg.Count, err)
	}
	return st, nil
}

// produce hands deliveries to the workers, paced, until Count or ctx ends.
func produce(ctx context.Context, gen *Generator, jobs chan<- Delivery, cfg RunConfig) error {
	var pace *pacer
	if cfg.Rate > 0 {
		pace = newPacer(cfg.Rate)
		defer pace.stop()
	}
	hand := func(d Delivery) error {
		select {
		case jobs <- d:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for made := 0; cfg.Count == 0 || made < cfg.Count; {
		if err := ctx.Err(); err != nil {
			return err
		}
		if pace != nil {
			if err := pace.wait(ctx); err != nil {
				return err
			}
		}
		d, ok := gen.Next(cfg.Clock())
		if !ok {
			// Every channel is cooling down after a destroy: give the token back and let the clock move on.
			if pace != nil {
				pace.refund()
			}
			if err := sleep(ctx, idleWait); err != nil {
				return err
			}
			continue
		}
		if err := hand(d); err != nil {
			return err
		}
		made++
	}
	if cfg.Drain {
		for _, d := range gen.Flush(cfg.Clock()) {
			if err := hand(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// pacer is a token bucket filled by a ticker: rate tokens a second, at most a burst of them.
type pacer struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	ticker *time.Ticker
}

// minTick keeps a high rate from needing a ticker faster than the runtime can keep; tokens come in batches then.
const minTick = 5 * time.Millisecond

func newPacer(rate float64) *pacer {
	every := max(time.Duration(float64(time.Second)/rate), minTick)
	return &pacer{
		rate: rate,
		// Two ticks' worth, so that a late tick costs nothing; at least 2, so that a slow rate never loses a token
		// to rounding.
		burst:  max(2, 2*rate*every.Seconds()),
		tokens: 1,
		last:   time.Now(),
		ticker: time.NewTicker(every),
	}
}

// wait takes a token, waiting for the ticker when there is none.
func (p *pacer) wait(ctx context.Context) error {
	for p.tokens < 1 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.ticker.C:
			now := time.Now()
			p.tokens = min(p.burst, p.tokens+p.rate*now.Sub(p.last).Seconds())
			p.last = now
		}
	}
	p.tokens--
	return nil
}

// refund gives back a token that was not used.
func (p *pacer) refund() { p.tokens = min(p.burst, p.tokens+1) }

func (p *pacer) stop() { p.ticker.Stop() }

// String summarises st on one line, for logs and reports.
func (st Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sent %d, acked %d, failed %d, retries %d, no answer %d", st.Sent, st.Acked, st.Failed, st.Retries, st.NoAnswer)
	for _, code := range slices.Sorted(maps.Keys(st.Status)) {
		fmt.Fprintf(&b, ", %d %s: %d", code, http.StatusText(code), st.Status[code])
	}
	return b.String()
}
