package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

// TestLogsHoldNoSecrets runs traffic with every secret in play (NCS secret, JWT secret, client tokens in a
// header, a subprotocol and a query string, a metrics token, a forged signature) and checks that the debug-level
// log names none of them, while it does log each request with an id.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	var logs testutil.SyncBuffer
	cfg := testConfig(t, t.TempDir())
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.MetricsToken = "metrics-token-do-not-log"
	_, base := startGateway(t, cfg)
	tok := token(t, "show-1")
	expired := expiredToken(t)

	body := audienceJoin("log-1", "show-1", 7, 1)
	forged := signed(testSecret, body)
	forgedSig := ncs.SignSHA256("the-attackers-guess", body)
	forged.Set(ncs.HeaderSignatureV2, forgedSig)
	if a := post(t, http.DefaultClient, base+"/v1/ncs", body, forged); a.Error != "bad_signature" {
		t.Fatalf("forged signature: %s", a.Raw)
	}
	good := signed(testSecret, body)
	if a := postSigned(t, base, body); a.Status != 200 {
		t.Fatalf("valid notification: %s", a.Raw)
	}
	var snap map[string]any
	if status, raw := getJSON(t, base, "/v1/channels/show-1/presence", tok, &snap); status != 200 {
		t.Fatalf("presence: %d %s", status, raw)
	}
	getJSON(t, base, "/v1/channels/show-1/presence", expired, &snap)
	if c, _, err := dial(t, base, tok, true); err != nil { // ?token=
		t.Fatalf("dial with ?token=: %v", err)
	} else {
		c.subscribe("show-1")
		c.expect("subscribed", "show-1")
		_ = c.conn.Close(websocket.StatusNormalClosure, "")
	}
	_, _, _ = dial(t, base, expired, true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, _, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{Subprotocols: []string{"usher", "bearer." + tok}}); err == nil {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
	scrape(t, base, cfg.MetricsToken)
	getMetrics(t, base, "a-wrong-metrics-token")

	// Every request is logged once it ends; wait for the last ones.
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() (bool, string) {
		return strings.Count(logs.String(), `"msg":"http request"`) >= 9, logs.String()
	})
	out := logs.String()
	secrets := map[string]string{
		"NCS secret": testSecret, "JWT secret": testJWTSecret, "client token": tok, "expired token": expired,
		"metrics token": cfg.MetricsToken, "forged signature": forgedSig,
		"valid signature": good.Get(ncs.HeaderSignatureV2), "valid SHA-1 signature": good.Get(ncs.HeaderSignature),
	}
	for what, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the log holds the %s", what)
		}
		// A token's signature part alone is secret enough.
		if i := strings.LastIndexByte(s, '.'); i > 0 && strings.Contains(out, s[i+1:]) {
			t.Errorf("the log holds the signature part of the %s", what)
		}
	}
	// It does log the requests, each with an id, the rejected one with its code.
	var requests, withID int
	for line := range strings.Lines(out) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] == "http request" {
			requests++
			if id, _ := rec["req"].(string); id != "" {
				withID++
			}
		}
	}
	if requests < 9 || withID != requests {
		t.Errorf("%d request lines, %d with an id", requests, withID)
	}
	if !strings.Contains(out, `"error":"bad_signature"`) {
		t.Error("the rejected notification's line does not give its error code")
	}
}

func TestRequestIDEchoed(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	for _, tc := range []struct{ sent, want string }{
		{"lb-1234.abc_DEF", "lb-1234.abc_DEF"},
		{"bad id with spaces", ""},
		{"", ""},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
		if tc.sent != "" {
			req.Header.Set(gateway.HeaderRequestID, tc.sent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get(gateway.HeaderRequestID)
		if tc.want != "" && got != tc.want || tc.want == "" && (got == "" || got == tc.sent) {
			t.Errorf("sent %q, got back %q", tc.sent, got)
		}
	}
}

// TestFailureLogCarriesRequestID: the line logged about a request that failed inside a handler (here GET .../events
// with its stream gone) carries the request's id, as every line about a request does.
func TestFailureLogCarriesRequestID(t *testing.T) {
	t.Parallel()
	var logs testutil.SyncBuffer
	cfg := testConfig(t, t.TempDir())
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, base := startGateway(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.JetStream().DeleteStream(ctx, bus.PresenceStream); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/channels/show-1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, "show-1"))
	req.Header.Set(gateway.HeaderRequestID, "req-events-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "read presence events" {
			continue
		}
		if rec["req"] != "req-events-1" {
			t.Fatalf("the line about the failed request has no req: %s", line)
		}
		return
	}
	t.Fatalf("no read failure logged:\n%s", logs.String())
}

