// Package hub is Usher's WebSocket side: client sessions authorised by auth tokens, subscriptions to the channels a
// token grants, and fan-out of presence events to them.
//
// Events reach the hub through Publish, called in stream order by the one goroutine that follows USHER_PRESENCE
// on this instance (the gateway's view). The hub does not open NATS subscriptions of its own: the view already
// receives every event once, in order and without gaps, so fanning out from it costs no extra NATS traffic, and a
// snapshot and the live events after it come from the same ordered fold.
package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/presence"
)

// Source is what the hub reads rosters and stored events from. The gateway implements it with its view and
// USHER_PRESENCE.
type Source interface {
	// Snapshot is a channel's roster, at the seq of its last event (or, for a channel with no member, a seq at or
	// past it). It holds at least every event of the channel passed to Publish (the view applies an event before it
	// passes it on), and may hold one not passed on yet.
	Snapshot(channel string) presence.Snapshot
	// Seq is the last event of channel the source holds, or for a channel with no member a seq at or past its last
	// event (0 if none): every later event of the channel reaches Publish after this call returns.
	Seq(channel string) uint64
	// WaitSeq waits until the view has passed every event up to seq (any channel) to Publish.
	WaitSeq(ctx context.Context, seq uint64) error
	// Events returns up to limit stored events of channel with since < seq <= until, oldest first, and how many
	// events of channel with seq > since were stored when it read them (counting any after until).
	Events(ctx context.Context, channel string, since, until uint64, limit int) (events []presence.Event, stored uint64, err error)
	// Recent returns the first limit of channel's events with since < seq <= until from memory, oldest first, when
	// the source holds them all there (until being at most what Seq answered); false sends the resume to Events.
	Recent(channel string, since, until uint64, limit int) ([]presence.Event, bool)
	// FirstSeq is the oldest event still stored (any channel); events before it are gone.
	FirstSeq(ctx context.Context) (uint64, error)
	// Ready says whether the source holds the rosters: false before they are loaded, and while they are reloaded
	// after the source found it had missed events. A subscribe meanwhile gets error unavailable.
	Ready() bool
	// Epoch names the stream the seqs count in; it changes when the stream is made anew and its seqs start again.
	// A resume from a seq of another epoch gets a reset and a snapshot. Empty when the source has none.
	Epoch() string
}

// Defaults of Config's zero values.
const (
	DefaultMaxConnections   = 20000
	DefaultMaxSubscriptions = 100
	DefaultMaxPerSubject    = 100
	DefaultSendQueue        = 1024
	DefaultPingInterval     = 30 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultMaxReplay        = 10000
	// MaxFrame is the largest frame a client may send.
	MaxFrame = 4 << 10
)

