package loadtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	h := &histogram{}
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.03 {
			t.Errorf("q%.2f = %s, want %s within 3 %%", c.q, got, c.want)
		}
	}
	o := &histogram{}
	o.add(5 * time.Second)
	h.merge(o)
	if h.n != 1001 || h.max != 5*time.Second {
		t.Fatalf("merge: n %d max %s", h.n, h.max)
	}
}

func TestNoticeIndex(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		frame string
		want  int
	}{
		{`{"type":"presence","seq":3,"noticeId":"bab-42","source":"ncs"}`, 42},
		{`{"noticeId":"other-42"}`, -1},
		{`{"noticeId":"bab-x"}`, -1},
		{`{"noticeId":"bab-7`, -1},
	} {
		if got := noticeIndex([]byte(c.frame), "bab-"); got != c.want {
			t.Errorf("%s: %d, want %d", c.frame, got, c.want)
		}
	}
}

// TestFleetAgainstBaseline runs a short load against the baseline server: every event reaches every subscriber of
// its channel, and the report adds up.
func TestFleetAgainstBaseline(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(NewBaseline())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := Connect(ctx, Config{Target: TargetBaseline, URL: srv.URL, Channels: 3, Subscribers: 10, Drain: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := f.Run(ctx, 100, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 100 notifications over 3 channels holding 4, 3 and 3 subscribers: 34x4 + 33x3 + 33x3, sent over 99 intervals
	// of 10 ms.
	if r.Sent != 100 || r.Acked != 100 || r.Expected != 334 || r.Delivered != 334 || r.Fraction != 1 || r.P99 <= 0 ||
		r.Elapsed < 990*time.Millisecond || r.LoadCPU <= 0 {
		t.Fatalf("report %+v", r)
	}
}

// hooked serves the baseline with hook in front of its publish: hook sees notification n (from its noticeId) and
// says whether to fan it out and what status to answer.
func hooked(t *testing.T, hook func(n int) (fanout bool, status int)) string {
	return hookedTo(t, func(n int, own string, publish func(channel string)) int {
		fan, status := hook(n)
		if fan {
			publish(own)
		}
		return status
	})
}

// hookedTo is hooked with the fan-out in the hook's hands: it may publish notification n to its own channel, own,
// to another, or more than once, and returns the status to answer.
func hookedTo(t *testing.T, hook func(n int, own string, publish func(channel string)) int) string {
	b := NewBaseline()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/publish" {
			b.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		id := body[bytes.Index(body, []byte(`"noticeId":"`))+len(`"noticeId":"`):]
		n := noticeIndex(body, string(id[:bytes.IndexByte(id, '-')+1]))
		publish := func(channel string) {
			q := r.URL.Query()
			q.Set("channel", channel)
			rr := r.Clone(r.Context())
			rr.URL.RawQuery = q.Encode()
			rr.Body = io.NopCloser(bytes.NewReader(body))
			b.publish(httptest.NewRecorder(), rr)
		}
		w.WriteHeader(hook(n, r.URL.Query().Get("channel"), publish))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func runAgainst(t *testing.T, url string, subscribers int, rate float64, d time.Duration) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := Connect(ctx, Config{Target: TargetBaseline, URL: url, Channels: min(2, subscribers), Subscribers: subscribers,
		Senders: 8, Drain: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := f.Run(ctx, rate, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s pass=%v", r, r.Pass())
	return r
}

// Latency counts from when each notification was due by the fixed rate: a server that stalls 300 ms holds the
// senders back, and the notifications due meanwhile are late by up to that much, though each, once sent, is
// answered at once (timing from the send, "coordinated omission", would hide the stall).
func TestLatencyCountsFromWhenDue(t *testing.T) {
	t.Parallel()
	var (
		once  sync.Once
		start time.Time
	)
	url := hooked(t, func(n int) (bool, int) {
		once.Do(func() { start = time.Now() })
		// The server stalls from 500 to 800 ms into the run (a GC pause, an fsync, a full queue).
		if now := time.Since(start); now > 500*time.Millisecond && now < 800*time.Millisecond {
			time.Sleep(800*time.Millisecond - now)
		}
		return true, http.StatusOK
	})
	r := runAgainst(t, url, 1, 1000, 2*time.Second)
	if r.P99 < 200*time.Millisecond || r.Max < 250*time.Millisecond || r.Pass() {
		t.Fatalf("p99 %s, max %s, pass %v after a 300 ms stall at 1,000/s: want p99 at least 200 ms, max at least 250 ms, no pass",
			r.P99, r.Max, r.Pass())
	}
}

// A run passes only if every notification was acknowledged: one answered 5xx counts against it even if its event was
// delivered, and an acknowledged one that is lost counts against the fraction.
func TestPassNeedsEveryNotificationAcknowledged(t *testing.T) {
	t.Parallel()
	for name, hook := range map[string]func(n int) (bool, int){
		"1 in 10 refused": func(n int) (bool, int) {
			if n%10 == 0 {
				return false, http.StatusServiceUnavailable
			}
			return true, http.StatusOK
		},
		"1 in 20 refused but delivered, 1 in 20 lost": func(n int) (bool, int) {
			switch n % 20 {
			case 0:
				return true, http.StatusInternalServerError
			case 1:
				return false, http.StatusOK
			}
			return true, http.StatusOK
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := runAgainst(t, hooked(t, hook), 4, 200, time.Second)
			if r.Pass() {
				t.Fatalf("passes with %d of %d acknowledged, fraction %.4f", r.Acked, r.Sent, r.Fraction)
			}
			// The deliveries of refused notifications do not make up for acknowledged ones that were lost.
			if lost := strings.Contains(name, "lost"); lost && r.Fraction >= 0.999 || !lost && r.Fraction != 1 {
				t.Fatalf("fraction %.4f (delivered %d of %d)", r.Fraction, r.Delivered, r.Expected)
			}
		})
	}
}

// One lost event does not dilute the run's rates with the drain's idle wait: deliveries per second count the time
// up to the last delivery, and the drain ends a second after deliveries stop.
func TestALostEventDoesNotDiluteTheRate(t *testing.T) {
	t.Parallel()
	r := runAgainst(t, hooked(t, func(n int) (bool, int) { return n != 5, http.StatusOK }), 4, 500, time.Second)
	if r.Delivered != r.Expected-2 || r.DeliveredPerSec < 0.8*float64(r.Delivered) || r.Elapsed > 3*time.Second {
		t.Fatalf("%d of %d delivered in about 1 s of sending: %.0f deliveries/s over %s", r.Delivered, r.Expected, r.DeliveredPerSec, r.Elapsed)
	}
}

// A frame a subscriber already had, or one of an event of another channel, is not a delivery: neither makes up for
// an acknowledged event that was lost.
func TestDuplicatesAndOtherChannelsAreNotDeliveries(t *testing.T) {
	t.Parallel()
	url := hookedTo(t, func(n int, own string, publish func(string)) int {
		switch {
		case n%10 == 1: // lost, though acknowledged
		case n%20 == 0: // delivered twice
			publish(own)
			publish(own)
		case n%20 == 2: // delivered, and to the other channel too
			publish(own)
			publish(map[string]string{"bench-0": "bench-1", "bench-1": "bench-0"}[own])
		default:
			publish(own)
		}
		return http.StatusOK
	})
	r := runAgainst(t, url, 4, 200, time.Second)
	// Per 20 notifications, 2 channels of 2 subscribers: 4 deliveries lost, 2 duplicate frames, 2 of the other channel.
	if r.Pass() || r.Delivered != r.Expected*9/10 || r.Duplicates != r.Expected/20 || r.Foreign != r.Expected/20 {
		t.Fatalf("pass %v: delivered %d of %d, %d duplicates, %d of the other channel", r.Pass(), r.Delivered, r.Expected,
			r.Duplicates, r.Foreign)
	}
}

// A server that answers each webhook slowly does not stretch the run: sending stops at 1.5 x the duration, the
// notifications not sent by then are counted as such, and the run fails on the rate.
func TestSendingIsBoundedInTime(t *testing.T) {
	t.Parallel()
	url := hooked(t, func(int) (bool, int) {
		time.Sleep(2 * time.Second)
		return true, http.StatusOK
	})
	began := time.Now()
	// 100 notifications, 8 in flight, 2 s each: 25 s if every one had to be sent.
	r := runAgainst(t, url, 2, 100, time.Second)
	if took := time.Since(began); took > 8*time.Second || r.Pass() || r.Sent != 8 || r.Unsent != 92 || r.Acked != 8 ||
		r.SentRate > 10 {
		t.Fatalf("took %s: pass %v, sent %d, unsent %d, acked %d, sent %.1f/s", took, r.Pass(), r.Sent, r.Unsent, r.Acked, r.SentRate)
	}
}

// A subscriber whose connection ends (here closed under the fleet; in a search, one the server closed as too slow)
// is reported, so that the fraction delivered of every later run can be read for what it is; Close does not count.
func TestLostSubscribersAreReported(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(NewBaseline())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := Connect(ctx, Config{Target: TargetBaseline, URL: srv.URL, Channels: 2, Subscribers: 4, Drain: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = f.subs[0].conn.CloseNow()
	r, err := f.Run(ctx, 100, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.LostSubscribers != 1 || r.Pass() || !strings.Contains(r.String(), "1 subscribers' connections ended") {
		t.Fatalf("one connection closed: %s", r)
	}
	f.Close()
	if n := f.lost.Load(); n != 1 {
		t.Fatalf("%d lost after Close, want the 1 before it", n)
	}
}
