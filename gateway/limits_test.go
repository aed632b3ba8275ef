package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/test/testutil"
)

func TestBodyAndHeaderLimits(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.MaxBodyBytes = 2048
	cfg.MaxHeaderBytes = 4096
	g, base := startGateway(t, cfg)

	body := audienceJoin("big", "show-1", 1, 1)
	body = append(body[:len(body)-1], []byte(`,"pad":"`+strings.Repeat("x", 2048)+`"}`)...)
	if a := postSigned(t, base, body); a.Status != http.StatusRequestEntityTooLarge || a.Error != "body_too_large" ||
		!strings.Contains(a.Message, "2048") {
		t.Fatalf("body over USHER_MAX_BODY_BYTES: %d %s, want 413 body_too_large naming the limit", a.Status, a.Raw)
	}
	// Without a Content-Length (chunked), the limit holds while reading.
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/ncs", io.MultiReader(strings.NewReader(string(body))))
	req.ContentLength = -1
	for k, v := range signed(testSecret, body) {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over the limit: %d, want 413", resp.StatusCode)
	}
	// A body just under the limit passes.
	if a := postSigned(t, base, audienceJoin("small", "show-1", 1, 1)); a.Status != 200 {
		t.Fatalf("small body: %d %s", a.Status, a.Raw)
	}

	req, _ = http.NewRequest(http.MethodGet, base+"/healthz", nil)
	req.Header.Set("X-Padding", strings.Repeat("p", 3*cfg.MaxHeaderBytes)) // Go's server allows 4 KiB of slack
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("headers over USHER_MAX_HEADER_BYTES: %d, want 431", resp.StatusCode)
	}
	if msgs := readStream(t, g.JetStream()); len(msgs) != 1 {
		t.Fatalf("stored %d notifications, want only the small one:\n%s", len(msgs), describe(msgs))
	}
}

func TestUpgradeRateLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.UpgradeRate = 0.5 // one token every 2 s: none comes back during the test's first part
	cfg.UpgradeBurst = 3
	_, base := startGateway(t, cfg)
	tok := token(t, "show-1")
	for range 3 {
		c := mustDial(t, base, tok)
		_ = c.conn.CloseNow()
	}
	_, resp, err := dial(t, base, tok, false)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("4th upgrade within the burst window: err %v, resp %v; want 429", err, resp)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 {
		t.Errorf("Retry-After = %q, want a number of seconds", resp.Header.Get("Retry-After"))
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), `"error":"rate_limited"`) {
		t.Errorf("429 body %q, want error rate_limited", b)
	}
	// Other endpoints are not limited by it.
	if code := getStatus(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if m := scrape(t, base, ""); m["usher_ws_upgrades_rate_limited_total"] != 1 {
		t.Errorf("usher_ws_upgrades_rate_limited_total = %v, want 1", m["usher_ws_upgrades_rate_limited_total"])
	}
	// A rate that is not a finite number would turn the limit off (a NaN limit never refuses): refused at start.
	for _, bad := range []float64{math.NaN(), math.Inf(1), -1} {
		cfg := testConfig(t, t.TempDir())
		cfg.UpgradeRate = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "USHER_WS_UPGRADE_RATE") {
			t.Errorf("upgrade rate %v: %v, want an error naming USHER_WS_UPGRADE_RATE", bad, err)
		}
	}
	// The bucket refills at the configured rate.
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		c, resp, err := dial(t, base, tok, false)
		if err != nil {
			return false, fmt.Sprintf("still refused: %v %v", err, resp)
		}
		_ = c.conn.CloseNow()
		return true, ""
	})
}

