package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// BenchmarkSubscribeStorm measures subscribes to a channel of 100,000 audience members, each answered with its
// snapshot, by 8 clients at once; and what the storm does to everyone else: the delivery latency (webhook sent to
// frame received) of another channel's events, one every 5 ms, while it lasts. Run:
//
//	go test -run '^$' -bench BenchmarkSubscribeStorm -benchtime 200x ./gateway/
func BenchmarkSubscribeStorm(b *testing.B) {
	const members, clients = 100_000, 8
	_, base, _ := seeded(b, members, 1)
	tok := token(b, "*")

	watcher := mustDial(b, base, tok)
	watcher.subscribe("small")
	watcher.expect("subscribed", "small")
	watcher.expect("snapshot", "small")
	storm := make([]*wsClient, clients)
	for i := range storm {
		storm[i] = mustDial(b, base, tok)
	}

	// Events on "small", each a new member: sent at a steady pace, timed when the watcher gets them.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	const maxEvents = 100_000
	sentAt := make([]atomic.Int64, maxEvents+1)
	var (
		mu      sync.Mutex
		latency []time.Duration
		during  atomic.Bool
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		client := &http.Client{Timeout: 10 * time.Second}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for uid := 1; uid <= maxEvents; uid++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			body := audienceJoin(fmt.Sprint("small-", uid), "small", uint32(uid), int64(uid))
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/ncs", bytes.NewReader(body))
			for k, v := range signed(testSecret, body) {
				req.Header[k] = v
			}
			sentAt[uid].Store(time.Now().UnixNano())
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			f, err := watcher.read(time.Second)
			if err != nil || f.Type != "presence" || f.UID == 0 || int(f.UID) > maxEvents {
				continue
			}
			if during.Load() {
				mu.Lock()
				latency = append(latency, time.Duration(time.Now().UnixNano()-sentAt[f.UID].Load()))
				mu.Unlock()
			}
		}
	})
	time.Sleep(200 * time.Millisecond) // the small channel is flowing

	var next atomic.Int64
	var failed atomic.Value
	during.Store(true)
	b.ResetTimer()
	var sw sync.WaitGroup
	for _, c := range storm {
		sw.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := subscribeForSnapshot(c, "chan-0", members); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	sw.Wait()
	b.StopTimer()
	during.Store(false)
	stop()
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	if len(latency) < 3 { // the storm saturates the machine, and the sender waits for each answer
		b.Fatalf("only %d events of the small channel during the storm: run it longer (-benchtime)", len(latency))
	}
	b.ReportMetric(float64(len(latency)), "other-events")
	slices.Sort(latency)
	q := func(p float64) float64 { return float64(latency[int(p*float64(len(latency)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "other-p50-ms")
	b.ReportMetric(q(0.99), "other-p99-ms")
	b.ReportMetric(q(1), "other-max-ms")
}

// subscribeForSnapshot subscribes c to channel and reads up to its snapshot, which must hold about members members.
func subscribeForSnapshot(c *wsClient, channel string, members int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","channel":"`+channel+`"}`)); err != nil {
		return err
	}
	for {
		_, data, err := c.conn.Read(ctx)
		if err != nil {
			return err
		}
		if bytes.HasPrefix(data, []byte(`{"type":"snapshot"`)) {
			if len(data) < members*20 {
				return fmt.Errorf("snapshot of %d bytes: not %d members", len(data), members)
			}
			return nil
		}
	}
}

// BenchmarkResumeStorm measures a crowd of clients that lose their connections at once (an instance restarts, a
// network blip) and come back together, each resuming its channel from the last event it had, while every channel
// moved on by one event meanwhile: the time from the crowd dialling until the last client has its missed event (per
// storm), each client's own time (p50, p99), and how many were answered reset (and a snapshot) instead of a replay.
// memory: the view's memory of the latest events answers them; stored: it keeps only 1 event, so each resume reads
// USHER_PRESENCE. Clients and server share the machine. Run:
//
//	go test -run '^$' -bench BenchmarkResumeStorm -benchtime 3x ./gateway/
func BenchmarkResumeStorm(b *testing.B) {
	b.Run("memory", func(b *testing.B) { resumeStorm(b, 0) })
	b.Run("stored", func(b *testing.B) { resumeStorm(b, 1) })
}

func resumeStorm(b *testing.B, recent int) {
	const clients, channels = 5000, 100
	cfg := testConfig(b, b.TempDir())
	cfg.RecentEvents = recent
	cfg.MaxPerSubject, cfg.UpgradeRate, cfg.UpgradeBurst = clients, 1e6, clients // the crowd dials from one address
	_, base := startGateway(b, cfg)
	tok := token(b, "*")
	http1 := &http.Client{Timeout: 10 * time.Second}
	post := func(round int) {
		for i := range channels {
			ch := fmt.Sprint("storm-", i)
			if !sendSigned(http1, base+"/v1/ncs", audienceJoin(fmt.Sprintf("storm-%d-%d", round, i), ch, uint32(round+1), int64(round+1))) {
				b.Fatalf("notification for %s refused", ch)
			}
		}
	}
	post(0)
	// last[i] is the seq of the last event client i has of its channel.
	last := make([]uint64, clients)
	conns := make([]*wsClient, clients)
	for i := range clients {
		c := mustDial(b, base, tok)
		ch := fmt.Sprint("storm-", i%channels)
		c.subscribe(ch)
		c.expect("subscribed", ch)
		f := c.expect("snapshot", ch)
		last[i], conns[i] = f.Snapshot.Seq, c
	}

	var (
		lat    []time.Duration
		resets atomic.Int64
	)
	b.ResetTimer()
	for round := 1; round <= b.N; round++ {
		b.StopTimer()
		for _, c := range conns {
			_ = c.conn.CloseNow()
		}
		post(round)
		b.StartTimer()
		start := time.Now()
		took := make([]time.Duration, clients)
		errs := make(chan error, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				c, _, err := dial(b, base, tok, false)
				if err != nil {
					errs <- fmt.Errorf("client %d: dial: %w", i, err)
					return
				}
				conns[i] = c
				ch := fmt.Sprint("storm-", i%channels)
				if err := c.conn.Write(context.Background(), websocket.MessageText,
					fmt.Appendf(nil, `{"op":"subscribe","channel":%q,"since":%d}`, ch, last[i])); err != nil {
					errs <- fmt.Errorf("client %d: subscribe: %w", i, err)
					return
				}
				for {
					f, err := c.read(30 * time.Second)
					if err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
						return
					}
					switch {
					case f.Type == "reset":
						resets.Add(1)
					case f.Type == "snapshot" && f.Snapshot.Seq > last[i]:
						last[i] = f.Snapshot.Seq
					case f.Type == "presence" && f.Seq > last[i]:
						last[i] = f.Seq
					case f.Type == "error":
						errs <- fmt.Errorf("client %d: %s", i, f.Raw)
						return
					default:
						continue
					}
					if f.Type != "reset" && f.UID == uint32(round+1) || f.Type == "snapshot" {
						took[i] = time.Since(start)
						return
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		lat = append(lat, took...)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "client-p50-ms")
	b.ReportMetric(q(0.99), "client-p99-ms")
	b.ReportMetric(q(1), "last-client-ms")
	b.ReportMetric(float64(resets.Load())/float64(b.N), "resets/storm")
}
