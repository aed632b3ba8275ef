package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/hub"
)

// serve runs the gateway until ctx ends or the server fails.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var (
		cfg                  gateway.Config
		port                 int
		ncsSecrets, logLevel string
		origins, debugAddr   string
		allowCIDRs, proxies  string
		maxBody              int
		demo                 bool
		jwtPrevious          string
		demoRate             float64
	)
	s := newSettings("serve", getenv, stderr)
	s.Int(&port, "port", "PORT", 8080, "HTTP listen port")
	s.Secret(&ncsSecrets, "ncs-secrets", "USHER_NCS_SECRETS", "NCS secrets from Agora's console, comma-separated or one per line; a signature made with any of them is accepted")
	s.Secret(&cfg.JWTSecret, "jwt-secret", "USHER_JWT_SECRET", "HS256 key that signs client tokens")
	s.Secret(&jwtPrevious, "jwt-previous-secrets", "USHER_JWT_PREVIOUS_SECRETS", "during a rotation of USHER_JWT_SECRET: the keys tokens may still be signed with, comma-separated or one per line; accepted, never used to sign")
	s.URLs(&cfg.NATSURL, "nats-url", "USHER_NATS_URL", "", "external NATS server URLs, comma-separated; unset runs the embedded server")
	s.String(&cfg.NATSCreds, "nats-creds", "USHER_NATS_CREDS", "", "NATS credentials file (user JWT and nkey seed) for the external NATS servers")
	s.String(&cfg.NATSCA, "nats-ca", "USHER_NATS_CA", "", "PEM file of the CA that signed the external NATS servers' certificates; unset: the system's roots")
	s.String(&cfg.NATSCert, "nats-cert", "USHER_NATS_CERT", "", "PEM client certificate for NATS servers that verify clients; with USHER_NATS_KEY")
	s.String(&cfg.NATSKey, "nats-key", "USHER_NATS_KEY", "", "PEM private key of USHER_NATS_CERT")
	s.Int(&cfg.Replicas, "replicas", "USHER_REPLICAS", gateway.DefaultReplicas, "copies JetStream keeps of Usher's streams and buckets, 1 to 5; above 1 needs a NATS cluster (3 recommended)")
	s.String(&cfg.InstanceID, "instance-id", "USHER_INSTANCE_ID", "", "this instance's name in the applier lease and logs; unset: host name and process id")
	s.String(&cfg.DataDir, "data-dir", "USHER_DATA_DIR", gateway.DefaultDataDir, "JetStream storage of the embedded NATS server")
	s.String(&cfg.NATSListen, "nats-listen", "USHER_NATS_LISTEN", gateway.DefaultNATSListen, `where the embedded NATS server accepts other backend services, or "off"`)
	s.Secret(&cfg.NATSListenToken, "nats-listen-token", "USHER_NATS_LISTEN_TOKEN", "token the embedded NATS server requires of the backend services on USHER_NATS_LISTEN, at least 16 bytes; unset: any process that reaches it may read and publish")
	s.Duration(&cfg.DedupWindow, "dedup-window", "USHER_DEDUP_WINDOW", gateway.DefaultDedupWindow, "window in which a repeated noticeId is stored once (at least 10m)")
	s.Duration(&cfg.NCSMaxAge, "ncs-max-age", "USHER_NCS_MAX_AGE", gateway.DefaultNCSMaxAge, "how long stored notifications are kept in stream USHER_NCS")
	s.Duration(&cfg.TombstoneRetention, "tombstone-retention", "USHER_TOMBSTONE_RETENTION", gateway.DefaultTombstoneRetention, "how long a leave is remembered against late, older joins; also the replay guard's window (same on every instance)")
	s.Duration(&cfg.CheckpointInterval, "checkpoint-interval", "USHER_CHECKPOINT_INTERVAL", gateway.DefaultCheckpointInterval, "how often the applier saves its rosters while notifications arrive: the most replayed after a crash")
	s.Duration(&cfg.PresenceMaxAge, "presence-max-age", "USHER_PRESENCE_MAX_AGE", gateway.DefaultPresenceMaxAge, "how long stream USHER_PRESENCE keeps events: how far back clients can resume")
	s.String(&origins, "allowed-origins", "USHER_ALLOWED_ORIGINS", "", "comma-separated browser origins (host patterns such as console.example.com or *.example.com) allowed to open WebSockets besides Usher's own")
	s.Int(&cfg.MaxConnections, "max-connections", "USHER_MAX_CONNECTIONS", hub.DefaultMaxConnections, "WebSocket connections this instance holds at most")
	s.Int(&cfg.MaxSubscriptions, "max-subscriptions", "USHER_MAX_SUBSCRIPTIONS", hub.DefaultMaxSubscriptions, "channels one WebSocket connection may subscribe to")
	s.Int(&cfg.RecentEvents, "resume-events", "USHER_RESUME_EVENTS", gateway.DefaultRecentEvents, "presence events (of all channels) each instance keeps in memory, about 300 B each, to answer WebSocket resumes and GET .../events without reading USHER_PRESENCE")
	s.Int(&cfg.MaxPerSubject, "max-connections-per-subject", "USHER_MAX_CONNECTIONS_PER_SUBJECT", hub.DefaultMaxPerSubject, "WebSocket connections one token subject (JWT sub) may hold on this instance; more get 429")
	s.Float(&cfg.UpgradeRate, "ws-upgrade-rate", "USHER_WS_UPGRADE_RATE", gateway.DefaultUpgradeRate, "WebSocket upgrades per second one client address may make after its burst; more get 429")
	s.Int(&cfg.UpgradeBurst, "ws-upgrade-burst", "USHER_WS_UPGRADE_BURST", gateway.DefaultUpgradeBurst, "WebSocket upgrades one client address may make at once")
	s.Int(&maxBody, "max-body-bytes", "USHER_MAX_BODY_BYTES", gateway.DefaultMaxBodyBytes, "largest request body accepted; larger get 413")
	s.Int(&cfg.MaxHeaderBytes, "max-header-bytes", "USHER_MAX_HEADER_BYTES", gateway.DefaultMaxHeaderBytes, "most request header bytes; more get 431")
	s.Duration(&cfg.ReadHeaderTimeout, "read-header-timeout", "USHER_READ_HEADER_TIMEOUT", gateway.DefaultReadHeaderTimeout, "time a client has to send its request headers")
	s.Duration(&cfg.ReadTimeout, "read-timeout", "USHER_READ_TIMEOUT", gateway.DefaultReadTimeout, "time a client has to send a whole request, body included")
	s.Duration(&cfg.WriteTimeout, "write-timeout", "USHER_WRITE_TIMEOUT", gateway.DefaultWriteTimeout, "time to write a response (not WebSocket frames)")
	s.Duration(&cfg.IdleTimeout, "idle-timeout", "USHER_IDLE_TIMEOUT", gateway.DefaultIdleTimeout, "how long an idle keep-alive connection is kept")
	s.String(&cfg.TLSCert, "tls-cert", "USHER_TLS_CERT", "", "PEM certificate chain; with USHER_TLS_KEY the server speaks HTTPS only")
	s.String(&cfg.TLSKey, "tls-key", "USHER_TLS_KEY", "", "PEM private key of USHER_TLS_CERT")
	s.Secret(&cfg.MetricsToken, "metrics-token", "USHER_METRICS_TOKEN", "bearer token GET /metrics requires; unset: /metrics is open")
	s.String(&allowCIDRs, "ncs-allow-cidrs", "USHER_NCS_ALLOW_CIDRS", "", "comma-separated networks (CIDRs or addresses) POST /v1/ncs accepts; unset: any")
	s.String(&proxies, "trusted-proxies", "USHER_TRUSTED_PROXIES", "", "comma-separated networks of load balancers whose X-Forwarded-For names the client; unset: none")
	s.String(&debugAddr, "debug-addr", "USHER_DEBUG_ADDR", "", "host:port for Go's /debug/pprof profiles (keep it on loopback); unset: off")
	s.String(&logLevel, "log-level", "USHER_LOG_LEVEL", "info", "debug, info, warn or error")
	s.Bool(&demo, "demo", "make random secrets, print a console link, and feed a simulated Agora notification stream")
	s.fs.Float64Var(&demoRate, "demo-rate", 5, "with --demo: simulated notifications per second")
	if err := s.Parse(args); err != nil {
		return err
	}
	if port < 0 || port > 65535 {
		return fmt.Errorf("PORT=%d is not a port number (0-65535)", port)
	}
	log, err := newLogger(logLevel, stderr)
	if err != nil {
		return err
	}
	cfg.Addr = ":" + strconv.Itoa(port)
	cfg.NCSSecrets = splitSecrets(ncsSecrets)
	cfg.JWTPreviousSecrets = splitSecrets(jwtPrevious)
	cfg.AllowedOrigins = splitList(origins)
	if cfg.MaxConnections < 1 || cfg.MaxSubscriptions < 1 || cfg.MaxPerSubject < 1 {
		return fmt.Errorf("USHER_MAX_CONNECTIONS, USHER_MAX_SUBSCRIPTIONS and USHER_MAX_CONNECTIONS_PER_SUBJECT must be at least 1")
	}
	if cfg.RecentEvents < 1 {
		return fmt.Errorf("USHER_RESUME_EVENTS is %d: it must be at least 1", cfg.RecentEvents)
	}
	if !(cfg.UpgradeRate > 0) || math.IsInf(cfg.UpgradeRate, 1) || cfg.UpgradeBurst < 1 { // NaN passes every comparison
		return fmt.Errorf("USHER_WS_UPGRADE_RATE must be a finite number above 0 and USHER_WS_UPGRADE_BURST at least 1")
	}
	for name, d := range map[string]time.Duration{"USHER_READ_HEADER_TIMEOUT": cfg.ReadHeaderTimeout,
		"USHER_READ_TIMEOUT": cfg.ReadTimeout, "USHER_WRITE_TIMEOUT": cfg.WriteTimeout, "USHER_IDLE_TIMEOUT": cfg.IdleTimeout} {
		if d <= 0 {
			return fmt.Errorf("%s is %s: it must be positive (a server without timeouts can be held open by anyone)", name, d)
		}
	}
	// The gateway reads a zero as "the default"; from the command line a zero was asked for, and means nothing.
	for _, z := range []struct {
		name string
		zero bool
	}{{"USHER_REPLICAS", cfg.Replicas == 0}, {"USHER_DEDUP_WINDOW", cfg.DedupWindow == 0},
		{"USHER_NCS_MAX_AGE", cfg.NCSMaxAge == 0}, {"USHER_TOMBSTONE_RETENTION", cfg.TombstoneRetention == 0},
		{"USHER_CHECKPOINT_INTERVAL", cfg.CheckpointInterval == 0}, {"USHER_PRESENCE_MAX_AGE", cfg.PresenceMaxAge == 0},
		{"USHER_MAX_BODY_BYTES", maxBody == 0}, {"USHER_MAX_HEADER_BYTES", cfg.MaxHeaderBytes == 0}} {
		if z.zero {
			return fmt.Errorf("%s is 0: give a positive value, or unset it for the default (usher serve --help)", z.name)
		}
	}
	cfg.MaxBodyBytes = int64(maxBody)
	cfg.NCSAllowCIDRs = splitList(allowCIDRs)
	cfg.TrustedProxies = splitList(proxies)
	cfg.Logger = log
	var made demoSecrets
	if demo {
		if len(cfg.NCSSecrets) == 0 {
			cfg.NCSSecrets, made.ncs = []string{randomSecret()}, true
		}
		if cfg.JWTSecret == "" {
			cfg.JWTSecret, made.jwt = randomSecret(), true
		}
	}

	g, err := gateway.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) { // SIGTERM during start-up: a stop, not a failure
			log.Info("stopped during start-up", "err", err)
			return nil
		}
		return err
	}
	if debugAddr != "" {
		stopDebug, err := serveDebug(debugAddr, log)
		if err != nil {
			_ = g.Shutdown(context.Background())
			return err
		}
		defer stopDebug()
	}
	var wg sync.WaitGroup
	demoCtx, stopDemo := context.WithCancel(ctx)
	defer stopDemo()
	if demo {
		if err := startDemo(demoCtx, &wg, g, cfg, made, demoRate, stdout, log); err != nil {
			stopDemo()
			_ = g.Shutdown(context.Background())
			return err
		}
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-g.Done():
	}
	stopDemo()
	wg.Wait()
	if serr := g.Shutdown(context.Background()); serr != nil && err == nil {
		err = serr
	}
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// demoSecrets says which secrets --demo made up: only those are printed.
type demoSecrets struct{ ncs, jwt bool }

