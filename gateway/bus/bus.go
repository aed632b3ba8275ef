// Package bus connects Usher to NATS: it runs the embedded NATS server with JetStream on disk, or connects to an
// external cluster, and declares Usher's streams.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/subject"
)

// Stream and bucket names.
const (
	NCSStream        = "USHER_NCS"
	PresenceStream   = "USHER_PRESENCE"
	LeaseBucket      = "USHER_LEASES"
	CheckpointBucket = "USHER_CHECKPOINTS"
)

// ListenOff, as the embedded listen address, keeps the embedded server in-process only.
const ListenOff = "off"

// EmbeddedConfig configures the embedded NATS server.
type EmbeddedConfig struct {
	// StoreDir holds JetStream's files.
	StoreDir string
	// Listen is host:port for other NATS clients, or ListenOff. Port 0 (or -1) picks a free port.
	Listen string
	// Token, when set, is required of every client, in-process ones too (nats.Token): without it, any process that
	// reaches Listen may read and publish on every subject.
	Token string
	// Logger receives the server's notices, warnings and errors; nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to accept connections; zero means 10 s.
	ReadyTimeout time.Duration
}

// StartEmbedded starts a NATS server with JetStream and waits until it accepts connections. The caller owns it:
// Shutdown then WaitForShutdown.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "usher-embedded",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		// The embedded server's clients are Usher and the operator's own backend services on loopback.
		MaxPayload:    1 << 20,
		Authorization: cfg.Token,
	}
	if cfg.Listen == ListenOff || cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen address %q: %w", cfg.Listen, err)
		}
		if port == 0 {
			port = server.RANDOM_PORT // a free port, as 0 means to the OS; to the NATS server, 0 means 4222
		}
		opts.Host, opts.Port = host, port
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create embedded nats: %w", err)
	}
	logger := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		logger = cfg.Logger.With("component", "nats")
	}
	fatal := &fatalTrap{slogAdapter: slogAdapter{logger}}
	s.SetLoggerV2(fatal, false, false, false)
	timeout := cfg.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	// Start returns once the server runs, or at once when it cannot (JetStream's storage unusable: it logs why and
	// never accepts connections, which ReadyForConnections would wait out).
	started := make(chan struct{})
	go func() { defer close(started); s.Start() }()
	select {
	case <-started:
		if msg := fatal.msg.Load(); msg != nil {
			err = fmt.Errorf("embedded nats could not start: %s", *msg) // its store, or its listen address
		}
	case <-time.After(timeout):
	}
	if err == nil && !s.ReadyForConnections(timeout) {
		err = fmt.Errorf("embedded nats not ready after %s (is %s writable?)", timeout, cfg.StoreDir)
		if !opts.DontListen {
			err = fmt.Errorf("embedded nats not ready after %s (is %s free, is %s writable?)", timeout, cfg.Listen, cfg.StoreDir)
		}
	}
	if err != nil {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, err
	}
	return s, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, errors.New("port must be a number from 0 to 65535")
	}
	return host, port, nil
}

// ConnectEmbedded connects in-process to an embedded server: no socket, no network. opts add to the defaults
// (LogAsyncErrors, say).
func ConnectEmbedded(s *server.Server, name string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(s), nats.Name(name), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// Connect connects to external NATS servers (comma-separated URLs), retrying on its own when the connection drops;
// reconnected, if not nil, is called each time the connection is back; opts add credentials and TLS.
func Connect(urls, name string, log *slog.Logger, reconnected func(), opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(urls, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(false),
		// A server that goes silent without closing the connection (its machine died, a partition) is noticed only
		// by unanswered pings: after 4 to 6 minutes with the client's defaults (every 2 minutes, 2 outstanding), all
		// of them 503s. Every PingInterval, MaxPingsOut outstanding: given up on within about 20 s, and another
		// server tried.
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOut),
		// A server that stops reading (hung, or cut off without a reset) blocks the client's writes once the socket
		// buffers are full, and the client holds the connection's lock while it writes: every publish, whatever
		// its context, and the pings that would notice, wait behind it. The client's default gives up after a
		// minute; WriteTimeout does sooner, and the connection is then made again.
		nats.FlusherTimeout(WriteTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			// Not ConnectedUrlRedacted: it hides a password only, and a token given as the user info
			// ("nats://<token>@host") would be logged.
			log.Info("nats reconnected", "server", RedactURLs(c.ConnectedUrl()))
			if reconnected != nil {
				reconnected()
			}
		}),
		LogAsyncErrors(log),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", RedactURLs(urls), redactURLError(err, urls))
	}
	return nc, nil
}