// Config configures a Hub. Zero values mean the defaults.
type Config struct {
	// MaxConnections per instance; more are refused with 503.
	MaxConnections int
	// MaxSubscriptions per connection; more get a too_many_subscriptions error.
	MaxSubscriptions int
	// SendQueue is how many frames may wait for a client; a client that lets it fill is closed (CloseTooSlow).
	SendQueue int
	// PingInterval is how often the server pings; a peer that does not answer within it is dropped.
	PingInterval time.Duration
	// WriteTimeout bounds each 64 KiB of a batched write to a client, and PingInterval the whole batch; past either
	// the client is closed (CloseTooSlow).
	WriteTimeout time.Duration
	// MaxReplay is the most events a resume replays; a resume further behind gets a reset and a snapshot.
	MaxReplay int
	// MaxPerSubject is the most connections one token subject (the JWT "sub") may hold on this instance; more are
	// refused with 429. Tokens without a subject are limited only by MaxConnections.
	MaxPerSubject int
	// OriginPatterns are the browser origins allowed besides the server's own (coder/websocket host patterns).
	OriginPatterns []string
	// DeliveryLatency, if set, observes for each live event frame written the seconds from the event's notifyMs.
	DeliveryLatency prometheus.Observer
	// Logger receives the hub's log; nil discards it.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxConnections, DefaultMaxConnections)
	def(&c.MaxSubscriptions, DefaultMaxSubscriptions)
	def(&c.MaxPerSubject, DefaultMaxPerSubject)
	def(&c.SendQueue, DefaultSendQueue)
	def(&c.MaxReplay, DefaultMaxReplay)
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Hub holds the sessions of this instance and fans events out to them.
//
// All methods may be called concurrently, except Publish, which one goroutine calls in stream order.
type Hub struct {
	cfg    Config
	src    Source
	tokens *auth.Verifier
	log    *slog.Logger

	mu        sync.RWMutex
	channels  map[string]*channel
	sessions  map[*session]struct{}
	reserved  int            // connections admitted: sessions, and upgrades in progress
	bySubject map[string]int // admitted connections per token subject
	closing   bool

	ctx      context.Context // ends when the hub closes
	cancel   context.CancelFunc
	sessWG   sync.WaitGroup // every session's goroutines
	pingerWG sync.WaitGroup

	nConns, nSubs, nSlow, nFrames                atomic.Int64
	nRefusedToken, nRefusedFull, nRefusedSubject atomic.Int64
	nResumedMemory, nResumedStored               atomic.Int64

	afterAccept func() // tests: runs in ServeHTTP between the upgrade and the session's start
}

// channel is the local subscribers of one channel.
type channel struct {
	mu   sync.Mutex
	subs map[*subscription]struct{}

	// snapMu serialises snapshot building (never held with mu: the fan-out does not wait for it). snapFrame is the
	// latest snapshot frame built, at snapSeq, for the next subscribers that can use it.
	snapMu    sync.Mutex
	snapSeq   uint64
	snapEpoch string
	snapFrame []byte
}

// snapshot returns a snapshot frame of the channel called name holding at least the events up to seq, and its seq:
// the last one built when it is recent enough, else a new one. Concurrent subscribers share a build, so a storm of
// subscribers to a large channel costs one snapshot per change of the channel, not one each.
func (ch *channel) snapshot(src Source, name string, seq uint64) ([]byte, uint64) {
	ch.snapMu.Lock()
	defer ch.snapMu.Unlock()
	if ch.snapFrame == nil || ch.snapSeq < seq || ch.snapEpoch != src.Epoch() { // a new stream's seqs start again
		snap := src.Snapshot(name)
		ch.snapFrame, ch.snapSeq, ch.snapEpoch = encodeSnapshot(snap), snap.Seq, snap.Epoch
	}
	return ch.snapFrame, ch.snapSeq
}

// New returns a Hub serving sessions from src, with tokens verified by tokens. Close stops it.
func New(cfg Config, src Source, tokens *auth.Verifier) *Hub {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{cfg: cfg, src: src, tokens: tokens, log: cfg.Logger, channels: map[string]*channel{},
		sessions: map[*session]struct{}{}, bySubject: map[string]int{}, ctx: ctx, cancel: cancel}
	h.pingerWG.Go(h.pinger)
	return h
}

// Publish fans an event out to the local subscribers of its channel. raw, when not nil, is the event's JSON as
// stored (json.Marshal of e), which the frame is built from without encoding again. It never blocks on a client: a
// client whose queue is full is closed. Events must come in stream order.
func (h *Hub) Publish(e presence.Event, raw []byte) {
	h.mu.RLock()
	ch := h.channels[e.Channel]
	h.mu.RUnlock()
	if ch == nil {
		return
	}
	frame := outFrame{data: EventFrame(e, raw), notifyMs: e.NotifyMs}
	// Writers are started after the loop: a goroutine started per subscriber, inside it, doubled the loop's time
	// (BenchmarkPublishFanout), and every channel's events wait for this one.
	var small [16]*session // most channels have few watchers: no allocation for them
	start := small[:0]
	ch.mu.Lock()
	for sub := range ch.subs {
		if sub.deliver(e.Seq, frame) {
			start = append(start, sub.s)
		}
	}
	ch.mu.Unlock()
	for _, s := range start {
		s.startWriter()
	}
}

// ServeHTTP upgrades GET /v1/ws to a WebSocket session. The token comes from Authorization: Bearer, a
// "bearer.<token>" subprotocol, or ?token=.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := bearer(r)
	claims, err := h.tokens.Verify(tok)
	if err != nil {
		h.nRefusedToken.Add(1)
		writeError(w, r, http.StatusUnauthorized, auth.ErrorCode(err), err.Error())
		return
	}
	if !h.admit(w, r, claims.Subject) {
		return
	}
	cork := &corkHijacker{ResponseWriter: w}
	conn, err := websocket.Accept(cork, r, &websocket.AcceptOptions{
		Subprotocols:    []string{Subprotocol},
		OriginPatterns:  h.cfg.OriginPatterns,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		h.release(claims.Subject)
		return // Accept has answered the client
	}
	conn.SetReadLimit(MaxFrame)
	if h.afterAccept != nil {
		h.afterAccept()
	}
	s := h.newSession(conn, cork.conn, claims)
	if s == nil {
		// Close began during the upgrade. The close handshake waits for the peer (up to 5 s in coder/websocket), and
		// no session counts this connection: the hub's end cuts that wait, as Close cuts its sessions' past its
		// context. It ends the read only, not the socket: the hub may have ended already (a Close with no session
		// returns at once), and the 1013 frame must still go out first.
		h.release(claims.Subject)
		stop := context.AfterFunc(h.ctx, func() { _ = cork.conn.SetReadDeadline(time.Now()) })
		_ = conn.Close(websocket.StatusTryAgainLater, "server is shutting down")
		stop()
		return
	}
	// The read loop gets a goroutine of its own, owned by the hub, and this handler returns: its deep stack, the
	// request and gin's context are released instead of being held for the life of the connection.
	go s.readLoop()
}

// admit reserves a connection for a token subject, or answers why it cannot: 503 when this instance is full (the
// client should try another), 429 when the subject holds as many connections as it may. A reservation ends with
// release, which the session's close calls.
func (h *Hub) admit(w http.ResponseWriter, r *http.Request, subject string) bool {
	h.mu.Lock()
	full, closing := h.reserved >= h.cfg.MaxConnections, h.closing
	perSubject := subject != "" && h.bySubject[subject] >= h.cfg.MaxPerSubject
	if !full && !closing && !perSubject {
		h.reserved++
		if subject != "" {
			h.bySubject[subject]++
		}
	}
	h.mu.Unlock()
	switch {
	case full || closing:
		h.nRefusedFull.Add(1)
		writeError(w, r, http.StatusServiceUnavailable, "too_many_connections", "this instance holds as many connections as it may; retry another")
		return false
	case perSubject:
		h.nRefusedSubject.Add(1)
		writeError(w, r, http.StatusTooManyRequests, "too_many_connections_for_subject",
			fmt.Sprintf("this token's subject holds %d connections, the most allowed; close one first", h.cfg.MaxPerSubject))
		return false
	}
	return true
}

// release ends a reservation made by admit.
func (h *Hub) release(subject string) {
	h.mu.Lock()
	h.releaseLocked(subject)
	h.mu.Unlock()
}

func (h *Hub) releaseLocked(subject string) {
	h.reserved--
	if subject != "" {
		if h.bySubject[subject]--; h.bySubject[subject] <= 0 {
			delete(h.bySubject, subject)
		}
	}
}

// Subprotocol is the WebSocket subprotocol Usher speaks. A client may offer it together with "bearer.<token>" to
// carry its token without putting it in a URL (usher.js does).
const Subprotocol = "usher"

// bearer finds the client's token: Authorization: Bearer, then a "bearer.<token>" subprotocol, then ?token=.
func bearer(r *http.Request) string {
	if tok, ok := auth.FromHeader(r.Header.Get("Authorization")); ok {
		return tok
	}
	for _, line := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(line, ",") {
			if tok, ok := strings.CutPrefix(strings.TrimSpace(p), "bearer."); ok {
				return tok
			}
		}
	}
	return r.URL.Query().Get("token")
}

