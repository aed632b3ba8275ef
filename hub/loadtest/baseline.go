// Package loadtest is Usher's load tool (usher bench) and the bare fan-out baseline it is measured against.
package loadtest

import (
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/coder/websocket"
)

// Baseline is the bare fan-out server the load tool compares Usher with: POST /publish?channel=C sends the body, as
// it is, to every WebSocket of GET /ws?channel=C. No NATS, no auth, no JSON, no queues: one Write per frame per
// client, straight from the publishing request. It is what "just broadcast over coder/websocket" costs.
//
// All methods may be called concurrently.
type Baseline struct {
	mu       sync.RWMutex
	channels map[string]map[*websocket.Conn]struct{}
}

// NewBaseline returns an empty baseline server.
func NewBaseline() *Baseline {
	return &Baseline{channels: map[string]map[*websocket.Conn]struct{}{}}
}

func (b *Baseline) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ws":
		b.serveWS(w, r)
	case "/publish":
		b.publish(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (b *Baseline) serveWS(w http.ResponseWriter, r *http.Request) {
	ch := r.URL.Query().Get("channel")
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	b.mu.Lock()
	if b.channels[ch] == nil {
		b.channels[ch] = map[*websocket.Conn]struct{}{}
	}
	b.channels[ch][c] = struct{}{}
	b.mu.Unlock()
	// Tell the client it is attached, as Usher's subscribed frame does, so a load run starts only when all are.
	_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"subscribed"}`))
	defer func() {
		b.mu.Lock()
		delete(b.channels[ch], c)
		b.mu.Unlock()
	}()
	// Read (and discard) until the client goes: this also answers pings and closes.
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return
		}
	}
}

func (b *Baseline) publish(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ch := r.URL.Query().Get("channel")
	b.mu.RLock()
	conns := make([]*websocket.Conn, 0, len(b.channels[ch]))
	for c := range b.channels[ch] {
		conns = append(conns, c)
	}
	b.mu.RUnlock()
	for _, c := range conns {
		_ = c.Write(r.Context(), websocket.MessageText, body)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(`{"ok":true}`))
}
