package loadtest

import (
	"context"
	"net/http/httptest"
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
