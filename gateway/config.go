package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
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
	// DefaultCheckpointInterval is how often the applier saves its state while notifications arrive.
	DefaultCheckpointInterval = 10 * time.Second
	// MinCheckpointInterval is the shortest interval allowed.
	MinCheckpointInterval = 100 * time.Millisecond
	DefaultReplicas       = 1
	// MaxReplicas is JetStream's own limit.
	MaxReplicas = 5
	// DefaultTombstoneRetention is presence.DefaultRetention.
	DefaultTombstoneRetention = presence.DefaultRetention
	// MinJWTSecret is the shortest USHER_JWT_SECRET allowed, in bytes.
	MinJWTSecret = 16
	// MinNATSListenToken is the shortest USHER_NATS_LISTEN_TOKEN allowed, in bytes.
	MinNATSListenToken = 16
	// MinDedupWindow is the shortest de-duplication window allowed: Agora's retries span well under that.
	MinDedupWindow = 10 * time.Minute

	DefaultMaxBodyBytes      = 64 << 10
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	// DefaultUpgradeRate and DefaultUpgradeBurst limit WebSocket upgrades per client address: a burst for an office
	// behind one NAT reconnecting after a restart, then a steady rate.
	DefaultUpgradeRate  = 20.0
	DefaultUpgradeBurst = 200
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
	// JWTPreviousSecrets are keys tokens may still be signed with during a rotation: accepted, never used to sign.
	JWTPreviousSecrets []string
	// NATSURL lists external NATS servers, comma-separated. Empty runs the embedded server.
	NATSURL string
	// NATSCreds is a NATS credentials file (user JWT and nkey seed) for the external NATS servers.
	NATSCreds string
	// NATSCA, NATSCert and NATSKey are PEM files for TLS to the external NATS servers: the CA that signed their
	// certificates (default: the system's roots), and this client's certificate and key (both or neither).
	NATSCA, NATSCert, NATSKey string
	// Replicas is how many copies JetStream keeps of Usher's streams and buckets, 1 to 5 (default 1). Above 1
	// needs a NATS cluster; 3 is the usual choice.
	Replicas int
	// DataDir is where the embedded server keeps JetStream's files (default "./data").
	DataDir string
	// NATSListen is where the embedded server accepts other NATS clients, or "off" (default "127.0.0.1:4222").
	NATSListen string
	// NATSListenToken, when set, is the token the embedded server requires of the clients of NATSListen (at least
	// MinNATSListenToken bytes). Unset, any process that reaches NATSListen may read and publish on every subject.
	NATSListenToken string
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
	// CheckpointInterval is how often the applier saves its state (rosters, tombstones) while notifications arrive
	// (default 10 s): the most a new applier replays after a crash, against a copy of every roster written each time.
	CheckpointInterval time.Duration
	// ViewCatchUp bounds how long Start waits for this instance's rosters to load before it serves (default 30 s).
	ViewCatchUp time.Duration
	// AllowedOrigins are browser origins allowed to open WebSockets besides the server's own (host patterns, e.g.
	// "console.example.com", "*.example.com").
	AllowedOrigins []string
	// MaxConnections is the most WebSocket connections this instance holds (default 20,000).
	MaxConnections int
	// MaxSubscriptions is the most channels one WebSocket connection may subscribe to (default 100).
	MaxSubscriptions int
	// MaxPerSubject is the most WebSocket connections one token subject may hold on this instance (default 100).
	MaxPerSubject int
	// UpgradeRate is how many WebSocket upgrades per second one client address may make, after a burst of
	// UpgradeBurst (defaults 20/s and 200).
	UpgradeRate  float64
	UpgradeBurst int
	// MaxBodyBytes is the largest request body accepted (default 64 KiB; Agora's notifications are a few hundred
	// bytes). MaxHeaderBytes is the most request header bytes (default 16 KiB).
	MaxBodyBytes   int64
	MaxHeaderBytes int
	// HTTP server timeouts; none may be zero (defaults 5s, 30s, 30s, 120s). ReadTimeout bounds reading a whole
	// request with its body; WriteTimeout, writing a response. WebSockets are not bound by them once upgraded.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// TLSCert and TLSKey are PEM files; with both set the server speaks HTTPS only.
	TLSCert, TLSKey string
	// MetricsToken, when set, is the bearer token GET /metrics requires.
	MetricsToken string
	// NCSAllowCIDRs, when set, are the only networks (CIDRs or single addresses) POST /v1/ncs is taken from.
	NCSAllowCIDRs []string
	// TrustedProxies are the networks whose X-Forwarded-For / X-Real-IP headers name the client's address; from any
	// other peer those headers are ignored. Empty: the peer's address is the client's.
	TrustedProxies []string
	// RecentEvents is how many of the latest presence events (of every channel) the view keeps in memory, so that a
	// resume after a short absence (and GET .../events) is answered without reading USHER_PRESENCE (default 32,768, 9.5 MiB).
	RecentEvents int
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
	defDur(&c.CheckpointInterval, DefaultCheckpointInterval)
	defDur(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defDur(&c.ReadTimeout, DefaultReadTimeout)
	defDur(&c.WriteTimeout, DefaultWriteTimeout)
	defDur(&c.IdleTimeout, DefaultIdleTimeout)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.RecentEvents <= 0 {
		c.RecentEvents = DefaultRecentEvents
	}
	if c.UpgradeRate == 0 {
		c.UpgradeRate = DefaultUpgradeRate
	}
	if c.UpgradeBurst == 0 {
		c.UpgradeBurst = DefaultUpgradeBurst
	}
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
	case len(c.JWTSecret) < MinJWTSecret:
		return errors.New("USHER_JWT_SECRET is too short: use at least 16 bytes (32 random bytes recommended)")
	case slices.ContainsFunc(c.JWTPreviousSecrets, func(s string) bool { return len(s) < MinJWTSecret }):
		return errors.New("USHER_JWT_PREVIOUS_SECRETS has a key shorter than 16 bytes")
	case c.DedupWindow < MinDedupWindow:
		return fmt.Errorf("USHER_DEDUP_WINDOW is %s: it must be at least %s", c.DedupWindow, MinDedupWindow)
	case c.NCSMaxAge < c.DedupWindow:
		return fmt.Errorf("USHER_NCS_MAX_AGE is %s: it must be at least the de-duplication window (%s)", c.NCSMaxAge, c.DedupWindow)
	case c.TombstoneRetention < time.Minute:
		return fmt.Errorf("USHER_TOMBSTONE_RETENTION is %s: it must be at least 1m (Agora's guidance)", c.TombstoneRetention)
	case c.PresenceMaxAge < time.Minute:
		return fmt.Errorf("USHER_PRESENCE_MAX_AGE is %s: it must be at least 1m", c.PresenceMaxAge)
	case c.CheckpointInterval < MinCheckpointInterval:
		return fmt.Errorf("USHER_CHECKPOINT_INTERVAL is %s: it must be at least %s", c.CheckpointInterval, MinCheckpointInterval)
	case c.LeaseTTL < 300*time.Millisecond:
		return fmt.Errorf("lease TTL is %s: it must be at least 300ms", c.LeaseTTL)
	case c.PublishTimeout < 0:
		return fmt.Errorf("publish timeout is %s: it must be positive", c.PublishTimeout)
	case c.NATSURL == "" && c.NATSListen != bus.ListenOff && !hostPort(c.NATSListen):
		return fmt.Errorf("USHER_NATS_LISTEN is %q: give host:port (a port from 0 to 65535) or \"off\"", c.NATSListen)
	case c.NATSListenToken != "" && c.NATSURL != "":
		return errors.New("USHER_NATS_LISTEN_TOKEN is set, and so is USHER_NATS_URL: the token guards the embedded server's " +
			"listener; for external NATS servers give credentials in the URL or USHER_NATS_CREDS")
	case c.NATSListenToken != "" && c.NATSListen == bus.ListenOff:
		return errors.New("USHER_NATS_LISTEN_TOKEN is set, but USHER_NATS_LISTEN is off: no other client can connect to guard against")
	case c.NATSListenToken != "" && len(c.NATSListenToken) < MinNATSListenToken:
		return fmt.Errorf("USHER_NATS_LISTEN_TOKEN is %d bytes: it must be at least %d", len(c.NATSListenToken), MinNATSListenToken)
	case bcryptLike(c.NATSListenToken):
		return errors.New("USHER_NATS_LISTEN_TOKEN starts as a bcrypt hash does ($2a$10$...): the NATS server would take it for " +
			"the hash of the token, and Usher, which gives the token itself, would be refused; give the token, not a hash")
	case c.ReadHeaderTimeout < 0, c.ReadTimeout < 0, c.WriteTimeout < 0, c.IdleTimeout < 0:
		return errors.New("USHER_READ_HEADER_TIMEOUT, USHER_READ_TIMEOUT, USHER_WRITE_TIMEOUT and USHER_IDLE_TIMEOUT must be positive")
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("USHER_MAX_BODY_BYTES is %d: it must be at least 1024", c.MaxBodyBytes)
	case c.MaxHeaderBytes < 1024:
		return fmt.Errorf("USHER_MAX_HEADER_BYTES is %d: it must be at least 1024", c.MaxHeaderBytes)
	case !(c.UpgradeRate >= 0) || math.IsInf(c.UpgradeRate, 1) || c.UpgradeBurst < 0: // NaN passes every comparison
		return fmt.Errorf("USHER_WS_UPGRADE_RATE is %v and USHER_WS_UPGRADE_BURST %d: both must be positive and finite", c.UpgradeRate, c.UpgradeBurst)
	case c.MaxPerSubject < 0:
		return fmt.Errorf("USHER_MAX_CONNECTIONS_PER_SUBJECT is %d: it must be positive", c.MaxPerSubject)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("USHER_TLS_CERT and USHER_TLS_KEY go together: set both, or neither")
	case c.Replicas < 1 || c.Replicas > MaxReplicas:
		return fmt.Errorf("USHER_REPLICAS is %d: it must be from 1 to %d (3 on a NATS cluster)", c.Replicas, MaxReplicas)
	case c.NATSURL == "" && c.Replicas > 1:
		return fmt.Errorf("USHER_REPLICAS is %d: the embedded NATS server is a single node and keeps one copy; "+
			"set USHER_NATS_URL to a NATS cluster for replicas", c.Replicas)
	case (c.NATSCert == "") != (c.NATSKey == ""):
		return errors.New("USHER_NATS_CERT and USHER_NATS_KEY go together: set both, or neither")
	}
	if c.NATSURL == "" {
		for _, s := range []struct{ name, v string }{{"USHER_NATS_CREDS", c.NATSCreds}, {"USHER_NATS_CA", c.NATSCA}, {"USHER_NATS_CERT", c.NATSCert}} {
			if s.v != "" {
				return fmt.Errorf("%s is set but USHER_NATS_URL is not: it is for external NATS servers, the embedded one needs none", s.name)
			}
		}
	}
	if err := checkOrigins(c.AllowedOrigins); err != nil {
		return err
	}
	if _, err := parseNets("USHER_NCS_ALLOW_CIDRS", c.NCSAllowCIDRs); err != nil {
		return err
	}
	if _, err := parseNets("USHER_TRUSTED_PROXIES", c.TrustedProxies); err != nil {
		return err
	}
	return nil
}

