package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
)

// ErrNotAcked is wrapped by Send's error when the receiver never answered 200, after every resend.
var ErrNotAcked = errors.New("notification not acknowledged")

const (
	defaultResends = 3
	defaultBackoff = time.Second
	maxBackoff     = time.Minute
	// maxAnswer bounds how much of an answer's body is read, so that the connection can be reused.
	maxAnswer = 64 << 10
)

// defaultClient answers within 10 s or counts as a failure, as Agora's sender does.
var defaultClient = &http.Client{Timeout: 10 * time.Second}

// Sender posts deliveries to a receiver the way Agora does: JSON, signed with both signature headers, and resent
// when the answer is not 200 or does not come in time.
//
// A Sender may be used by many goroutines at once. Do not change its fields after its first use.
type Sender struct {
	// URL is where notifications are posted, such as Usher's POST /v1/ncs.
	URL string
	// Secret is the NCS secret the bodies are signed with.
	Secret string
	// Client makes the requests; its Timeout is how long an answer may take. Nil means a client with a 10 s timeout.
	Client *http.Client
	// Resends is how many times a notification is sent again after a failure. Zero means 3; negative means none.
	Resends int
	// Backoff is the wait before the first resend; each further wait doubles, up to a minute (or Backoff, if
	// longer). Zero or negative means 1 s.
	Backoff time.Duration
	// Now is the clock for the notifyMs of resends. Nil means time.Now.
	Now func() time.Time
}

// Result is the outcome of Send.
type Result struct {
	// Status is the HTTP status of the last answer, or 0 when the last attempt got none.
	Status int
	// Attempts is the number of requests made: 1 plus the resends.
	Attempts int
	// Statuses has the status of every attempt in order, 0 for one that got no answer (a timeout or transport
	// error, or a cancelled context).
	Statuses []int
}

// Send posts d and returns when the receiver answered 200, when the resends are used up, or when ctx ends. The
// first request carries d.Body unchanged (d.Notification encoded, when Body is nil); each resend carries a newer
// notifyMs, as Agora's do, and is signed again. The error is nil exactly when the final answer was 200. After the
// last resend it wraps ErrNotAcked and the last transport error, if any; when ctx ends first it wraps ctx.Err().
func (s *Sender) Send(ctx context.Context, d Delivery) (Result, error) {
	n, body := d.Notification, d.Body
	if body == nil {
		b, err := encode(n)
		if err != nil {
			return Result{}, fmt.Errorf("sim: encoding notice %s: %w", n.NoticeID, err)
		}
		body = b
	}
	var res Result
	wait := s.backoff()
	for {
		status, err := s.post(ctx, body)
		res.Attempts++
		res.Status = status
		res.Statuses = append(res.Statuses, status)
		if err == nil && status == http.StatusOK {
			return res, nil
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("sim: sending notice %s: %w", n.NoticeID, ctx.Err())
		}
		if res.Attempts > s.resends() {
			if err != nil {
				return res, fmt.Errorf("sim: notice %s after %d attempts: %w: %w", n.NoticeID, res.Attempts, ErrNotAcked, err)
			}
			return res, fmt.Errorf("sim: notice %s after %d attempts: %w: last answer %d", n.NoticeID, res.Attempts, ErrNotAcked, status)
		}
		if err := sleep(ctx, wait); err != nil {
			return res, fmt.Errorf("sim: waiting to resend notice %s: %w", n.NoticeID, err)
		}
		wait = min(2*wait, max(maxBackoff, s.backoff()))
		n.NotifyMs = max(s.now().UnixMilli(), n.NotifyMs+1)
		b, err := encode(n)
		if err != nil {
			return res, fmt.Errorf("sim: encoding notice %s: %w", n.NoticeID, err)
		}
		body = b
	}
}

// post makes one signed request and returns the answer's status.
func (s *Sender) post(ctx context.Context, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("making request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	ncs.Sign(req.Header, s.Secret, body)
	resp, err := s.client().Do(req)
	if err != nil {
		return 0, fmt.Errorf("posting: %w", err)
	}
	defer resp.Body.Close()
	// Read the answer to reuse the connection; a failure to read it does not change what the status said.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	return resp.StatusCode, nil
}

func (s *Sender) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return defaultClient
}

func (s *Sender) resends() int {
	switch {
	case s.Resends == 0:
		return defaultResends
	case s.Resends < 0:
		return 0
	}
	return s.Resends
}

func (s *Sender) backoff() time.Duration {
	if s.Backoff <= 0 {
		return defaultBackoff
	}
	return s.Backoff
}

func (s *Sender) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
