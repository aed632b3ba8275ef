package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/gateway/subject"
	"github.com/usher-presence/usher/test/testutil"
)

// TestStartFailsCleanly makes Start fail after it connected to NATS and started its workers: it must return the
// error (not panic) and stop what it started, so that the same data directory can be used again at once.
func TestStartFailsCleanly(t *testing.T) {
	t.Parallel()
	t.Run("port taken", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		dir := t.TempDir()
		cfg := testConfig(t, dir)
		cfg.Addr = ln.Addr().String()
		if g, err := gateway.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "listen on") {
			if g != nil {
				_ = g.Shutdown(context.Background())
			}
			t.Fatalf("got %v, want a listen error", err)
		}
		// The embedded server and its store were released: a second start on the same directory works.
		startGateway(t, testConfig(t, dir))
	})
	t.Run("replicas on a single server", func(t *testing.T) {
		t.Parallel()
		ns := testutil.NATSServer(t, "127.0.0.1:-1")
		cfg := testConfig(t, "")
		cfg.NATSURL, cfg.Replicas = ns.ClientURL(), 3
		_, err := gateway.Start(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "USHER_REPLICAS is 3") || !strings.Contains(err.Error(), "non-clustered") ||
			strings.Contains(err.Error(), "\n") {
			t.Fatalf("got %v, want one line naming USHER_REPLICAS and what the server said", err)
		}
		testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() (bool, string) {
			return ns.NumClients() == 0, "NATS connections left open after a failed start"
		})
	})
}

// TestNATSOverTLS connects to a NATS server that requires TLS, trusting its certificate through USHER_NATS_CA;
// without it the connection is refused.
func TestNATSOverTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := writeCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ns := testutil.NATSServerWith(t, &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		TLS: true, TLSTimeout: 2, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
	})
	url := strings.Replace(ns.ClientURL(), "nats://", "tls://", 1)

	cfg := testConfig(t, "")
	cfg.NATSURL = url
	if g, err := gateway.Start(context.Background(), cfg); err == nil {
		_ = g.Shutdown(context.Background())
		t.Fatal("connected over TLS without trusting the server's certificate")
	}

	cfg.NATSCA = certFile
	_, base := startGateway(t, cfg)
	if a := postSigned(t, base, audienceJoin("tls-1", "show-1", 1, 1)); a.Status != 200 {
		t.Fatalf("got %d %s", a.Status, a.Raw)
	}
}

// TestShutdownWithoutNATS shuts a gateway down after its NATS server died: the checkpoint, the lease release and
// the drain cannot complete, and Shutdown must still return within its grace (plus the bounded wait for the
// workers after the connection is closed), not after each step's own timeout in turn.
func TestShutdownWithoutNATS(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1") // shut down below, while the gateway runs
	cfg := testConfig(t, "")
	cfg.NATSURL = ns.ClientURL()
	cfg.ShutdownGrace = 2 * time.Second
	g, err := gateway.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + g.Addr().String()
	if a := postSigned(t, base, audienceJoin("gone-1", "show-1", 1, 1)); a.Status != 200 {
		t.Fatalf("got %d %s", a.Status, a.Raw)
	}
	waitSnapshot(t, base, "show-1", func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })
	ns.Shutdown()
	ns.WaitForShutdown()

	start := time.Now()
	done := make(chan struct{})
	go func() { _ = g.Shutdown(context.Background()); close(done) }()
	// 2 s of grace, up to 2 s for the workers once the connection is closed, and slack for a loaded machine. Each
	// step's own timeout in turn (checkpoint 10 s, lease 2 s, drain 5 s) would take 17 s.
	select {
	case <-done:
		t.Logf("shutdown without NATS took %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(8 * time.Second):
		t.Fatalf("Shutdown still running %s after NATS died, with a grace of 2 s", time.Since(start).Round(time.Second))
	}
}

// TestNATSAsyncErrorsLogged runs the gateway as a NATS user that may not publish to usher.other.>, and posts a
// notification that names no channel. The NATS server refuses the publish with an asynchronous error; it must reach
// Usher's log (JSON, as every line), not the NATS client's default handler, which prints plain text on stderr.
func TestNATSAsyncErrorsLogged(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServerWith(t, &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: "usher", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{"usher.ncs.>", "usher.presence.>", "$JS.API.>",
				"$KV.USHER_LEASES.>", "$O.USHER_CHECKPOINTS.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}},
	})
	var logs testutil.SyncBuffer
	cfg := testConfig(t, "")
	cfg.NATSURL = strings.Replace(ns.ClientURL(), "nats://", "nats://usher:pw@", 1)
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	_, base := startGateway(t, cfg)

	body := notification("other-1", 999, map[string]any{"x": 1}) // no channel: usher.other.1.999
	if a := postSigned(t, base, body); a.Status != http.StatusServiceUnavailable {
		t.Fatalf("a notification the NATS user may not publish: %d %s, want 503", a.Status, a.Raw)
	}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() (bool, string) {
		for line := range strings.Lines(logs.String()) {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(fmt.Sprint(rec["err"]), "ermissions") &&
				strings.Contains(line, "usher.other.1.999") {
				return true, ""
			}
		}
		return false, "no log line about the NATS server's permissions violation:\n" + logs.String()
	})
}