// checkOrigins refuses allowed-origin patterns that can never match a browser's Origin: malformed ones (with one
// of them, coder/websocket refuses every cross-origin upgrade, those the others allow included), and ones with a path.
func checkOrigins(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("USHER_ALLOWED_ORIGINS: %q is not a host pattern (%v): give hosts such as console.example.com or *.example.com", p, err)
		}
		host := p
		if _, h, ok := strings.Cut(p, "://"); ok {
			host = h
		}
		if strings.Contains(host, "/") {
			return fmt.Errorf("USHER_ALLOWED_ORIGINS: %q has a path, which an origin never has: give the host alone (console.example.com)", p)
		}
	}
	return nil
}

// hostPort says whether addr is host:port with a port the embedded server takes (-1, for tests, picks a free one).
func hostPort(addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= -1 && n <= 65535
}

// parseNets parses CIDRs and single addresses (as /32 or /128), naming the setting in its error.
func parseNets(setting string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8: client addresses are unmapped
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is neither a CIDR (10.0.0.0/8) nor an address", setting, s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// bcryptLike reports whether s starts as a bcrypt hash does ("$2a$10$"), which nats-server takes a token for.
func bcryptLike(s string) bool {
	digit := func(b byte) bool { return '0' <= b && b <= '9' }
	return len(s) >= 7 && s[0] == '$' && s[1] == '2' && strings.IndexByte("abxy", s[2]) >= 0 && s[3] == '$' &&
		digit(s[4]) && digit(s[5]) && s[6] == '$'
}