// writeCert writes a self-signed certificate for 127.0.0.1 and returns the file paths and a pool that trusts it.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "usher-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := writeCert(t)
	cfg := testConfig(t, t.TempDir())
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	g, err := gateway.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	base := "https://" + g.Addr().String()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	body := audienceJoin("tls-1", "show-1", 1, 1)
	if a := post(t, client, base+"/v1/ncs", body, signed(testSecret, body)); a.Status != 200 {
		t.Fatalf("POST over HTTPS: %d %s", a.Status, a.Raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss://"+g.Addr().String()+"/v1/ws", &websocket.DialOptions{
		HTTPClient: client, HTTPHeader: http.Header{"Authorization": {"Bearer " + token(t, "show-1")}}})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	defer c.CloseNow()
	ws := &wsClient{t: t, conn: c}
	ws.subscribe("show-1")
	ws.expect("subscribed", "show-1")
	// The POST's 200 means stored: the join may reach this instance's view just after the snapshot, then follows it.
	switch snap := ws.expect("snapshot", "show-1"); len(snap.Snapshot.Audience) {
	case 1:
	case 0:
		if e := ws.expect("presence", "show-1"); e.Event.Event != presence.Join || e.UID != 1 {
			t.Fatalf("after an empty snapshot over wss: %+v", e)
		}
	default:
		t.Fatalf("snapshot over wss: %+v", snap)
	}
	// Plain HTTP to the HTTPS port is refused.
	resp, err := http.Get("http://" + g.Addr().String() + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %d, want 400", resp.StatusCode)
		}
	}

	// Half a pair, or files that are not a pair, stop the start with the setting's name.
	half := testConfig(t, t.TempDir())
	half.TLSCert = certFile
	if _, err := gateway.Start(context.Background(), half); err == nil || !strings.Contains(err.Error(), "USHER_TLS_KEY") {
		t.Errorf("cert without key: %v", err)
	}
	wrong := testConfig(t, t.TempDir())
	wrong.TLSCert, wrong.TLSKey = keyFile, certFile
	if g, err := gateway.Start(context.Background(), wrong); err == nil || !strings.Contains(err.Error(), "USHER_TLS_CERT") {
		if g != nil {
			_ = g.Shutdown(context.Background())
		}
		t.Errorf("swapped files: %v", err)
	}
}

// A limit set by hand on USHER_NCS that removes notifications before their max age (kept at start) is named in a
// warning as each instance starts: it can remove acknowledged notifications the applier has not applied yet.
func TestWarnsOfNCSLimitsSetByHand(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	start := func() string {
		var logs testutil.SyncBuffer
		cfg := testConfig(t, "")
		cfg.NATSURL = ns.ClientURL()
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		g, err := gateway.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		return logs.String()
	}
	if out := start(); strings.Contains(out, "limit set by hand") {
		t.Fatalf("a warning with no limit set:\n%s", out)
	}
	js := testutil.JetStreamAt(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, bus.NCSStream)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	c.MaxMsgs = 50_000
	if _, err := js.UpdateStream(ctx, c); err != nil {
		t.Fatal(err)
	}
	if out := start(); !strings.Contains(out, "USHER_NCS has a limit set by hand") || !strings.Contains(out, `"max_msgs":50000`) {
		t.Fatalf("no warning naming the limit:\n%s", out)
	}
}

// TestRefusedUpgradeLogsItsCode: the request line of a WebSocket upgrade the hub refuses gives the error code the
// client got, as every failed request's line does: 401 token_expired, 429 too_many_connections_for_subject.
func TestRefusedUpgradeLogsItsCode(t *testing.T) {
	t.Parallel()
	var logs testutil.SyncBuffer
	cfg := testConfig(t, t.TempDir())
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.MaxPerSubject = 1
	_, base := startGateway(t, cfg)
	if _, resp, err := dial(t, base, expiredToken(t), false); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired token: %v, %v", err, resp)
	}
	tok := token(t, "show-1")
	c, _, err := dial(t, base, tok, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.CloseNow()
	if _, resp, err := dial(t, base, tok, false); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second connection of the subject: %v, %v", err, resp)
	}
	want := map[float64]string{401: "token_expired", 429: "too_many_connections_for_subject"}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() (bool, string) {
		got := map[float64]string{}
		for line := range strings.Lines(logs.String()) {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "http request" && rec["route"] == "/v1/ws" {
				status, _ := rec["status"].(float64)
				code, _ := rec["error"].(string)
				got[status] = code
			}
		}
		for status, code := range want {
			if got[status] != code {
				return false, fmt.Sprintf("the line of the %v refusal gives error %q, want %q:\n%s", status, got[status], code, logs.String())
			}
		}
		return true, ""
	})
}