func TestConnectionsPerSubject(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.MaxPerSubject = 2
	_, base := startGateway(t, cfg)
	issue := func(sub string) string {
		tok, err := auth.Issue(testJWTSecret, []string{"*"}, time.Hour, sub)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice, bob := issue("alice"), issue("bob")
	a1 := mustDial(t, base, alice)
	mustDial(t, base, alice)
	_, resp, err := dial(t, base, alice, false)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("3rd connection of one subject: %v %v, want 429", err, resp)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), `"error":"too_many_connections_for_subject"`) {
		t.Errorf("429 body %q", b)
	}
	mustDial(t, base, bob) // another subject is not affected
	if m := scrape(t, base, ""); m[`usher_ws_upgrades_refused_total{reason="subject"}`] != 1 {
		t.Errorf("refused{subject} = %v, want 1", m[`usher_ws_upgrades_refused_total{reason="subject"}`])
	}
	// Closing one frees its place.
	_ = a1.conn.CloseNow()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		c, _, err := dial(t, base, alice, false)
		if err != nil {
			return false, err.Error()
		}
		_ = c.conn.CloseNow()
		return true, ""
	})
}

// TestBodyLimitOverNATSPayload: a body limit above what the NATS server takes in one message is refused at start,
// naming the setting; otherwise such a body would be answered 503 on every one of Agora's retries.
func TestBodyLimitOverNATSPayload(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.MaxBodyBytes = 1 << 20 // the embedded server's max_payload: no room left for the headers
	g, err := gateway.Start(context.Background(), cfg)
	if err == nil {
		_ = g.Shutdown(context.Background())
		t.Fatal("started with USHER_MAX_BODY_BYTES at the NATS server's max_payload")
	}
	if !strings.Contains(err.Error(), "USHER_MAX_BODY_BYTES") {
		t.Fatalf("error %q does not name USHER_MAX_BODY_BYTES", err)
	}
	// At the highest limit allowed, a body of that size with the longest noticeId and channel name is stored.
	cfg = testConfig(t, t.TempDir())
	cfg.MaxBodyBytes = 1<<20 - 1024
	_, base := startGateway(t, cfg)
	body := audienceJoin(strings.Repeat("n", 256), strings.Repeat("c", 64), 1, 1)
	body = append(body[:len(body)-1], `,"padding":"`...)
	body = append(body, strings.Repeat("x", int(cfg.MaxBodyBytes)-len(body)-2)...)
	body = append(body, `"}`...)
	if a := postSigned(t, base, body); a.Status != http.StatusOK {
		t.Fatalf("a body of %d bytes: %d %s", len(body), a.Status, a.Raw)
	}
}

