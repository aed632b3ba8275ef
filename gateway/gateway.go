// Package gateway is Usher's server side: the HTTP API (gin), the NCS webhook ingester, and NATS/JetStream setup
// (the embedded server or an external cluster).
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/hub"
)

// Gateway is a running Usher server: its NATS connection (and embedded NATS server, if any) and its HTTP server.
// Start it with Start, stop it with Shutdown. Its methods may be called concurrently.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	ns     *server.Server // nil when NATS is external
	nc     *nats.Conn
	js     jetstream.JetStream
	ln     net.Listener
	http   *http.Server
	ncs    *ncs.Verifier
	tokens *auth.Verifier

	metrics     *metrics
	handNotices *handoff[string, *ncs.Decoded]   // notifications stored by this instance's ingest, for its applier
	handEvents  *handoff[uint64, presence.Event] // events published by this instance's applier, for its view
	ncsNets     []netip.Prefix                   // USHER_NCS_ALLOW_CIDRS, nil: any source
	proxies     []string                         // USHER_TRUSTED_PROXIES
	upgrades    *addrLimiter
	// reads bounds the reads of stored presence events under way (GET .../events, WebSocket resumes), each with a
	// consumer on the NATS server: a crowd of clients resuming at once after a restart waits its turn.
	reads chan struct{}

	applier *applier
	view    *liveView
	hub     *hub.Hub
	stop    context.CancelFunc // stops the applier and the view
	// stopApplier stops the applier alone: at the start of Shutdown, while the view goes on feeding WebSockets.
	stopApplier context.CancelFunc
	workers     sync.WaitGroup
	ready       readyCheck // /readyz's last answer from JetStream

	shutdownOnce sync.Once // a second Shutdown waited out the grace on the NATS connection the first had closed
	shutdownErr  error

	served chan error // receives Serve's result once
}