// TestNATSReconnectsCounted cuts the gateway off from NATS behind a proxy that still accepts TCP connections (as a
// load balancer in front of NATS does) and closes each at once: the NATS client's attempts are not reconnections,
// and usher_nats_reconnects_total must stay 0 until the connection is back, then count 1.
func TestNATSReconnectsCounted(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	proxy := testutil.NewCutProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	cfg := testConfig(t, "")
	cfg.NATSURL = "nats://" + proxy.Addr()
	_, base := startGateway(t, cfg)
	if m := scrape(t, base, ""); m["usher_nats_connected"] != 1 || m["usher_nats_reconnects_total"] != 0 {
		t.Fatalf("at start: connected %v, reconnects %v", m["usher_nats_connected"], m["usher_nats_reconnects_total"])
	}
	proxy.Cut()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return scrape(t, base, "")["usher_nats_connected"] == 0, "still connected after the cut"
	})
	time.Sleep(3 * time.Second) // the client tries again every 2 s (its default ReconnectWait)
	if m := scrape(t, base, ""); m["usher_nats_connected"] != 0 || m["usher_nats_reconnects_total"] != 0 {
		t.Fatalf("while cut off: connected %v, reconnects %v; want 0 and 0", m["usher_nats_connected"], m["usher_nats_reconnects_total"])
	}
	proxy.Restore()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		m := scrape(t, base, "")
		return m["usher_nats_connected"] == 1 && m["usher_nats_reconnects_total"] == 1,
			fmt.Sprintf("connected %v, reconnects %v; want 1 and 1", m["usher_nats_connected"], m["usher_nats_reconnects_total"])
	})
}

// blackHole forwards TCP connections to a target until Swallow, after which the connections open until then stay
// open but everything sent on them, either way, is dropped: a NATS server whose machine died or was cut off without
// a reset (no FIN, no RST reaches the client). Connections made after Swallow are forwarded.
type blackHole struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*holeConn
}

type holeConn struct {
	a, b      net.Conn
	swallowed atomic.Bool
	stalled   atomic.Bool // nothing more is read from either side: what is sent piles up in the sockets' buffers
}

func newBlackHole(t *testing.T, target string) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &blackHole{ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			hc := &holeConn{a: c, b: up}
			h.mu.Lock()
			h.conns = append(h.conns, hc)
			h.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					if hc.stalled.Load() {
						return // the connections stay open, unread, until the test ends
					}
					n, err := src.Read(buf)
					if n > 0 && !hc.swallowed.Load() {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						_ = dst.Close()
						return
					}
				}
			}
			wg.Go(func() { pipe(up, c) })
			wg.Go(func() { pipe(c, up) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		h.mu.Lock()
		for _, c := range h.conns {
			_ = c.a.Close()
			_ = c.b.Close()
		}
		h.mu.Unlock()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the black hole's goroutines did not stop within 10 s")
		}
	})
	return h
}

func (h *blackHole) Addr() string { return h.ln.Addr().String() }

// Swallow drops, from now on, everything sent on the connections open now.
func (h *blackHole) Swallow() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.swallowed.Store(true)
	}
}

// Stall stops reading, from now on, the connections open now, either way, and leaves them open: a NATS server that
// stopped reading its clients (hung, or its machine cut off), whose clients' writes block once the buffers are full.
func (h *blackHole) Stall() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.stalled.Store(true)
	}
}