// refusalKey is the request context key of WithRefusal.
type refusalKey struct{}

// WithRefusal returns ctx in which ServeHTTP, given a request with it, records in *code the error code of an upgrade
// it refuses with a JSON error (401, 429, 503), for the caller's request log.
func WithRefusal(ctx context.Context, code *string) context.Context {
	return context.WithValue(ctx, refusalKey{}, code)
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if p, ok := r.Context().Value(refusalKey{}).(*string); ok {
		*p = code
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg})
}

// pinger pings every session once per PingInterval, and drops one that does not answer within PingInterval. Each
// ping waits for its pong in a goroutine of its own, so dead peers, however many, hold up no other ping; the pings
// of a round are spread over a quarter of the interval, so that few wait at once. A dead peer goes within about
// 2.25 intervals.
func (h *Hub) pinger() {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		all := h.allSessions()
		const step = 64 // pings sent between two pauses
		pause := h.cfg.PingInterval / 4 / time.Duration(len(all)/step+1)
		for i, s := range all {
			if s.pinging.CompareAndSwap(false, true) { // false: its last ping still waits, and will drop it
				h.pingerWG.Go(func() {
					defer s.pinging.Store(false)
					s.ping(h.cfg.PingInterval)
				})
			}
			if i%step == step-1 {
				select {
				case <-h.ctx.Done():
					return
				case <-time.After(pause):
				}
			}
		}
	}
}