// Start connects to NATS (starting the embedded server when no URL is configured), declares the streams, listens
// on cfg.Addr and serves. On error, everything it started is stopped.
func Start(ctx context.Context, cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	g := &Gateway{cfg: cfg, log: cfg.Logger, ncs: ncs.NewVerifier(cfg.NCSSecrets...), tokens: auth.NewVerifier(cfg.JWTSecret, cfg.JWTPreviousSecrets...),
		served: make(chan error, 1), stop: func() {}, metrics: newMetrics(), proxies: cfg.TrustedProxies,
		upgrades: newAddrLimiter(cfg.UpgradeRate, cfg.UpgradeBurst), reads: make(chan struct{}, maxEventReads),
		handNotices: byID[*ncs.Decoded](handoffSize), handEvents: bySeq[presence.Event](handoffSize)}
	if len(cfg.NCSAllowCIDRs) > 0 {
		g.ncsNets, _ = parseNets("USHER_NCS_ALLOW_CIDRS", cfg.NCSAllowCIDRs) // Validate checked them
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("USHER_TLS_CERT/USHER_TLS_KEY: %w", err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	natsOpts, err := natsOptions(cfg)
	if err != nil {
		return nil, err
	}
	if err := g.start(ctx, natsOpts, tlsCfg); err != nil {
		// Whatever start got to: the hub, the applier and view, the NATS connection, the embedded server.
		if g.hub != nil {
			g.hub.Close(context.Background())
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
		defer cancel()
		g.closeNATS(ctx, g.stopWorkers(ctx))
		return nil, err
	}
	return g, nil
}

// start does Start's work after the settings are checked; on error the caller stops what it started.
func (g *Gateway) start(ctx context.Context, natsOpts []nats.Option, tlsCfg *tls.Config) (err error) {
	cfg := g.cfg
	if cfg.NATSURL == "" {
		if err := writable(cfg.DataDir); err != nil {
			return fmt.Errorf("USHER_DATA_DIR %q cannot hold JetStream's files: %w", cfg.DataDir, err)
		}
		g.ns, err = bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: cfg.DataDir, Listen: cfg.NATSListen, Token: cfg.NATSListenToken, Logger: g.log})
		if err != nil {
			return err
		}
		if cfg.NATSListen != bus.ListenOff {
			g.log.Info("embedded nats listening", "addr", g.ns.ClientURL(), "token", cfg.NATSListenToken != "")
		}
		opts := []nats.Option{bus.LogAsyncErrors(g.log)}
		if cfg.NATSListenToken != "" {
			opts = append(opts, nats.Token(cfg.NATSListenToken))
		}
		g.nc, err = bus.ConnectEmbedded(g.ns, "usher", opts...)
	} else {
		g.nc, err = bus.Connect(cfg.NATSURL, "usher-"+cfg.InstanceID, g.log, g.metrics.natsReconnects.Inc, natsOpts...)
	}
	if err != nil {
		return err
	}
	// A notification is stored as one message with its headers: a body the server cannot take would be refused by
	// every publish, answered 503, and retried by Agora for ever.
	if most := g.nc.MaxPayload() - storedHeaderRoom; cfg.MaxBodyBytes > most {
		return fmt.Errorf("USHER_MAX_BODY_BYTES is %d: the NATS server takes messages of at most %d bytes, headers "+
			"included, so bodies of at most %d; lower it, or raise the server's max_payload", cfg.MaxBodyBytes, g.nc.MaxPayload(), most)
	}
	// An asynchronous publish whose PubAck never comes (lost in a stream leader change, say) stays in the library's
	// table of pending publishes until a reconnect, unless it times out; at 4,000 of them every publish fails. The
	// applier gives up on an acknowledgement after effectTimeout; the library forgets it a little later.
	if g.js, err = jetstream.New(g.nc, jetstream.WithPublishAsyncTimeout(pubAckForget)); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	buckets, err := bus.EnsureStreams(sctx, g.js, bus.StreamConfig{
		Dedup: cfg.DedupWindow, MaxAge: cfg.NCSMaxAge, PresenceMaxAge: cfg.PresenceMaxAge, LeaseTTL: cfg.LeaseTTL,
		Replicas: cfg.Replicas,
	})
	switch {
	case errors.Is(err, bus.ErrReplicas):
		return fmt.Errorf("USHER_REPLICAS is %d: %w (a NATS cluster of at least %d JetStream servers, all up, keeps them; or lower USHER_REPLICAS)",
			cfg.Replicas, err, cfg.Replicas)
	case err != nil && cfg.Replicas > 1 && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("USHER_REPLICAS is %d: the NATS servers did not set up Usher's streams within 10 s; is JetStream up, "+
			"with a leader, on at least %d servers of the cluster? (%w)", cfg.Replicas, cfg.Replicas, err)
	}
	if err != nil {
		return err
	}
	g.warnLimitsSetByHand(sctx)
	rules := presence.Rules{Retention: cfg.TombstoneRetention}
	g.applier = &applier{js: g.js, buckets: buckets, rules: rules, ttl: cfg.LeaseTTL, every: cfg.CheckpointInterval, id: cfg.InstanceID,
		log: g.log.With("component", "applier"), metrics: g.metrics, decoded: g.handNotices, events: g.handEvents}
	g.hub = hub.New(hub.Config{
		MaxConnections: cfg.MaxConnections, MaxSubscriptions: cfg.MaxSubscriptions, MaxPerSubject: cfg.MaxPerSubject,
		OriginPatterns: cfg.AllowedOrigins, PingInterval: cfg.PingInterval, SendQueue: cfg.SendQueue,
		DeliveryLatency: g.metrics.delivery, Logger: g.log.With("component", "hub"),
	}, hubSource{g}, g.tokens)
	g.view = newLiveView(g.js, buckets.Checkpoints, rules, g.log.With("component", "view"), g.hub.Publish)
	g.view.events = g.handEvents
	g.view.recent = newRecentEvents(cfg.RecentEvents)
	g.view.onGap = func() { g.hub.Resync("presence state reloading; reconnect and resume") }
	g.metrics.observeState(g)
	wctx, stop := context.WithCancel(context.Background())
	actx, stopApplier := context.WithCancel(wctx)
	g.stop, g.stopApplier = stop, stopApplier
	g.workers.Go(func() { g.applier.run(actx) })
	g.workers.Go(func() { g.view.run(wctx) })
	if err = g.catchUp(ctx); err != nil {
		return err
	}

	if g.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	g.http = &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		TLSConfig:         tlsCfg,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	go func() {
		var err error
		if tlsCfg != nil {
			err = g.http.ServeTLS(g.ln, "", "")
		} else {
			err = g.http.Serve(g.ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		g.served <- err
	}()
	g.log.Info("usher listening", "addr", g.ln.Addr().String(), "tls", tlsCfg != nil, "instance", cfg.InstanceID,
		"replicas", cfg.Replicas)
	return nil
}

// writable makes dir if it is missing and checks that a file can be made in it.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".usher-write-check-*")
	if err != nil {
		return err
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

// natsOptions are the credentials and TLS settings for external NATS servers. Their files are read now, so that a
// bad one stops start-up with a line naming its setting rather than failing each connection attempt.
func natsOptions(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.NATSCreds != "" {
		creds := nats.UserCredentials(cfg.NATSCreds)
		var o nats.Options
		if err := creds(&o); err != nil {
			return nil, fmt.Errorf("USHER_NATS_CREDS: %w", err)
		}
		if _, err := o.UserJWT(); err != nil {
			return nil, fmt.Errorf("USHER_NATS_CREDS: %w", err)
		}
		if _, err := o.SignatureCB([]byte("usher")); err != nil {
			return nil, fmt.Errorf("USHER_NATS_CREDS: %w", err)
		}
		opts = append(opts, creds)
	}
	if cfg.NATSCA != "" {
		pem, err := os.ReadFile(cfg.NATSCA)
		if err != nil {
			return nil, fmt.Errorf("USHER_NATS_CA: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("USHER_NATS_CA: %s holds no PEM certificate", cfg.NATSCA)
		}
		opts = append(opts, nats.RootCAs(cfg.NATSCA))
	}
	if cfg.NATSCert != "" {
		if _, err := tls.LoadX509KeyPair(cfg.NATSCert, cfg.NATSKey); err != nil {
			return nil, fmt.Errorf("USHER_NATS_CERT/USHER_NATS_KEY: %w", err)
		}
		opts = append(opts, nats.ClientCert(cfg.NATSCert, cfg.NATSKey))
	}
	return opts, nil
}

// Addr is the address the HTTP server listens on.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// Done receives the HTTP server's error, or nil, when it stops serving.
func (g *Gateway) Done() <-chan error { return g.served }

// NATSServer is the embedded NATS server, or nil when NATS is external.
func (g *Gateway) NATSServer() *server.Server { return g.ns }

// JetStream is the gateway's JetStream context.
func (g *Gateway) JetStream() jetstream.JetStream { return g.js }

// Shutdown stops accepting requests and waits for those in flight (each ends with a PubAck or an error answer);
// meanwhile the applier saves its checkpoint and gives up its lease, so that another instance takes over while
// the last requests finish (what they store after the checkpoint, the next applier applies), and the view goes on
// feeding this instance's WebSockets. Then it closes the WebSockets, stops the view, drains and closes NATS and
// stops the embedded server. It is bounded by ctx and by Config.ShutdownGrace. A later call waits for the first to
// end and returns its result.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutdownOnce.Do(func() { g.shutdownErr = g.shutdown(ctx) })
	return g.shutdownErr
}

func (g *Gateway) shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.ShutdownGrace)
	defer cancel()
	g.stopApplier() // it stops by itself; stopWorkers waits for it
	err := g.http.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("http shutdown: %w", err)
		_ = g.http.Close()
	}
	if g.hub != nil {
		g.hub.Close(ctx) // WebSockets are hijacked: http.Server.Shutdown does not wait for them
	}
	g.closeNATS(ctx, g.stopWorkers(ctx))
	return err
}

// stopWorkers stops the applier (which saves a checkpoint and releases its lease) and the view, and waits for them
// until ctx ends; the channel it returns is closed once they have stopped. Workers still running then are stopped
// by closeNATS: with the connection closed, their NATS calls fail at once.
func (g *Gateway) stopWorkers(ctx context.Context) <-chan struct{} {
	g.stop()
	done := make(chan struct{})
	go func() { g.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.log.Warn("the applier and view did not stop within the shutdown grace; closing NATS under them")
	}
	return done
}

// closeNATS drains the connection until ctx ends (then closes it), waits for the workers (stopped: closed by
// stopWorkers), and stops the embedded server.
func (g *Gateway) closeNATS(ctx context.Context, stopped <-chan struct{}) {
	if g.nc != nil {
		closed := make(chan struct{})
		g.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := g.nc.Drain(); err != nil {
			g.nc.Close()
		}
		select {
		case <-closed:
		case <-ctx.Done():
			g.nc.Close()
		}
	}
	// With the connection closed, a worker that outlived ctx ends promptly; wait for it, bounded all the same.
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		g.log.Error("the applier or view is still running after NATS was closed")
	}
	if g.ns != nil {
		g.ns.Shutdown()
		g.ns.WaitForShutdown()
	}
}

