package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/presence"
)

// Defaults of Config's zero values.
const (
	DefaultAddr           = ":8080"
	DefaultDataDir        = "./data"
	DefaultNATSListen     = "127.0.0.1:4222"
	DefaultDedupWindow    = 10 * time.Minute
	DefaultNCSMaxAge      = 7 * 24 * time.Hour
	DefaultPublishTimeout = 2 * time.Second
	DefaultShutdownGrace  = 10 * time.Second
	DefaultPresenceMaxAge = 24 * time.Hour
	DefaultLeaseTTL       = 6 * time.Second
	DefaultViewCatchUp    = 30 * time.Second
	// DefaultTombstoneRetention is presence.DefaultRetention.
	DefaultTombstoneRetention = presence.DefaultRetention
	// MaxNCSBody is the largest NCS request body accepted; Agora's notifications are a few hundred bytes.
	MaxNCSBody = 64 << 10
	// MinDedupWindow is the shortest de-duplication window allowed: Agora's retries span well under that.
	MinDedupWindow = 10 * time.Minute
)

// Config configures a Gateway. Its zero values mean the documented defaults; Validate reports the first bad
// setting in one line that names it.
type Config struct {
	// Addr is the HTTP listen address (default ":8080").
	Addr string
	// NCSSecrets are the NCS secrets; a signature made with any of them is accepted (rotation). Required.
	NCSSecrets []string
	// JWTSecret is the HS256 key of client tokens. Required.
	JWTSecret string
	// NATSURL lists external NATS servers, comma-separated. Empty runs the embedded server.
	NATSURL string
	// DataDir is where the embedded server keeps JetStream's files (default "./data").
	DataDir string
	// NATSListen is where the embedded server accepts other NATS clients, or "off" (default "127.0.0.1:4222").
	NATSListen string
	// DedupWindow is how long a noticeId is remembered to drop resends (default and minimum 10m).
	DedupWindow time.Duration
	// NCSMaxAge is how long stored notifications are kept (default 7 days).
	NCSMaxAge time.Duration
	// TombstoneRetention is how long a leave is remembered so that a late, older join cannot undo it; also the
	// replay guard's window (default 10m). Every instance on one NATS must use the same value.
	TombstoneRetention time.Duration
	// PresenceMaxAge is how long presence events are kept in USHER_PRESENCE: how far back clients can resume
	// (default 24h).
	PresenceMaxAge time.Duration
	// LeaseTTL is how long the applier lease outlives its holder: the longest hand-over after an instance dies
	// (default 6 s).
	LeaseTTL time.Duration
	// ViewCatchUp bounds how long Start waits for this instance's rosters to load before it serves (default 30 s).
	ViewCatchUp time.Duration
	// AllowedOrigins are browser origins allowed to open WebSockets besides the server's own (host patterns, e.g.
	// "console.example.com", "*.example.com").
	AllowedOrigins []string
	// MaxConnections is the most WebSocket connections this instance holds (default 20,000).
	MaxConnections int
	// MaxSubscriptions is the most channels one WebSocket connection may subscribe to (default 100).
	MaxSubscriptions int
	// SendQueue is how many frames may wait for one WebSocket client before it is closed as too slow (default 1024).
	SendQueue int
	// PingInterval is how often WebSocket peers are pinged; one that does not answer within it is dropped
	// (default 30 s).
	PingInterval time.Duration
	// InstanceID names this instance in the lease; default: host name and process id.
	InstanceID string
	// PublishTimeout bounds the wait for JetStream's acknowledgement before answering 503 (default 2 s).
	PublishTimeout time.Duration
	// ShutdownGrace bounds a graceful shutdown (default 10 s).
	ShutdownGrace time.Duration
	// Logger receives the gateway's log; nil discards it.
	Logger *slog.Logger
}

// withDefaults returns c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Addr, DefaultAddr)
	def(&c.DataDir, DefaultDataDir)
	def(&c.NATSListen, DefaultNATSListen)
	defDur(&c.DedupWindow, DefaultDedupWindow)
	defDur(&c.NCSMaxAge, DefaultNCSMaxAge)
	defDur(&c.PublishTimeout, DefaultPublishTimeout)
	defDur(&c.ShutdownGrace, DefaultShutdownGrace)
	defDur(&c.TombstoneRetention, DefaultTombstoneRetention)
	defDur(&c.PresenceMaxAge, DefaultPresenceMaxAge)
	defDur(&c.LeaseTTL, DefaultLeaseTTL)
	defDur(&c.ViewCatchUp, DefaultViewCatchUp)
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		c.InstanceID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks c (after defaults) and names the first bad setting.
func (c Config) Validate() error {
	c = c.withDefaults()
	nonEmpty := 0
	for _, s := range c.NCSSecrets {
		if strings.TrimSpace(s) != "" {
			nonEmpty++
		}
	}
	switch {
	case nonEmpty == 0:
		return errors.New("USHER_NCS_SECRETS is not set: give the NCS secret(s) from Agora's console, comma-separated (or run with --demo)")
	case c.JWTSecret == "":
		return errors.New("USHER_JWT_SECRET is not set: give the HS256 key that signs client tokens (or run with --demo)")
	case len(c.JWTSecret) < 16:
		return errors.New("USHER_JWT_SECRET is too short: use at least 16 bytes (32 random bytes recommended)")
	case c.DedupWindow < MinDedupWindow:
		return fmt.Errorf("USHER_DEDUP_WINDOW is %s: it must be at least %s", c.DedupWindow, MinDedupWindow)
	case c.NCSMaxAge < c.DedupWindow:
		return fmt.Errorf("USHER_NCS_MAX_AGE is %s: it must be at least the de-duplication window (%s)", c.NCSMaxAge, c.DedupWindow)
	case c.TombstoneRetention < time.Minute:
		return fmt.Errorf("USHER_TOMBSTONE_RETENTION is %s: it must be at least 1m (Agora's guidance)", c.TombstoneRetention)
	case c.PresenceMaxAge < time.Minute:
		return fmt.Errorf("USHER_PRESENCE_MAX_AGE is %s: it must be at least 1m", c.PresenceMaxAge)
	case c.LeaseTTL < 300*time.Millisecond:
		return fmt.Errorf("lease TTL is %s: it must be at least 300ms", c.LeaseTTL)
	case c.PublishTimeout < 0:
		return fmt.Errorf("publish timeout is %s: it must be positive", c.PublishTimeout)
	case c.NATSURL == "" && c.NATSListen != bus.ListenOff && !strings.Contains(c.NATSListen, ":"):
		return fmt.Errorf("USHER_NATS_LISTEN is %q: give host:port or \"off\"", c.NATSListen)
	}
	return nil
}