// TestNATSSilentDeathDetected: the NATS server the gateway is connected to stops answering without closing the
// connection (its machine lost power, a network partition). The gateway must notice within about 20 s, say so in
// usher_nats_connected, and reconnect (here through the same address, whose new connections work), so that
// notifications are stored again; with the NATS client's default pings (every 2 minutes, 2 unanswered) that took
// 4 to 6 minutes of 503s.
func TestNATSSilentDeathDetected(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	hole := newBlackHole(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	cfg := testConfig(t, "")
	cfg.NATSURL = "nats://" + hole.Addr()
	_, base := startGateway(t, cfg)
	if a := postSigned(t, base, audienceJoin("hole-0", "show-1", 1, 1)); a.Status != 200 {
		t.Fatalf("before: %d %s", a.Status, a.Raw)
	}
	hole.Swallow()
	start := time.Now()
	down := false
	testutil.Eventually(t, 45*time.Second, 100*time.Millisecond, func() (bool, string) { // pings: 20 s at most
		m := scrape(t, base, "")
		down = down || m["usher_nats_connected"] == 0
		return down && m["usher_nats_reconnects_total"] >= 1, fmt.Sprintf("connected %v, reconnects %v",
			m["usher_nats_connected"], m["usher_nats_reconnects_total"])
	})
	t.Logf("reconnected %s after the server went silent", time.Since(start).Round(time.Millisecond))
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() (bool, string) {
		a := postSigned(t, base, audienceJoin("hole-1", "show-1", 2, 1))
		return a.Status == 200, a.Raw
	})
}

// USHER_PRESENCE restored from a backup older than what the views read, while Usher runs: the stream keeps its
// epoch (NATS restores its creation time) but its seqs go back. A view must not wait at its seq for events that
// will be other ones: it stops serving, closing its WebSockets with 1012, and loads again.
func TestViewReloadsAStreamRestoredFromBackup(t *testing.T) {
	t.Parallel()
	dir, listen := t.TempDir(), fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	start := func() *server.Server {
		ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: dir, Listen: listen})
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	stop := func(ns *server.Server) { ns.Shutdown(); ns.WaitForShutdown() }
	ns := start()
	t.Cleanup(func() { stop(ns) })
	cfg := testConfig(t, "")
	cfg.NATSURL = ns.ClientURL()
	_, base := startGateway(t, cfg)
	const ch = "show-1"
	joinAudience(t, base, ch, 1, 2, 3)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })

	// The backup: USHER_PRESENCE's files, copied while the server is down.
	var streamDir string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == bus.PresenceStream && filepath.Base(filepath.Dir(p)) == "streams" {
			streamDir = p
		}
		return nil
	})
	if streamDir == "" {
		t.Fatal("no USHER_PRESENCE directory under the store")
	}
	backup := filepath.Join(t.TempDir(), "backup")
	stop(ns)
	if err := os.CopyFS(backup, os.DirFS(streamDir)); err != nil {
		t.Fatal(err)
	}
	ns = start()
	for uid := uint32(4); uid <= 5; uid++ { // once the gateway is connected again (the same notice: stored once)
		body := audienceJoin(fmt.Sprintf("after-backup-%d", uid), ch, uid, int64(uid))
		testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() (bool, string) {
			a := postSigned(t, base, body)
			return a.Status == 200, a.Raw
		})
	}
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 5 })
	c := mustDial(t, base, token(t, ch))
	c.subscribe(ch)
	c.expect("subscribed", ch)
	c.expect("snapshot", ch)

	// The restore.
	stop(ns)
	if err := os.RemoveAll(streamDir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(streamDir, os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}
	ns = start()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, _, err := c.conn.Read(ctx)
		if err == nil {
			continue
		}
		if status := websocket.CloseStatus(err); status != websocket.StatusServiceRestart {
			t.Fatalf("the WebSocket got %v (status %d), want a close with 1012", err, status)
		}
		return
	}
}

// TestNATSStalledWritesBounded: the NATS server stops reading what the gateway sends (hung, or cut off without a
// reset). Once the socket buffers are full, the NATS client's write blocks, and it holds the connection's lock
// meanwhile: every publish, and Shutdown's drain, waits behind it. With the client's default write timeout (1
// minute), notifications were answered after a minute instead of 503 within the publish timeout.
func TestNATSStalledWritesBounded(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	hole := newBlackHole(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	cfg := testConfig(t, "")
	cfg.NATSURL = "nats://" + hole.Addr()
	g, err := gateway.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + g.Addr().String()
	if a := postSigned(t, base, audienceJoin("stall-0", "show-1", 1, 1)); a.Status != 200 {
		t.Fatalf("before: %d %s", a.Status, a.Raw)
	}
	hole.Stall()
	// Large notifications, enough to fill the sockets' buffers between the gateway and the stalled server.
	pad := strings.Repeat("x", 60<<10)
	client := &http.Client{Timeout: 30 * time.Second}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		slowest time.Duration
		failed  int
	)
	sem := make(chan struct{}, 32)
	for i := range 400 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			body := notification(fmt.Sprintf("stall-big-%d", i), ncs.AudienceJoin, map[string]any{
				"channelName": "show-1", "uid": i + 2, "platform": 1, "clientSeq": 1, "ts": time.Now().Unix(), "pad": pad})
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/ncs", bytes.NewReader(body))
			req.Header = signed(testSecret, body)
			start := time.Now()
			resp, err := client.Do(req)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			slowest = max(slowest, d)
			if err != nil {
				failed++
				return
			}
			_ = resp.Body.Close()
		})
	}
	wg.Wait()
	if failed > 0 || slowest > 12*time.Second {
		t.Errorf("with the NATS server not reading: %d notifications unanswered within 30 s, the slowest answered after %s; "+
			"want every one answered within a few seconds (publish timeout %s)", failed, slowest.Round(time.Millisecond), gateway.DefaultPublishTimeout)
	}
	t.Logf("with the NATS server not reading, the slowest notification was answered after %s", slowest.Round(time.Millisecond))
	start := time.Now()
	_ = g.Shutdown(context.Background())
	if d := time.Since(start); d > gateway.DefaultShutdownGrace+5*time.Second {
		t.Errorf("Shutdown took %s (grace %s)", d.Round(time.Millisecond), gateway.DefaultShutdownGrace)
	}
}

