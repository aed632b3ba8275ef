package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/ncs"
)

// Targets.
const (
	TargetUsher    = "usher"
	TargetBaseline = "baseline"
)

// Config is one load run.
type Config struct {
	// Target is TargetUsher (POST /v1/ncs, GET /v1/ws) or TargetBaseline (POST /publish, GET /ws).
	Target string
	// URL is the server's base URL, e.g. http://127.0.0.1:8080.
	URL string
	// NCSSecret signs notifications and JWTSecret signs the subscribers' token (Usher only).
	NCSSecret, JWTSecret string
	// Channels and Subscribers: Subscribers WebSocket connections, spread round-robin over Channels channels.
	Channels, Subscribers int
	// Rate is notifications per second; Duration how long they are sent. Each notification makes one event.
	Rate     float64
	Duration time.Duration
	// Drain bounds the wait for the last events after sending stops (default 10 s).
	Drain time.Duration
	// Senders is how many webhook requests are in flight at most (default 32).
	Senders int
	// ServerPID, when known, lets the run read the server's CPU time and memory from /proc.
	ServerPID int
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Report is what a run measured.
type Report struct {
	Target                string
	Channels, Subscribers int
	Rate                  float64 // asked
	SentRate              float64 // achieved
	AckedPerSec           float64 // notifications answered 200, per second of sending
	Sent, Acked           int
	Unsent                int   // not sent by 1.5 x the duration, when sending stops (such a run is below 0.97 x the rate)
	LostSubscribers       int64 // connections of the fleet that ended (closed by the server) by the end of the run
	Expected, Delivered   int64 // events of the acknowledged notifications: due, and delivered (each once per subscriber)
	// Duplicates are frames of an event a subscriber had already received, and Foreign frames of events of a channel
	// the subscriber is not on: neither counts as a delivery, nor is it timed.
	Duplicates, Foreign int64
	Fraction            float64 // Delivered / Expected
	DeliveredPerSec     float64 // over the time from the first send to the last delivery
	// Latency of each delivery from the moment its notification was due by the fixed rate (not from when it was
	// actually sent: a server that answers slowly holds the senders back, and timing from the send would hide that
	// wait, "coordinated omission").
	P50, P90, P99, Max time.Duration
	// SendP99 is the p99 from the moment each request was actually sent: the server's own part.
	SendP99      time.Duration
	Elapsed      time.Duration // sending and the drain: the window of the CPU figures
	ServerCPU    time.Duration
	CPUPer1000   time.Duration // server CPU time per 1,000 deliveries
	ServerRSSKiB int64
	// LoadCPU is this process's own CPU time over the run (senders and subscribers): the load generator shares the
	// machine with the server, and the two together tell whether the machine was saturated.
	LoadCPU time.Duration
}

// cores is cpu as a number of cores busy over d.
func cores(cpu, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return cpu.Seconds() / d.Seconds()
}

func (r Report) String() string {
	var wrong string
	if r.Duplicates > 0 || r.Foreign > 0 {
		wrong = fmt.Sprintf(" (not counted: %d duplicate frames, %d frames of other channels)", r.Duplicates, r.Foreign)
	}
	if r.LostSubscribers > 0 {
		wrong += fmt.Sprintf(", %d subscribers' connections ended (closed by the server?)", r.LostSubscribers)
	}
	if r.Unsent > 0 {
		wrong += fmt.Sprintf(", %d not sent: sending stops at 1.5 x the duration", r.Unsent)
	}
	return fmt.Sprintf("%s: %d ch x %d subs, rate %.0f/s (sent %.0f/s, acked %.0f/s), acked %d/%d, delivered %d/%d (%.4f%%)%s, %.0f deliveries/s, "+
		"latency p50 %s p90 %s p99 %s max %s (p99 from the actual send %s), server CPU %s = %.2f cores (%s per 1000 deliveries), server RSS %d KiB, load generator %.2f cores",
		r.Target, r.Channels, r.Subscribers, r.Rate, r.SentRate, r.AckedPerSec, r.Acked, r.Sent, r.Delivered, r.Expected, 100*r.Fraction, wrong,
		r.DeliveredPerSec, r.P50.Round(100*time.Microsecond), r.P90.Round(100*time.Microsecond), r.P99.Round(100*time.Microsecond),
		r.Max.Round(time.Millisecond), r.SendP99.Round(100*time.Microsecond), r.ServerCPU.Round(time.Millisecond), cores(r.ServerCPU, r.Elapsed),
		r.CPUPer1000.Round(10*time.Microsecond), r.ServerRSSKiB, cores(r.LoadCPU, r.Elapsed))
}

// Pass reports whether the run meets the delivery goal at the rate asked: every notification was answered 200, they
// went out at (within 3 % of) that rate, at least 99.9 % of the events were delivered, and p99 (from when each was
// due) was under 250 ms. A server that cannot take the rate (webhooks answered slower than asked) does not pass it.
func (r Report) Pass() bool {
	return r.Acked == r.Sent && r.SentRate >= 0.97*r.Rate && r.Fraction >= 0.999 && r.P99 < 250*time.Millisecond
}

// Fleet is a set of subscriber connections held open across runs.
type Fleet struct {
	cfg   Config
	subs  []*subscriber
	perCh []int // subscribers per channel
	run   atomic.Pointer[runState]
	wg    sync.WaitGroup
	// closing is set by Close; lost counts the subscribers whose connection ended before it (the server closed
	// them, as too slow, say): each later run's fraction delivered falls, and the report says why.
	closing atomic.Bool
	lost    atomic.Int64
	shards  [64]shard // the readers' counts and latencies, subscriber i in shard i%64
}

type subscriber struct {
	conn    *websocket.Conn
	idx     int // in Fleet.subs
	channel int
	shard   *shard
}

// shard is what a share of the readers measured in the current run.
type shard struct {
	mu          sync.Mutex
	due, sent   histogram // latency from when each notification was due, and from when it was sent
	lastFrameNs int64
}

// runState is what readers need to time the frames of the current run.
type runState struct {
	prefix   string
	start    atomic.Int64 // unix ns when notification 0 was due; notification i is due interval later each
	interval int64
	sentAt   []atomic.Int64
	acked    []atomic.Bool  // notification i was answered 200
	got      []atomic.Int32 // deliveries of notification i, each subscriber counted once
	// seen[s] has bit k set once subscriber s received notification k*channels+(its channel); only s's reader
	// touches it.
	seen         [][]uint64
	dup, foreign atomic.Int64
}

// deliveredAcked counts the deliveries of acknowledged notifications: those of a notification answered 5xx (stored
// all the same, say, after a PubAck that came too late) must not make up for acknowledged ones that were lost.
func (rs *runState) deliveredAcked() int64 {
	var n int64
	for i := range rs.got {
		if rs.acked[i].Load() {
			n += int64(rs.got[i].Load())
		}
	}
	return n
}

func (c Config) channelName(i int) string { return "bench-" + strconv.Itoa(i) }

// Connect opens cfg.Subscribers connections, each subscribed to its channel, dialling 64 at a time. Close them
// with Close.
func Connect(ctx context.Context, cfg Config) (*Fleet, error) {
	if cfg.Channels < 1 {
		cfg.Channels = 1
	}
	f := &Fleet{cfg: cfg, perCh: make([]int, cfg.Channels)}
	// Each subscriber has a token of its own subject, as real clients do (Usher limits connections per subject).
	token := func(i int) (string, error) {
		if cfg.Target != TargetUsher {
			return "", nil
		}
		return auth.Issue(cfg.JWTSecret, []string{"bench-*"}, 24*time.Hour, "bench-"+strconv.Itoa(i))
	}
	f.subs = make([]*subscriber, cfg.Subscribers)
	sem := make(chan struct{}, 64)
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	for i := range f.subs {
		if first.Load() != nil || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			tok, err := token(i)
			var s *subscriber
			if err == nil {
				s, err = f.dial(ctx, i%cfg.Channels, tok)
			}
			if err != nil {
				first.CompareAndSwap(nil, &err)
				return
			}
			f.subs[i] = s
		})
	}
	wg.Wait()
	if e := first.Load(); e != nil || ctx.Err() != nil {
		f.Close()
		return nil, errors.Join(ctx.Err(), deref(e))
	}
	for i, s := range f.subs {
		f.perCh[s.channel]++
		s.idx, s.shard = i, &f.shards[i%len(f.shards)]
		f.wg.Go(func() { f.read(s) })
	}
	return f, nil
}