func TestNCSSourceAllowList(t *testing.T) {
	t.Parallel()
	body := audienceJoin("src-1", "show-1", 1, 1)
	xff := func(addr string) http.Header {
		h := signed(testSecret, body)
		h.Set("X-Forwarded-For", addr)
		return h
	}
	// forwarded is a signed request's headers with the forwarding headers given, name then value, each on a line
	// of its own.
	forwarded := func(kv ...string) http.Header {
		h := signed(testSecret, body)
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	cases := []struct {
		name           string
		allow, proxies []string
		header         http.Header
		want           int
	}{
		{"loopback not allowed", []string{"10.0.0.0/8", "192.0.2.1"}, nil, signed(testSecret, body), 403},
		{"loopback allowed as an address", []string{"10.0.0.0/8", "127.0.0.1"}, nil, signed(testSecret, body), 200},
		{"loopback allowed in IPv4-mapped IPv6 form", []string{"::ffff:127.0.0.0/104"}, nil, signed(testSecret, body), 200},
		{"another network in IPv4-mapped IPv6 form", []string{"::ffff:10.0.0.0/104"}, nil, signed(testSecret, body), 403},
		{"forwarded address of an untrusted peer is ignored", []string{"203.0.113.0/24"}, nil, xff("203.0.113.7"), 403},
		{"forwarded address of a trusted proxy is used", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8"}, xff("203.0.113.7"), 200},
		{"trusted proxy forwarding an outside address", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8"}, xff("198.51.100.9"), 403},
		// Some load balancers write the client's port too; gin would take the proxy for the client.
		{"forwarded address with its port", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8"}, xff("203.0.113.7:4711"), 200},
		{"forwarded IPv6 address with its port, after a proxy chain", []string{"2001:db8::/32"}, []string{"127.0.0.0/8", "10.0.0.0/8"},
			xff("[2001:db8::7]:4711, 10.1.2.3:80"), 200},
		{"forwarded outside address with its port", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8"}, xff("198.51.100.9:4711"), 403},
		{"loopback allowed, proxy forwarding an outside address with its port", []string{"127.0.0.1"}, []string{"127.0.0.0/8"}, xff("198.51.100.9:4711"), 403},
		{"addresses with their ports on several header lines", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8", "10.0.0.0/8"},
			forwarded("X-Forwarded-For", "203.0.113.7:4711", "X-Forwarded-For", "10.1.2.3:80"), 200},
		// Read from the right, past the trusted proxies: what the client itself wrote before its address is never read.
		{"an entry that is not an address, before the client's", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8"},
			forwarded("X-Forwarded-For", "not-an-address, 203.0.113.7:4711", "X-Real-IP", "198.51.100.9"), 200},
		{"an entry that is not an address where the client's should be: X-Real-IP", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8", "10.0.0.0/8"},
			forwarded("X-Forwarded-For", "198.51.100.9, not-an-address, 10.1.2.3", "X-Real-IP", "203.0.113.7:4711"), 200},
		{"an entry that is not an address where the client's should be, no X-Real-IP: the proxy", []string{"203.0.113.0/24"}, []string{"127.0.0.0/8"},
			forwarded("X-Forwarded-For", "203.0.113.7, ,"), 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t, t.TempDir())
			cfg.NCSAllowCIDRs, cfg.TrustedProxies = tc.allow, tc.proxies
			g, base := startGateway(t, cfg)
			a := post(t, http.DefaultClient, base+"/v1/ncs", body, tc.header)
			if a.Status != tc.want {
				t.Fatalf("got %d %s, want %d", a.Status, a.Raw, tc.want)
			}
			if tc.want == 403 {
				if a.Error != "forbidden_source" || !strings.Contains(a.Message, "USHER_NCS_ALLOW_CIDRS") {
					t.Errorf("403 body %s", a.Raw)
				}
				if n := len(readStream(t, g.JetStream())); n != 0 {
					t.Errorf("%d notifications stored from a forbidden source", n)
				}
			}
		})
	}
	for _, bad := range [][]string{{"10.0.0.0/33"}, {"not-an-address"}} {
		cfg := testConfig(t, t.TempDir())
		cfg.NCSAllowCIDRs = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "USHER_NCS_ALLOW_CIDRS") {
			t.Errorf("allow-list %q: %v, want an error naming USHER_NCS_ALLOW_CIDRS", bad, err)
		}
	}
}

// rawConn dials the gateway over TCP for the timeout tests.
func rawConn(t *testing.T, base string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reports whether the server closes c within d: a read returns EOF or a reset. What the server
// writes first (an error answer) is returned.
func closedWithin(c net.Conn, d time.Duration) (bool, string) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, string(b)
	}
	return true, string(b)
}

func TestSlowlorisHeadersCutOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.ReadHeaderTimeout = 500 * time.Millisecond
	cfg.ReadTimeout = 10 * time.Second
	_, base := startGateway(t, cfg)
	c := rawConn(t, base)

	// Headers one byte at a time, 50 ms apart: 400 bytes would take 20 s.
	closed := make(chan time.Time, 1)
	go func() {
		if ok, _ := closedWithin(c, 15*time.Second); ok {
			closed <- time.Now()
		}
		close(closed)
	}()
	start := time.Now()
	headers := "GET /healthz HTTP/1.1\r\nHost: usher\r\nX-Slow: " + strings.Repeat("a", 400)
	sent := 0
	for i := range len(headers) {
		if _, err := c.Write([]byte{headers[i]}); err != nil {
			break
		}
		sent++
		select {
		case at, ok := <-closed:
			if !ok {
				t.Fatal("the server did not close the connection within 15 s")
			}
			if took := at.Sub(start); took < cfg.ReadHeaderTimeout/2 || took > 5*time.Second {
				t.Fatalf("closed after %s, want about USHER_READ_HEADER_TIMEOUT (%s)", took, cfg.ReadHeaderTimeout)
			}
			t.Logf("cut off after %s, %d of %d header bytes sent", at.Sub(start).Round(time.Millisecond), sent, len(headers))
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("sent all %d header bytes, one every 50 ms, without being cut off", len(headers))
}

func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.ReadTimeout = 700 * time.Millisecond
	g, base := startGateway(t, cfg)
	c := rawConn(t, base)
	body := audienceJoin("slow-body", "show-1", 1, 1)
	var head strings.Builder
	fmt.Fprintf(&head, "POST /v1/ncs HTTP/1.1\r\nHost: usher\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	for k, v := range signed(testSecret, body) {
		fmt.Fprintf(&head, "%s: %s\r\n", k, v[0])
	}
	head.WriteString("\r\n")
	if _, err := c.Write([]byte(head.String())); err != nil {
		t.Fatal(err)
	}
	// The body trickles at 10 bytes every 100 ms: it would take seconds.
	start := time.Now()
	for i := 0; i < len(body) && time.Since(start) < 10*time.Second; i += 10 {
		if _, err := c.Write(body[i:min(i+10, len(body))]); err != nil {
			break
		}
		if ok, answer := closedWithin(c, 100*time.Millisecond); ok {
			if strings.HasPrefix(answer, "HTTP/1.1 200") {
				t.Fatalf("a body sent past USHER_READ_TIMEOUT was accepted: %q", answer)
			}
			t.Logf("cut off after %s with %q", time.Since(start).Round(time.Millisecond), firstLine(answer))
			if n := len(readStream(t, g.JetStream())); n != 0 {
				t.Fatalf("%d notifications stored from a cut-off request", n)
			}
			return
		}
	}
	t.Fatalf("the whole body trickled in over %s without the request being cut off", time.Since(start))
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\r\n"); return l }

func TestIdleConnectionClosed(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.IdleTimeout = 400 * time.Millisecond
	_, base := startGateway(t, cfg)
	c := rawConn(t, base)
	// Timed from before the request: the connection is idle only after it, so however late this goroutine runs
	// once the answer is in, the close cannot come sooner than the idle timeout after start.
	start := time.Now()
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: usher\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if ok, _ := closedWithin(c, 5*time.Second); !ok {
		t.Fatal("an idle keep-alive connection was kept past USHER_IDLE_TIMEOUT")
	}
	if took := time.Since(start); took < cfg.IdleTimeout {
		t.Fatalf("closed %s after the request, before the idle timeout (%s)", took, cfg.IdleTimeout)
	}
}

// TestSlowReaderOfAResponseCutOff: a client that does not read a large answer is cut off by USHER_WRITE_TIMEOUT
// instead of holding the handler. The roster is made large (about 8 MB, more than the kernel buffers on both
// sides) and the client's receive buffer small.
func TestSlowReaderOfAResponseCutOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.WriteTimeout = 500 * time.Millisecond
	g, base := startGateway(t, cfg)
	const ch, members = "huge", 8000
	storeJoins(t, g, ch, members, 1000)
	tok, all := token(t, ch), token(t, "*")
	// Polled through the small channel list: reading the roster itself may well take longer than the write timeout.
	testutil.Eventually(t, 60*time.Second, 20*time.Millisecond, func() (bool, string) {
		var list struct {
			Channels []struct {
				Channel string
				Counts  struct{ Audience int }
			}
		}
		getJSON(t, base, "/v1/channels", all, &list)
		for _, c := range list.Channels {
			if c.Channel == ch && c.Counts.Audience == members {
				return true, ""
			}
		}
		return false, fmt.Sprintf("channels: %+v", list.Channels)
	})

	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/channels/%s/presence HTTP/1.1\r\nHost: usher\r\nAuthorization: Bearer %s\r\n\r\n", ch, tok)
	// Read nothing for well past the write timeout, then everything that is there.
	time.Sleep(4 * cfg.WriteTimeout)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Logf("cut off before the status line: %v", err)
		return
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("read the whole %d-byte answer although the client did not read for %s (USHER_WRITE_TIMEOUT %s)",
			n, 4*cfg.WriteTimeout, cfg.WriteTimeout)
	}
	t.Logf("answer cut off after %d bytes: %v", n, err)
}
