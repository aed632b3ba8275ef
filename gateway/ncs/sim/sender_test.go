package sim

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
)

const testSecret = "s3cret"

// receiver is a test NCS receiver: it verifies and decodes every request, records it, and answers with what
// answer returns for the request's number (from 0).
type receiver struct {
	t      testing.TB
	answer func(n int, w http.ResponseWriter, r *http.Request)

	mu  sync.Mutex
	got []*ncs.Decoded
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		rc.t.Errorf("reading body: %v", err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		rc.t.Errorf("Content-Type %q", ct)
	}
	if r.Header.Get(ncs.HeaderSignature) == "" || r.Header.Get(ncs.HeaderSignatureV2) == "" {
		rc.t.Errorf("signature headers missing: %v", r.Header)
	}
	// Verify checks V2 when present; check SHA-1 alone too.
	v := ncs.NewVerifier(testSecret)
	sha1Only := http.Header{ncs.HeaderSignature: r.Header.Values(ncs.HeaderSignature)}
	if err := v.Verify(r.Header, body); err != nil {
		rc.t.Errorf("Verify: %v", err)
	}
	if err := v.Verify(sha1Only, body); err != nil {
		rc.t.Errorf("Verify with Agora-Signature only: %v", err)
	}
	d, err := ncs.Decode(body)
	if err != nil {
		rc.t.Errorf("Decode: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	n := len(rc.got)
	rc.got = append(rc.got, d)
	rc.mu.Unlock()
	if rc.answer != nil {
		rc.answer(n, w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{}`)
}

func (rc *receiver) received() []*ncs.Decoded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*ncs.Decoded(nil), rc.got...)
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) (*receiver, *httptest.Server) {
	rc := &receiver{t: t, answer: answer}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

// oneDelivery returns a first delivery from a fresh generator.
func oneDelivery(t *testing.T) Delivery {
	g := newGen(t, Config{Seed: 9, Faults: &Faults{}})
	d, ok := g.Next(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	if !ok {
		t.Fatal("no delivery")
	}
	return d
}

func TestSendSigned(t *testing.T) {
	rc, srv := newReceiver(t, nil)
	s := &Sender{URL: srv.URL, Secret: testSecret}
	d := oneDelivery(t)
	res, err := s.Send(t.Context(), d)
	if err != nil || res.Status != http.StatusOK || res.Attempts != 1 {
		t.Fatalf("Send: %+v, %v", res, err)
	}
	got := rc.received()
	if len(got) != 1 || got[0].NoticeID != d.Notification.NoticeID || got[0].NotifyMs != d.Notification.NotifyMs {
		t.Errorf("received %+v, sent %+v", got, d.Notification)
	}
}

// statusThen answers status to the first n requests, then 200.
func statusThen(status, n int) func(int, http.ResponseWriter, *http.Request) {
	return func(i int, w http.ResponseWriter, r *http.Request) {
		if i < n {
			http.Error(w, `{"error":"busy"}`, status)
			return
		}
		_, _ = io.WriteString(w, `{}`)
	}
}

func TestSendRetries(t *testing.T) {
	// A clock that stands still: resends must carry a newer notifyMs all the same.
	stopped := func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) }
	for _, tc := range []struct {
		name     string
		answer   func(int, http.ResponseWriter, *http.Request)
		client   *http.Client
		resends  int
		attempts int
		statuses []int
		wantErr  error
	}{
		{name: "500 twice", answer: statusThen(http.StatusInternalServerError, 2), attempts: 3,
			statuses: []int{500, 500, 200}},
		{name: "503 thrice", answer: statusThen(http.StatusServiceUnavailable, 3), attempts: 4,
			statuses: []int{503, 503, 503, 200}},
		{name: "gives up after 3 resends", answer: statusThen(http.StatusInternalServerError, 100), attempts: 4,
			statuses: []int{500, 500, 500, 500}, wantErr: ErrNotAcked},
		{name: "gives up after 1 resend", answer: statusThen(http.StatusBadGateway, 100), resends: 1, attempts: 2,
			statuses: []int{502, 502}, wantErr: ErrNotAcked},
		{name: "no resends", answer: statusThen(http.StatusInternalServerError, 100), resends: -1, attempts: 1,
			statuses: []int{500}, wantErr: ErrNotAcked},
		{name: "slow answer", answer: func(i int, w http.ResponseWriter, r *http.Request) {
			if i == 0 {
				<-r.Context().Done() // longer than the client waits
				return
			}
			_, _ = io.WriteString(w, `{}`)
		}, client: &http.Client{Timeout: 200 * time.Millisecond}, attempts: 2, statuses: []int{0, 200}},
		{name: "always slow", answer: func(i int, w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, client: &http.Client{Timeout: 300 * time.Millisecond}, resends: 2, attempts: 3, statuses: []int{0, 0, 0},
			wantErr: ErrNotAcked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, srv := newReceiver(t, tc.answer)
			s := &Sender{URL: srv.URL, Secret: testSecret, Client: tc.client, Resends: tc.resends,
				Backoff: time.Millisecond, Now: stopped}
			d := oneDelivery(t)
			res, err := s.Send(t.Context(), d)
			if !errors.Is(err, tc.wantErr) || tc.wantErr == nil && err != nil {
				t.Errorf("Send error %v, want %v", err, tc.wantErr)
			}
			if res.Attempts != tc.attempts || len(res.Statuses) != tc.attempts {
				t.Errorf("Send: %+v, want %d attempts", res, tc.attempts)
			}
			for i, s := range tc.statuses {
				if i < len(res.Statuses) && res.Statuses[i] != s {
					t.Errorf("Statuses %v, want %v", res.Statuses, tc.statuses)
					break
				}
			}
			if res.Status != tc.statuses[len(tc.statuses)-1] {
				t.Errorf("Status %d, want %d", res.Status, tc.statuses[len(tc.statuses)-1])
			}
			got := rc.received()
			if len(got) != tc.attempts {
				t.Fatalf("receiver got %d requests, want %d", len(got), tc.attempts)
			}
			for i, n := range got {
				if n.NoticeID != d.Notification.NoticeID || string(n.Payload) != string(d.Notification.Payload) {
					t.Errorf("attempt %d: notice %s payload %s, sent %s %s", i, n.NoticeID, n.Payload, d.Notification.NoticeID, d.Notification.Payload)
				}
				if i > 0 && n.NotifyMs <= got[i-1].NotifyMs {
					t.Errorf("attempt %d: notifyMs %d, previous %d", i, n.NotifyMs, got[i-1].NotifyMs)
				}
			}
		})
	}
}

func TestSendContext(t *testing.T) {
	t.Run("cancelled while waiting to resend", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		_, srv := newReceiver(t, func(i int, w http.ResponseWriter, r *http.Request) {
			cancel()
			http.Error(w, "no", http.StatusInternalServerError)
		})
		s := &Sender{URL: srv.URL, Secret: testSecret, Backoff: time.Hour}
		res, err := s.Send(ctx, oneDelivery(t))
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotAcked) || res.Attempts != 1 {
			t.Errorf("Send: %+v, %v; want context.Canceled after 1 attempt", res, err)
		}
	})
	t.Run("cancelled during a request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		_, srv := newReceiver(t, func(i int, w http.ResponseWriter, r *http.Request) {
			cancel()
			<-r.Context().Done()
		})
		s := &Sender{URL: srv.URL, Secret: testSecret, Backoff: time.Hour}
		res, err := s.Send(ctx, oneDelivery(t))
		if !errors.Is(err, context.Canceled) || res.Attempts != 1 || res.Status != 0 {
			t.Errorf("Send: %+v, %v; want context.Canceled after 1 attempt", res, err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		rc, srv := newReceiver(t, nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		s := &Sender{URL: srv.URL, Secret: testSecret}
		if _, err := s.Send(ctx, oneDelivery(t)); !errors.Is(err, context.Canceled) {
			t.Errorf("Send: %v, want context.Canceled", err)
		}
		if n := len(rc.received()); n != 0 {
			t.Errorf("receiver got %d requests", n)
		}
	})
}

func TestSendBodyNil(t *testing.T) {
	rc, srv := newReceiver(t, nil)
	d := oneDelivery(t)
	d.Body = nil
	if _, err := (&Sender{URL: srv.URL, Secret: testSecret}).Send(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if got := rc.received(); len(got) != 1 || got[0].NoticeID != d.Notification.NoticeID {
		t.Errorf("received %+v", got)
	}
}
