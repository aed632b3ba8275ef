package sim

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func sum(m map[Kind]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestRunCount(t *testing.T) {
	rc, srv := newReceiver(t, nil)
	g := newGen(t, Config{Seed: 10})
	s := &Sender{URL: srv.URL, Secret: testSecret}
	st, err := Run(t.Context(), g, s, RunConfig{Count: 300, Concurrency: 8})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st.Sent != 300 || st.Acked != 300 || st.Failed != 0 || st.Retries != 0 || st.Status[http.StatusOK] != 300 || sum(st.Kinds) != 300 {
		t.Errorf("Run: %v, kinds %v", st, st.Kinds)
	}
	if n := len(rc.received()); n != 300 {
		t.Errorf("receiver got %d notifications, want 300", n)
	}
}

func TestRunDrain(t *testing.T) {
	rc, srv := newReceiver(t, nil)
	g := newGen(t, Config{Seed: 11, Faults: &Faults{Duplicate: 0.1, Resend: 0.1, ResendNewID: 0.1, Reorder: 0.3}})
	s := &Sender{URL: srv.URL, Secret: testSecret}
	st, err := Run(t.Context(), g, s, RunConfig{Count: 500, Concurrency: 4, Drain: true})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if g.Pending() != 0 {
		t.Errorf("Pending() = %d after a drained run", g.Pending())
	}
	if st.Sent < 500 || st.Acked != st.Sent || len(rc.received()) != st.Sent {
		t.Errorf("Run: %v; receiver got %d", st, len(rc.received()))
	}
	if firstsSent := st.Kinds[Original] + st.Kinds[Delayed]; firstsSent != int(g.seq) {
		t.Errorf("%d first deliveries sent, %d originals generated", firstsSent, g.seq)
	}
}

func TestRunRetries(t *testing.T) {
	// Every third request is answered 500; the resend is answered 200.
	_, srv := newReceiver(t, func(i int, w http.ResponseWriter, r *http.Request) {
		if i%3 == 0 {
			http.Error(w, "busy", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, `{}`)
	})
	g := newGen(t, Config{Seed: 12})
	s := &Sender{URL: srv.URL, Secret: testSecret, Backoff: time.Millisecond}
	st, err := Run(t.Context(), g, s, RunConfig{Count: 100})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st.Sent != 100 || st.Acked != 100 || st.Retries != 50 || st.Status[http.StatusInternalServerError] != 50 || st.Status[http.StatusOK] != 100 {
		t.Errorf("Run: %v", st)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	for _, tc := range []struct {
		name    string
		count   int
		wantErr bool
	}{{"no count", 0, false}, {"count not reached", 1_000_000, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			_, srv := newReceiver(t, func(i int, w http.ResponseWriter, r *http.Request) {
				if i == 99 {
					cancel()
				}
				_, _ = io.WriteString(w, `{}`)
			})
			g := newGen(t, Config{Seed: 13})
			s := &Sender{URL: srv.URL, Secret: testSecret}
			st, err := Run(ctx, g, s, RunConfig{Count: tc.count, Concurrency: 4})
			if tc.wantErr != errors.Is(err, context.Canceled) || !tc.wantErr && err != nil {
				t.Errorf("Run error %v, want context.Canceled: %v", err, tc.wantErr)
			}
			if st.Sent < 100 || st.Sent > 200 || st.Acked+st.Failed != st.Sent {
				t.Errorf("Run: %v", st)
			}
		})
	}
}

func TestRunConfigErrors(t *testing.T) {
	g := newGen(t, Config{})
	for _, tc := range []struct {
		cfg  RunConfig
		want string
	}{
		{RunConfig{Rate: -1}, "Rate"},
		{RunConfig{Rate: 1e12}, "Rate"},
		{RunConfig{Count: -1}, "Count"},
		{RunConfig{Concurrency: -1}, "Concurrency"},
	} {
		if _, err := Run(t.Context(), g, &Sender{}, tc.cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v): %v, want an ErrConfig naming %s", tc.cfg, err, tc.want)
		}
	}
	if g.Pending() != 0 || g.seq != 0 {
		t.Error("an invalid Run used the generator")
	}
}

// handlerTransport serves requests in memory, so that a Run can live in a synctest bubble.
type handlerTransport struct{ h http.Handler }

func (ht handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	ht.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func TestRunPacedInBubble(t *testing.T) {
	// In a synctest bubble time is fake, so a paced run has an exact count; and the bubble fails the test if a
	// goroutine Run started is still there when the test function returns.
	synctest.Test(t, func(t *testing.T) {
		rc := &receiver{t: t}
		g := newGen(t, Config{Seed: 14})
		s := &Sender{URL: "http://usher.test/v1/ncs", Secret: testSecret,
			Client: &http.Client{Transport: handlerTransport{rc}, Timeout: 10 * time.Second}}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		st, err := Run(ctx, g, s, RunConfig{Rate: 20, Concurrency: 3})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if st.Sent < 195 || st.Sent > 205 || st.Acked != st.Sent {
			t.Errorf("20 a second for 10 s: %v", st)
		}

		st, err = Run(t.Context(), g, s, RunConfig{Rate: 5000, Count: 1000, Concurrency: 16})
		if err != nil || st.Sent != 1000 || st.Acked != 1000 {
			t.Errorf("Run at 5000 a second: %v, %v", st, err)
		}
	})
}