// startDemo prints the demo secrets it made and the console link, then feeds the server a simulated stream until
// ctx ends. Secrets the operator gave are never printed.
func startDemo(ctx context.Context, wg *sync.WaitGroup, g *gateway.Gateway, cfg gateway.Config, made demoSecrets, rate float64, stdout io.Writer, log *slog.Logger) error {
	tok, err := auth.Issue(cfg.JWTSecret, []string{auth.Wildcard}, 24*time.Hour, "demo")
	if err != nil {
		return err
	}
	shown := func(secret string, made bool, setting string) string {
		if made {
			return secret
		}
		return "yours, from " + setting + " (not shown)"
	}
	port := g.Addr().String()[strings.LastIndex(g.Addr().String(), ":")+1:]
	fmt.Fprintf(stdout, "Usher demo\n  NCS secret:  %s\n  JWT secret:  %s\n  console:     http://localhost:%s/#token=%s\n",
		shown(cfg.NCSSecrets[0], made.ncs, "USHER_NCS_SECRETS"), shown(cfg.JWTSecret, made.jwt, "USHER_JWT_SECRET"), port, tok)
	wg.Add(1)
	go func() {
		defer wg.Done()
		runDemoFeed(ctx, "http://127.0.0.1:"+port+"/v1/ncs", cfg.NCSSecrets[0], rate, log)
	}()
	return nil
}

func randomSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newLogger logs JSON when stderr is not a terminal, text when it is.
func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("USHER_LOG_LEVEL=%q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}