// redactURLError hides the credentials in a URL parse error: net/url's error quotes the whole URL, and a password
// with a character a URL's userinfo may not hold ('^', a space, a '%' not followed by two hex digits) makes one.
// An invalid %-escape is not quoted either, since it may be part of the password. The URL quoted is one piece of
// urls, split at its commas: a piece that RedactURLs hides in urls (the start of user info holding a comma) is
// quoted with neither itself nor the reason, which repeats part of it ("invalid port \":pa\" after host"); so is the
// reason when the user info holds a '/', '?' or '#', where net/url ended the host.
func redactURLError(err error, urls string) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	if RedactURLs(ue.URL) == ue.URL {
		piece := ue.URL
		if _, rest, ok := strings.Cut(piece, "://"); ok {
			piece = rest // the client adds a scheme to a piece without one
		}
		if strings.Contains(RedactURLs(urls), piece) {
			return err
		}
		return fmt.Errorf("%s: a URL of the list is not valid (not shown: it may be part of a user or password; "+
			"the list is split at every comma, so write a comma in a user or password as %%2C)", ue.Op)
	}
	reason := ue.Err
	var esc url.EscapeError
	if errors.As(reason, &esc) {
		reason = errors.New("invalid URL escape (a '%' not followed by two hex digits)")
	}
	if strings.ContainsAny(userInfo(ue.URL), "/?#") {
		// net/url ends the host at the first '/', '?' or '#': it read the start of the user info as the host, and its
		// reason quotes part of it ("invalid port \":s3cr3t\" after host").
		reason = errors.New("a '/', '?' or '#' in a user or password ends the host there: write them as %2F, %3F and %23")
	}
	return fmt.Errorf("%s %q: %w", ue.Op, RedactURLs(ue.URL), reason)
}

// userInfo is what RedactURLs hides of one URL: from its scheme, if any, to its last '@'.
func userInfo(u string) string {
	at := strings.LastIndex(u, "@")
	if at < 0 {
		return ""
	}
	if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
		return u[scheme+3 : at]
	}
	return u[:at]
}

// LogAsyncErrors sends the errors the NATS server reports asynchronously (a permissions violation, a slow
// consumer) to log. Without it the NATS client prints them as plain text on stderr, outside the JSON log.
func LogAsyncErrors(log *slog.Logger) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			log.Error("nats error", "err", err, "subject", sub.Subject)
			return
		}
		log.Error("nats error", "err", err)
	})
}

// PingInterval and MaxPingsOut bound how long a connection to an external NATS server that stopped answering is
// kept: (MaxPingsOut+1) x PingInterval at most. The NATS client counts a ping as answered only by its PONG, which a
// busy server sends behind whatever it was already writing to this client: giving up after 3 x 2 s would reconnect
// (failing every publish in flight) whenever a backlog held a PONG 6 s, so a PONG may be up to 15 s late.
const (
	PingInterval = 5 * time.Second
	MaxPingsOut  = 3
)

// WriteTimeout bounds each write to an external NATS server: one that takes in nothing for that long is not
// reading, and the connection is dropped and made again.
const WriteTimeout = 5 * time.Second

// RedactURLs hides the credentials in comma-separated NATS URLs, for messages and help.
//
// The list is split at every comma, as the NATS client splits it, one in a password too ("nats://alice:pa,ss@n1"):
// the user info then starts in an earlier piece, which has no '@' of its own. So a piece whose user info has no
// scheme before it also hides the pieces without '@' just before it, back to one with a scheme. (A list that mixes
// a URL without credentials and one with them but without a scheme, "nats://n1:4222,u:pw@n2:4222", thus shows
// "nats://***,***@n2:4222": a host hidden, never a password shown.)
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		at := strings.LastIndex(u, "@")
		if at < 0 {
			continue
		}
		// The NATS client also takes URLs without a scheme ("user:pw@host:4222").
		if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
			parts[i] = u[:scheme+3] + "***" + u[at:]
			continue
		}
		parts[i] = "***" + u[at:]
		for j := i - 1; j >= 0 && !strings.Contains(parts[j], "@"); j-- {
			scheme := strings.Index(parts[j], "://")
			if scheme < 0 {
				parts[j] = "***"
				continue
			}
			parts[j] = parts[j][:scheme+3] + "***"
			break
		}
	}
	return strings.Join(parts, ",")
}