// A second Shutdown returns the first's result at once: it waited out the whole grace on the NATS connection the
// first had closed (a test's cleanup after the test had stopped its gateway took 10 s).
func TestShutdownTwice(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.ShutdownGrace = 30 * time.Second
	g, _ := startGatewayToStop(t, cfg)
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second Shutdown has not returned after 5 s (the grace is 30 s)")
	}
}

// TestNATSReconnectLogHidesToken: a NATS server that takes a token, given in USHER_NATS_URL as its user info
// ("nats://<token>@host"), as the NATS documentation shows: the line logged when the connection comes back names
// the server without the token (or a user and password), as every message that names USHER_NATS_URL does.
func TestNATSReconnectLogHidesToken(t *testing.T) {
	t.Parallel()
	const natsToken = "nats-token-do-not-log"
	ns := testutil.NATSServerWith(t, &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Authorization: natsToken,
	})
	proxy := testutil.NewCutProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	var logs testutil.SyncBuffer
	cfg := testConfig(t, "")
	cfg.NATSURL = "nats://" + natsToken + "@" + proxy.Addr()
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, base := startGateway(t, cfg)
	proxy.Cut()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return scrape(t, base, "")["usher_nats_connected"] == 0, "still connected after the cut"
	})
	proxy.Restore()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return strings.Contains(logs.String(), "nats reconnected"), "no reconnection logged:\n" + logs.String()
	})
	if out := logs.String(); strings.Contains(out, natsToken) {
		t.Fatalf("the log holds the NATS token:\n%s", out)
	}
	if !strings.Contains(logs.String(), "***@"+proxy.Addr()) {
		t.Errorf("the reconnection line does not name the server:\n%s", logs.String())
	}
}

// TestNATSListenToken: with USHER_NATS_LISTEN_TOKEN, the embedded server's listener takes only the clients that
// give the token. Usher's own in-process connection gives it too, so notifications are stored and applied as
// without one, and a backend service with the token reads them on their subject. The token is never logged.
func TestNATSListenToken(t *testing.T) {
	t.Parallel()
	const natsToken = "listen-token-do-not-log"
	var logs testutil.SyncBuffer
	cfg := testConfig(t, t.TempDir())
	cfg.NATSListen, cfg.NATSListenToken = "127.0.0.1:-1", natsToken
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, base := startGateway(t, cfg)
	url := g.NATSServer().ClientURL()

	for name, opts := range map[string][]nats.Option{
		"no token":      nil,
		"another token": {nats.Token("another-token-0123456789")},
		"a user":        {nats.UserInfo("usher", natsToken)},
	} {
		nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Fatalf("a client with %s connected", name)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("a client with %s: %v, want %v", name, err, nats.ErrAuthorization)
		}
	}
	nc, err := nats.Connect(url, nats.Token(natsToken))
	if err != nil {
		t.Fatalf("a client with the token: %v", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(subject.NCS("show"))
	if err != nil || nc.Flush() != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if a := postSigned(t, base, audienceJoin("n-1", "show", 7, 1)); a.Status != http.StatusOK {
		t.Fatalf("POST /v1/ncs: %d %s", a.Status, a.Raw)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || m.Header.Get(nats.MsgIdHdr) != "n-1" {
		t.Fatalf("the backend service read %v (%v), want the notification n-1", m, err)
	}
	waitSnapshot(t, base, "show", func(s presence.Snapshot) bool { return len(s.Audience) == 1 })
	if out := logs.String(); strings.Contains(out, natsToken) {
		t.Fatalf("the log holds the token:\n%s", out)
	} else if !strings.Contains(out, `"token":true`) {
		t.Errorf("the embedded listener's line does not say it requires a token:\n%s", out)
	}
}