// Handler is the gateway's HTTP API.
func (g *Gateway) Handler() http.Handler {
	r := gin.New()
	_ = r.SetTrustedProxies(g.proxies) // Validate checked them; nil trusts no proxy
	if len(g.proxies) > 0 {
		r.Use(forwardedWithoutPorts)
	}
	r.Use(g.requestLog, g.recovery, errorJSON)
	r.HandleMethodNotAllowed = true
	// No 307 to the path without its trailing slash: gin answers that before any middleware, so a callback URL
	// configured as /v1/ncs/ would get empty, unlogged, uncounted redirects. It is a 404 JSON error like any path.
	r.RedirectTrailingSlash = false
	r.NoRoute(func(c *gin.Context) { _ = c.Error(errNotFound) })
	r.NoMethod(func(c *gin.Context) { _ = c.Error(errMethod) })
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	r.GET("/readyz", g.readyz)
	r.GET("/metrics", g.serveMetrics())
	if g.ncsNets != nil {
		r.POST("/v1/ncs", g.allowSources(g.ncsNets), g.postNCS)
	} else {
		r.POST("/v1/ncs", g.postNCS)
	}
	r.GET("/v1/ws", g.limitUpgrades(g.upgrades), g.serveWS)
	api := r.Group("/v1", g.requireToken)
	api.GET("/channels", g.getChannels)
	api.GET("/channels/:channel/presence", g.getPresence)
	api.GET("/channels/:channel/events", g.getEvents)
	mountStatic(r)
	return r
}