func deref(e *error) error {
	if e == nil {
		return nil
	}
	return *e
}

func (f *Fleet) dial(ctx context.Context, ch int, tok string) (*subscriber, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	base := "ws" + strings.TrimPrefix(f.cfg.URL, "http")
	name := f.cfg.channelName(ch)
	var (
		c   *websocket.Conn
		err error
	)
	if f.cfg.Target == TargetUsher {
		c, _, err = websocket.Dial(dctx, base+"/v1/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err == nil {
			b, _ := json.Marshal(map[string]string{"op": "subscribe", "channel": name})
			err = c.Write(dctx, websocket.MessageText, b)
		}
	} else {
		c, _, err = websocket.Dial(dctx, base+"/ws?channel="+url.QueryEscape(name), nil)
	}
	if err != nil {
		return nil, fmt.Errorf("dial subscriber: %w", err)
	}
	c.SetReadLimit(64 << 20)
	// Wait until attached: Usher sends subscribed then a snapshot, the baseline a subscribed frame.
	want := "snapshot"
	if f.cfg.Target == TargetBaseline {
		want = "subscribed"
	}
	for {
		_, b, err := c.Read(dctx)
		if err != nil {
			_ = c.CloseNow()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		if bytes.Contains(b, []byte(`"type":"`+want+`"`)) {
			break
		}
	}
	return &subscriber{conn: c, channel: ch}, nil
}

// read times every frame of the current run.
func (f *Fleet) read(s *subscriber) {
	for {
		_, b, err := s.conn.Read(context.Background())
		if err != nil {
			if !f.closing.Load() {
				f.lost.Add(1)
			}
			return
		}
		now := time.Now().UnixNano()
		rs := f.run.Load()
		if rs == nil {
			continue
		}
		i := noticeIndex(b, rs.prefix)
		if i < 0 || i >= len(rs.sentAt) {
			continue
		}
		// Notification i is for channel i%channels: a frame of it on another channel, or one this subscriber had
		// already, is not a delivery.
		if i%len(f.perCh) != s.channel {
			rs.foreign.Add(1)
			continue
		}
		k := i / len(f.perCh)
		seen, bit := rs.seen[s.idx], uint64(1)<<(k%64)
		if seen[k/64]&bit != 0 {
			rs.dup.Add(1)
			continue
		}
		seen[k/64] |= bit
		rs.got[i].Add(1)
		due, sent := rs.start.Load()+int64(i)*rs.interval, rs.sentAt[i].Load()
		sh := s.shard
		sh.mu.Lock()
		sh.due.add(time.Duration(now - due))
		if sent > 0 {
			sh.sent.add(time.Duration(now - sent))
		}
		sh.lastFrameNs = max(sh.lastFrameNs, now)
		sh.mu.Unlock()
	}
}

// noticeIndex finds `"noticeId":"<prefix><n>"` in a frame and returns n, or -1.
func noticeIndex(b []byte, prefix string) int {
	key := []byte(`"noticeId":"` + prefix)
	at := bytes.Index(b, key)
	if at < 0 {
		return -1
	}
	rest := b[at+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return -1
	}
	n, err := strconv.Atoi(string(rest[:end]))
	if err != nil {
		return -1
	}
	return n
}

// Close closes every connection and waits for the readers.
func (f *Fleet) Close() {
	f.closing.Store(true)
	for _, s := range f.subs {
		if s != nil {
			_ = s.conn.CloseNow()
		}
	}
	f.wg.Wait()
}

// Run sends cfg.Rate notifications a second for cfg.Duration, spread over the channels, and measures their
// delivery to the fleet. Every loop is bounded by the notification count and by ctx.
func (f *Fleet) Run(ctx context.Context, rate float64, duration time.Duration) (Report, error) {
	cfg := f.cfg
	total := int(rate * duration.Seconds())
	if total < 1 {
		return Report{}, errors.New("rate x duration is less than one notification")
	}
	senders := cfg.Senders
	if senders <= 0 {
		senders = 32
	}
	drain := cfg.Drain
	if drain <= 0 {
		drain = 10 * time.Second
	}
	interval := time.Duration(float64(time.Second) / rate)
	rs := &runState{prefix: fmt.Sprintf("b%x-", rand.Uint32()), interval: int64(interval), sentAt: make([]atomic.Int64, total),
		acked: make([]atomic.Bool, total), got: make([]atomic.Int32, total), seen: make([][]uint64, len(f.subs))}
	words := (total/len(f.perCh))/64 + 1 // bits for the notifications of one channel
	for i := range rs.seen {
		rs.seen[i] = make([]uint64, words)
	}
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		sh.due, sh.sent, sh.lastFrameNs = histogram{}, histogram{}, 0
		sh.mu.Unlock()
	}
	rs.start.Store(time.Now().UnixNano()) // again below, when the first is due
	f.run.Store(rs)
	cpu0, _, _ := procStats(cfg.ServerPID)
	load0, _, _ := procStats(os.Getpid())

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	defer client.CloseIdleConnections()
	var (
		acked    atomic.Int64
		expected atomic.Int64
		sent     atomic.Int64
		wg       sync.WaitGroup
	)
	// Sending stops at 1.5 x the duration, all sent or not: a server that answers slowly (each request may take
	// the client's 10 s timeout) would otherwise stretch the run to notifications / senders x 10 s. A run cut there
	// sent at most 1/1.5 of the rate, and fails; one that was not cut is measured as if there were no cut.
	start := time.Now()
	cutAt := duration + duration/2
	cut, cancelCut := context.WithDeadline(ctx, start.Add(cutAt))
	defer cancelCut()
	jobs := make(chan int, senders)
	for range senders {
		wg.Go(func() {
			for i := range jobs {
				if cut.Err() != nil {
					continue // due, not sent
				}
				sent.Add(1)
				ch := i % cfg.Channels
				if ok := f.send(ctx, client, rs, i, ch); ok {
					rs.acked[i].Store(true)
					acked.Add(1)
					expected.Add(int64(f.perCh[ch]))
				}
			}
		})
	}
	rs.start.Store(start.UnixNano())
	next := start
pace:
	for i := 0; i < total; i++ {
		if d := time.Until(next); d > 0 {
			select {
			case <-cut.Done():
				break pace
			case <-time.After(d):
			}
		}
		select {
		case jobs <- i:
		case <-cut.Done():
			break pace
		}
		next = next.Add(interval)
	}
	close(jobs)
	wg.Wait()
	sendTime := time.Since(start)

	// Wait for the last events: until all came, or none for a second, bounded by the drain time. (Waiting out the
	// whole drain for one lost event would dilute the CPU figures with idle time.)
	deadline := time.Now().Add(drain)
	for seen, quietSince := int64(-1), time.Now(); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		n := rs.deliveredAcked()
		if n >= expected.Load() || n == seen && time.Since(quietSince) > time.Second {
			break
		}
		if n != seen {
			seen, quietSince = n, time.Now()
		}
	}
	elapsed := time.Since(start)
	cpu1, rss, _ := procStats(cfg.ServerPID)
	load1, _, _ := procStats(os.Getpid())
	f.run.Store(nil)

	due, fromSend := &histogram{}, &histogram{}
	var last int64
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		due.merge(&sh.due)
		fromSend.merge(&sh.sent)
		last = max(last, sh.lastFrameNs)
		sh.mu.Unlock()
	}
	delivered := rs.deliveredAcked()
	// The rate sent: notifications sent over the time they took, up to the last one's request and its interval
	// included; when sending was cut short, up to the cut.
	nSent := int(sent.Load())
	window := cutAt
	if nSent == total {
		var lastSent int64
		for i := range rs.sentAt {
			lastSent = max(lastSent, rs.sentAt[i].Load())
		}
		window = time.Duration(lastSent-start.UnixNano()) + interval
	}
	sentRate := float64(nSent) / window.Seconds()
	r := Report{Target: cfg.Target, Channels: cfg.Channels, Subscribers: len(f.subs), Rate: rate,
		SentRate: sentRate, Sent: nSent, Unsent: total - nSent, Acked: int(acked.Load()), Expected: expected.Load(), Delivered: delivered,
		Duplicates: rs.dup.Load(), Foreign: rs.foreign.Load(), LostSubscribers: f.lost.Load(),
		P50: due.quantile(0.50), P90: due.quantile(0.90), P99: due.quantile(0.99), Max: due.max,
		SendP99: fromSend.quantile(0.99), ServerRSSKiB: rss, Elapsed: elapsed, LoadCPU: load1 - load0}
	if r.Expected > 0 {
		r.Fraction = float64(r.Delivered) / float64(r.Expected)
	}
	if last > start.UnixNano() {
		r.DeliveredPerSec = float64(r.Delivered) / time.Duration(last-start.UnixNano()).Seconds()
	}
	r.AckedPerSec = float64(r.Acked) / sendTime.Seconds()
	if cfg.ServerPID > 0 {
		r.ServerCPU = cpu1 - cpu0
		if r.Delivered > 0 {
			r.CPUPer1000 = r.ServerCPU * 1000 / time.Duration(r.Delivered)
		}
	}
	return r, ctx.Err()
}

