// Package gateway is Usher's server side: the HTTP API (gin), the NCS webhook ingester, and NATS/JetStream setup
// (the embedded server or an external cluster).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
)

// Gateway is a running Usher server: its NATS connection (and embedded NATS server, if any) and its HTTP server.
// Start it with Start, stop it with Shutdown. Its methods may be called concurrently.
type Gateway struct {
	cfg  Config
	log  *slog.Logger
	ns   *server.Server // nil when NATS is external
	nc   *nats.Conn
	js   jetstream.JetStream
	ln   net.Listener
	http *http.Server
	ncs  *ncs.Verifier

	served chan error // receives Serve's result once
}

// Start connects to NATS (starting the embedded server when no URL is configured), declares the streams, listens
// on cfg.Addr and serves. On error, everything it started is stopped.
func Start(ctx context.Context, cfg Config) (g *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	g = &Gateway{cfg: cfg, log: cfg.Logger, ncs: ncs.NewVerifier(cfg.NCSSecrets...), served: make(chan error, 1)}
	defer func() {
		if err != nil {
			g.closeNATS()
		}
	}()

	if cfg.NATSURL == "" {
		g.ns, err = bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: cfg.DataDir, Listen: cfg.NATSListen, Logger: g.log})
		if err != nil {
			return nil, err
		}
		if cfg.NATSListen != bus.ListenOff {
			g.log.Info("embedded nats listening", "addr", g.ns.ClientURL())
		}
		g.nc, err = bus.ConnectEmbedded(g.ns, "usher")
	} else {
		g.nc, err = bus.Connect(cfg.NATSURL, "usher", g.log)
	}
	if err != nil {
		return nil, err
	}
	if g.js, err = jetstream.New(g.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err = bus.EnsureStreams(sctx, g.js, bus.StreamConfig{Dedup: cfg.DedupWindow, MaxAge: cfg.NCSMaxAge}); err != nil {
		return nil, err
	}

	if g.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	g.http = &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	go func() {
		err := g.http.Serve(g.ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		g.served <- err
	}()
	g.log.Info("usher listening", "addr", g.ln.Addr().String())
	return g, nil
}

// Addr is the address the HTTP server listens on.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// Done receives the HTTP server's error, or nil, when it stops serving.
func (g *Gateway) Done() <-chan error { return g.served }

// NATSServer is the embedded NATS server, or nil when NATS is external.
func (g *Gateway) NATSServer() *server.Server { return g.ns }

// JetStream is the gateway's JetStream context.
func (g *Gateway) JetStream() jetstream.JetStream { return g.js }

// Shutdown stops accepting requests, waits for those in flight (each ends with a PubAck or an error answer), then
// drains and closes NATS and stops the embedded server. It is bounded by ctx and by Config.ShutdownGrace.
func (g *Gateway) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.ShutdownGrace)
	defer cancel()
	err := g.http.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("http shutdown: %w", err)
		_ = g.http.Close()
	}
	g.closeNATS()
	return err
}

// closeNATS drains the connection (bounded), then stops the embedded server.
func (g *Gateway) closeNATS() {
	if g.nc != nil {
		closed := make(chan struct{})
		g.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := g.nc.Drain(); err != nil {
			g.nc.Close()
		}
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			g.nc.Close()
		}
	}
	if g.ns != nil {
		g.ns.Shutdown()
		g.ns.WaitForShutdown()
	}
}

// Handler is the gateway's HTTP API.
func (g *Gateway) Handler() http.Handler {
	r := gin.New()
	r.Use(gin.Recovery(), errorJSON)
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { _ = c.Error(errNotFound) })
	r.NoMethod(func(c *gin.Context) { _ = c.Error(errMethod) })
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	r.GET("/readyz", g.readyz)
	r.POST("/v1/ncs", g.postNCS)
	mountStatic(r)
	return r
}

// readyz answers 200 while JetStream can serve Usher's stream, 503 otherwise.
func (g *Gateway) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if _, err := g.js.Stream(ctx, bus.NCSStream); err != nil {
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, apiError{Error: "not_ready", Message: "jetstream is not usable: " + err.Error()})
		return
	}
	c.JSON(http.StatusOK, gin.H{"ok": true})
}

func init() { gin.SetMode(gin.ReleaseMode) }