// Resync closes every session with 1012 (service restart), reason given: their clients reconnect and resume, and
// those whose place in a channel's events is no longer kept get reset and a new snapshot. The source calls it when
// the rosters it served from had missed events, so every snapshot sent since may be wrong. New connections are
// accepted as before.
func (h *Hub) Resync(reason string) {
	for _, s := range h.allSessions() {
		s.close(websocket.StatusServiceRestart, reason)
	}
}

// allSessions lists the open sessions.
func (h *Hub) allSessions() []*session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	all := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		all = append(all, s)
	}
	return all
}

// Close closes every session (close code 1001) and stops the hub, bounded by ctx.
func (h *Hub) Close(ctx context.Context) {
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()
	all := h.allSessions() // no session is added once closing is set
	// The sessions' contexts derive from the hub's: cancelling it first would end each session's pending read,
	// which makes coder/websocket drop the connection without a close frame. So close them, then cancel.
	for _, s := range all {
		s.close(websocket.StatusGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { h.sessWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// CloseNow does not cut short a close handshake under way (it waits for it, up to 15 s each): closing the
		// socket under it does, and ends every read and write on it.
		for _, s := range all {
			_ = s.cork.Close()
		}
		for _, s := range all {
			_ = s.conn.CloseNow()
		}
		// Sessions whose close began before (a slow client, a dead peer, a Resync) are no longer listed, and may
		// be waiting on their peer's close handshake: ending their contexts ends the read it waits behind, which
		// closes the socket under it.
		h.cancel()
		<-done
	}
	h.cancel()
	h.pingerWG.Wait()
}

// Stats are the hub's counters.
type Stats struct {
	Connections    int64 // open sessions
	Subscriptions  int64 // active subscriptions
	SlowClosed     int64 // sessions closed because they could not keep up
	FramesSent     int64 // frames written to clients
	RefusedToken   int64 // upgrades refused: no token, or an invalid or expired one (401)
	RefusedFull    int64 // upgrades refused: the instance was full or shutting down (503)
	RefusedSubject int64 // upgrades refused: the token's subject held its most connections (429)
	ResumedMemory  int64 // resumes answered from the source's memory (Source.Recent)
	ResumedStored  int64 // resumes answered from the stored events (Source.Events)
}

// Stats returns the hub's counters now.
func (h *Hub) Stats() Stats {
	return Stats{Connections: h.nConns.Load(), Subscriptions: h.nSubs.Load(), SlowClosed: h.nSlow.Load(),
		FramesSent: h.nFrames.Load(), RefusedToken: h.nRefusedToken.Load(), RefusedFull: h.nRefusedFull.Load(),
		RefusedSubject: h.nRefusedSubject.Load(), ResumedMemory: h.nResumedMemory.Load(), ResumedStored: h.nResumedStored.Load()}
}