// catchUp waits until this instance's view holds every presence event stored before it started (when it loaded its
// rosters), so that the first snapshot it serves is complete. It is bounded by ViewCatchUp; past that the gateway
// serves anyway, and /readyz answers 503 until the view has caught up.
func (g *Gateway) catchUp(ctx context.Context) error {
	wctx, wcancel := context.WithTimeout(ctx, g.cfg.ViewCatchUp)
	defer wcancel()
	if err := g.view.waitCaughtUp(wctx); err != nil {
		g.log.Warn("serving before the presence view caught up", "err", err)
	}
	return nil
}

// readyz answers 200 while JetStream can serve Usher's streams and this instance's rosters are loaded, 503
// otherwise.
func (g *Gateway) readyz(c *gin.Context) {
	if err := g.jetStreamUsable(c.Request.Context()); err != nil {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, apiError{Error: "not_ready", Message: "jetstream is not usable: " + err.Error()})
		return
	}
	if !g.view.ready.Load() {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, apiError{Error: "not_ready", Message: errViewLoading.Error()})
		return
	}
	// The target is the stream's last event when the view loaded its rosters (at start, or again after it missed
	// events or found the stream made anew): of the stream it follows, never of one that was replaced.
	if ok, seq, target := g.view.caughtUp(); !ok {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, apiError{Error: "not_ready",
			Message: fmt.Sprintf("rosters are loading: at presence event %d of %d", seq, target)})
		return
	}
	c.JSON(http.StatusOK, gin.H{"ok": true})
}

func init() { gin.SetMode(gin.ReleaseMode) }

// Applying reports whether this instance holds the applier lease now.
func (g *Gateway) Applying() bool { return g.applier.leading.Load() }

// HubStats returns the WebSocket hub's counters.
func (g *Gateway) HubStats() hub.Stats { return g.hub.Stats() }

// warnLimitsSetByHand logs a warning for each limit an operator set by hand on USHER_NCS that can remove
// notifications before their max age (kept by EnsureStreams): one acknowledged and not yet applied (the applier down
// or behind) would be lost, without a word from JetStream.
func (g *Gateway) warnLimitsSetByHand(ctx context.Context) {
	s, err := g.js.Stream(ctx, bus.NCSStream)
	if err != nil {
		return
	}
	c := s.CachedInfo().Config
	if c.MaxBytes > 0 || c.MaxMsgs > 0 {
		g.log.Warn("USHER_NCS has a limit set by hand: notifications past it are removed oldest first, even acknowledged ones "+
			"the applier has not applied yet; keep it far above what arrives while the applier may be down",
			"max_bytes", c.MaxBytes, "max_msgs", c.MaxMsgs)
	}
}

// readyCheckEvery is how long /readyz reuses its last answer from JetStream: /readyz needs no token, and a request
// to NATS for each call would let anyone load the server with it.
const readyCheckEvery = time.Second

// readyCheck is the last answer to "is JetStream usable", for /readyz.
type readyCheck struct {
	mu   sync.Mutex
	at   time.Time
	err  error
	asks atomic.Int64 // questions put to JetStream, for tests
}

// jetStreamUsable asks JetStream for USHER_NCS, at most once every readyCheckEvery; callers in between get the last
// answer (one that comes while another asks waits for that answer).
func (g *Gateway) jetStreamUsable(ctx context.Context) error {
	r := &g.ready
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && time.Since(r.at) < readyCheckEvery {
		return r.err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r.asks.Add(1)
	_, err := g.js.Stream(ctx, bus.NCSStream)
	if ctx.Err() != nil && err != nil && errors.Is(err, context.Canceled) {
		return err // this caller went away: not an answer for the others
	}
	r.at, r.err = time.Now(), err
	return err
}