// StreamConfig sets the limits of Usher's streams.
type StreamConfig struct {
	// Dedup is the window in which a repeated message id is dropped.
	Dedup time.Duration
	// MaxAge is how long notifications are retained; zero keeps them until MaxBytes.
	MaxAge time.Duration
	// PresenceMaxAge is how long presence events are retained (how far back a client can resume).
	PresenceMaxAge time.Duration
	// LeaseTTL is how long the applier lease lives without renewal.
	LeaseTTL time.Duration
	// Replicas of each stream; zero means 1.
	Replicas int
}

// PresenceDedup is USHER_PRESENCE's de-duplication window. Each presence event still carries its notification's
// noticeId as Nats-Msg-Id, for readers, but exactly-once does not rest on the window: the applier publishes each
// event with the exact sequence it must land at (Nats-Expected-Last-Sequence) and skips those already stored. A long
// window would only hold every id in the server's memory (about 150 B each) for nothing: the shortest JetStream
// allows is 100 ms.
const PresenceDedup = time.Second

// ErrReplicas is wrapped by EnsureStreams's error when the NATS servers cannot keep the replicas asked for: a
// single server asked for more than one, or a cluster with too few JetStream servers up.
var ErrReplicas = errors.New("the NATS servers cannot keep that many replicas")

// JetStream API error codes that mean the replica count cannot be met.
const (
	errCodeNoPeers               = 10005 // no suitable peers for placement
	errCodeNotClustered          = 10006 // JetStream not in clustered mode
	errCodeInsufficientResources = 10023
	errCodeReplicasNotUpdatable  = 10061
	errCodeReplicasNotSupported  = 10074 // replicas > 1 not supported in non-clustered mode
)

// replicaError wraps err with ErrReplicas when JetStream refused the replica count.
func replicaError(what string, replicas int, err error) error {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case errCodeNoPeers, errCodeNotClustered, errCodeReplicasNotUpdatable, errCodeReplicasNotSupported:
			return fmt.Errorf("%w: %d replicas of %s: the server said %q", ErrReplicas, replicas, what, api.Description)
		case errCodeInsufficientResources: // too few servers with room, or JetStream's storage or an account limit full
			return fmt.Errorf("%w: %d replicas of %s: the server said %q (check JetStream's max_file_store and the account's limits too)",
				ErrReplicas, replicas, what, api.Description)
		}
	}
	return fmt.Errorf("create or update %s: %w", what, err)
}

// Buckets are the key-value and object stores EnsureStreams declares.
type Buckets struct {
	Leases      jetstream.KeyValue
	Checkpoints jetstream.ObjectStore
}

// EnsureStreams creates Usher's streams and buckets, or updates them to cfg (limits and replicas alike). When the
// servers cannot keep cfg.Replicas copies its error wraps ErrReplicas and tells what the server said.
//
// A stream or bucket that already has cfg's settings is left alone: an update, even to the same settings, goes
// through the cluster's metadata leader, and every instance's start would otherwise make four of them (seen to
// take more than 10 s on a cluster busy creating those same streams for another instance).
//
// Each attempt has ensureAttempt; one that times out while ctx lasts is made again. On a cluster, two instances
// creating the same stream at once can leave one request without an answer although the stream is created
// (nats-io/nats.go#949); the next attempt finds it.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (Buckets, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, ensureAttempt)
		b, err := ensureStreams(actx, js, cfg)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return b, err
		}
	}
}

// ensureAttempt bounds one attempt of EnsureStreams.
const ensureAttempt = 3 * time.Second

func ensureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (Buckets, error) {
	replicas := max(cfg.Replicas, 1)
	for _, want := range []jetstream.StreamConfig{{
		Name:              NCSStream,
		Description:       "Verified Agora NCS notifications, one subject per channel",
		Subjects:          []string{subject.NCSPrefix + ">", subject.OtherPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            cfg.MaxAge,
		Duplicates:        cfg.Dedup,
		MaxMsgsPerSubject: -1,
		Replicas:          replicas,
	}, {
		Name:              PresenceStream,
		Description:       "Effective presence changes, one subject per channel; seq is the event's seq",
		Subjects:          []string{subject.PresencePrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            cfg.PresenceMaxAge,
		Duplicates:        min(PresenceDedup, cfg.PresenceMaxAge),
		MaxMsgsPerSubject: -1,
		Replicas:          replicas,
	}} {
		if has(ctx, js, want.Name, func(c jetstream.StreamConfig) bool {
			return slices.Equal(c.Subjects, want.Subjects) && c.Retention == want.Retention && c.Discard == want.Discard &&
				c.MaxAge == want.MaxAge && c.Duplicates == want.Duplicates && c.MaxMsgsPerSubject <= 0
		}, want.Description, replicas) {
			continue
		}
		// Usher sets what it relies on; limits an operator set by hand (max_bytes, max_msgs, ...) are kept. Not a
		// limit per subject: it removes a channel's oldest messages from the middle of the stream, where nothing
		// notices (a client resuming on USHER_PRESENCE would miss events without a reset; notifications on
		// USHER_NCS would go before the applier took them).
		if s, err := js.Stream(ctx, want.Name); err == nil {
			c := s.CachedInfo().Config
			c.Description, c.Subjects, c.Storage, c.Retention, c.Discard = want.Description, want.Subjects, want.Storage, want.Retention, want.Discard
			c.MaxAge, c.Duplicates, c.Replicas, c.MaxMsgsPerSubject = want.MaxAge, want.Duplicates, want.Replicas, want.MaxMsgsPerSubject
			want = c
		}
		if _, err := js.CreateOrUpdateStream(ctx, want); err != nil {
			return Buckets{}, replicaError("stream "+want.Name, replicas, err)
		}
	}

	var (
		b   Buckets
		err error
	)
	leases := jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "Who applies notifications to rosters; entries expire unless renewed",
		TTL:         cfg.LeaseTTL,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
	if has(ctx, js, "KV_"+LeaseBucket, func(c jetstream.StreamConfig) bool {
		return c.MaxAge == leases.TTL && c.MaxMsgsPerSubject == 1
	}, leases.Description, replicas) {
		b.Leases, err = js.KeyValue(ctx, LeaseBucket)
	} else {
		b.Leases, err = js.CreateOrUpdateKeyValue(ctx, leases)
	}
	if err != nil {
		return Buckets{}, replicaError("bucket "+LeaseBucket, replicas, err)
	}
	checkpoints := jetstream.ObjectStoreConfig{
		Bucket:      CheckpointBucket,
		Description: "Roster checkpoints, so a restart does not replay all history",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
	if has(ctx, js, "OBJ_"+CheckpointBucket, func(jetstream.StreamConfig) bool { return true }, checkpoints.Description, replicas) {
		b.Checkpoints, err = js.ObjectStore(ctx, CheckpointBucket)
	} else {
		b.Checkpoints, err = js.CreateOrUpdateObjectStore(ctx, checkpoints)
	}
	if err != nil {
		return Buckets{}, replicaError("bucket "+CheckpointBucket, replicas, err)
	}
	return b, nil
}

// has reports whether stream name exists, file-backed, with the description and replicas given and whatever else
// same checks. Any error (the stream is missing, NATS did not answer) answers false: the caller then creates or
// updates it, and reports that call's error.
func has(ctx context.Context, js jetstream.JetStream, name string, same func(jetstream.StreamConfig) bool, description string, replicas int) bool {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return false
	}
	c := s.CachedInfo().Config
	return c.Storage == jetstream.FileStorage && c.Description == description && c.Replicas == replicas && same(c)
}

// fatalTrap keeps the NATS server's fatal error (it logs it and stops starting, rather than exit) besides logging it.
type fatalTrap struct {
	slogAdapter
	msg atomic.Pointer[string]
}

func (f *fatalTrap) Fatalf(format string, v ...any) {
	m := fmt.Sprintf(format, v...)
	f.msg.CompareAndSwap(nil, &m)
	f.slogAdapter.Fatalf(format, v...)
}

// slogAdapter routes the NATS server's log to slog; its start-up banner and notices go to debug.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