// send posts notification i for channel ch: a join of a new uid, so that every notification makes one event.
func (f *Fleet) send(ctx context.Context, client *http.Client, rs *runState, i, ch int) bool {
	cfg := f.cfg
	name := cfg.channelName(ch)
	now := time.Now()
	body, _ := json.Marshal(ncs.Notification{
		NoticeID: rs.prefix + strconv.Itoa(i), ProductID: ncs.ProductRTC, EventType: ncs.AudienceJoin,
		NotifyMs: now.UnixMilli(), Sid: "bench",
		Payload: mustPayload(name, uint32(i+1), now),
	})
	var req *http.Request
	if cfg.Target == TargetUsher {
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL+"/v1/ncs", bytes.NewReader(body))
		ncs.Sign(req.Header, cfg.NCSSecret, body)
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL+"/publish?channel="+url.QueryEscape(name), bytes.NewReader(body))
	}
	req.Header.Set("Content-Type", "application/json")
	rs.sentAt[i].Store(time.Now().UnixNano())
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func mustPayload(channel string, uid uint32, now time.Time) json.RawMessage {
	b, _ := json.Marshal(ncs.ChannelEvent{ChannelName: channel, UID: uid, ClientSeq: now.UnixMilli(), Ts: now.Unix(), Account: "bench"})
	return b
}

// IdleKiB holds the fleet and reports the server's resident memory per connection: (RSS with the fleet - before)
// / connections. before is the server's RSS before the fleet connected. The RSS is as the server has it, garbage
// included (no GC is forced in it), for either server alike.
func (f *Fleet) IdleKiB(before int64) (float64, int64) {
	_, rss, _ := procStats(f.cfg.ServerPID)
	return float64(rss-before) / float64(len(f.subs)), rss
}

// ServerRSS reads the server's resident memory in KiB.
func ServerRSS(pid int) int64 {
	_, rss, _ := procStats(pid)
	return rss
}
