package hub

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/test/testutil"
)

// rawClient is a WebSocket client written by hand over a TCP connection, so that a test can send what no library
// sends: frames split anywhere, invalid close payloads, unmasked or reserved frames.
type rawClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// serveHubRaw serves a hub over src on loopback, and returns it with a dial for raw clients (granted "show").
func serveHubRaw(t testing.TB, cfg Config, src Source) (*Hub, func() *rawClient) {
	var srv *httptest.Server
	h, _ := serveHubWith(t, cfg, src, func(s *httptest.Server) { srv = s })
	tok, err := auth.Issue(testSecret, []string{"show"}, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	return h, func() *rawClient {
		c, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /v1/ws?token=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", tok, srv.Listener.Addr(), base64.StdEncoding.EncodeToString(key))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade answered %s", resp.Status)
		}
		_ = c.SetDeadline(time.Time{})
		return &rawClient{t: t, c: c, br: br}
	}
}

const (
	opText   = 1
	opBinary = 2
	opClose  = 8
	opPingF  = 9
	opPongF  = 10
)

// frame writes one frame, masked unless unmasked.
func (r *rawClient) frame(fin bool, opcode byte, payload []byte, unmasked ...bool) {
	r.t.Helper()
	var b bytes.Buffer
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	b.WriteByte(b0)
	mask := byte(0x80)
	if len(unmasked) > 0 && unmasked[0] {
		mask = 0
	}
	switch n := len(payload); {
	case n < 126:
		b.WriteByte(mask | byte(n))
	case n < 1<<16:
		b.WriteByte(mask | 126)
		_ = binary.Write(&b, binary.BigEndian, uint16(n))
	default:
		b.WriteByte(mask | 127)
		_ = binary.Write(&b, binary.BigEndian, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if mask != 0 {
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		b.Write(key[:])
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	b.Write(p)
	_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Write(b.Bytes()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) text(s string) { r.t.Helper(); r.frame(true, opText, []byte(s)) }

// closeFrame sends a close frame with payload p.
func (r *rawClient) closeFrame(p []byte) { r.t.Helper(); r.frame(true, opClose, p) }

// read returns the next data or close frame from the server (answering nothing), within wait: its opcode and
// payload. opcode 0 when the connection ended without one.
func (r *rawClient) read(wait time.Duration) (byte, []byte) {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(wait))
	for {
		var h [2]byte
		if _, err := io.ReadFull(r.br, h[:]); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatalf("no frame within %s", wait)
			}
			return 0, nil
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var l uint16
			if binary.Read(r.br, binary.BigEndian, &l) != nil {
				return 0, nil
			}
			n = uint64(l)
		case 127:
			if binary.Read(r.br, binary.BigEndian, &n) != nil {
				return 0, nil
			}
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r.br, p); err != nil {
			return 0, nil
		}
		if op := h[0] & 0x0f; op != opPingF && op != opPongF {
			return op, p
		}
	}
}

// expectJSON reads the next frame and fails unless it is a text frame with each of the fields given.
func (r *rawClient) expectJSON(want map[string]string) map[string]any {
	r.t.Helper()
	op, p := r.read(5 * time.Second)
	if op != opText {
		r.t.Fatalf("got frame opcode %d %q, want a text frame with %v", op, p, want)
	}
	var f map[string]any
	if err := json.Unmarshal(p, &f); err != nil {
		r.t.Fatalf("frame %q: %v", p, err)
	}
	for k, v := range want {
		if got, _ := f[k].(string); got != v {
			r.t.Fatalf("frame %s: %s is %q, want %q", p, k, got, v)
		}
	}
	return f
}

// expectClose reads until the server's close frame and fails unless it has code (0: any), answers it, then expects
// the connection to end.
func (r *rawClient) expectClose(code uint16) {
	r.t.Helper()
	for {
		op, p := r.read(5 * time.Second)
		switch op {
		case opText:
			continue // answers sent before the close
		case opClose:
			if len(p) < 2 || (code != 0 && binary.BigEndian.Uint16(p) != code) {
				r.t.Fatalf("close frame %q, want code %d", p, code)
			}
			r.frame(true, opClose, p[:2]) // the answer a client gives
			r.expectEnd()
			return
		default:
			r.t.Fatalf("connection ended (opcode %d) without a close frame; want code %d", op, code)
		}
	}
}

// endWait is how long expectEnd waits: coder/websocket waits 5 s for a peer's answer to its close frame, which it
// cannot read behind a frame that never ends.
const endWait = 3 * time.Second

// expectEnd fails unless the server ends the connection within endWait.
func (r *rawClient) expectEnd() {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(endWait))
	if _, err := io.Copy(io.Discard, r.br); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			r.t.Fatal("the server did not end the connection within", endWait)
		}
	}
}

func (r *rawClient) ping() {
	r.t.Helper()
	r.text(`{"op":"ping"}`)
	r.expectJSON(map[string]string{"type": "pong"})
}

// padTo returns a ping request padded with an unknown field to exactly n bytes.
func padTo(n int) string {
	const head, tail = `{"op":"ping","pad":"`, `"}`
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

// viewAhead is a source whose view never reaches a since ahead of it: a resume from one waits its 2 s.
type viewAhead struct{ *viewSource }

func (viewAhead) WaitSeq(ctx context.Context, _ uint64) error {
	<-ctx.Done()
	return ctx.Err()
}

// Hostile and odd client input, over real WebSockets: each gets its documented answer, the hub stays responsive to
// another client, and no subscription or connection is left behind.
func TestHostileClientInput(t *testing.T) {
	src := storedEvents(1, 0)
	h, dial := serveHubRaw(t, Config{WriteTimeout: time.Second}, viewAhead{src}) // a peer gets 1 s to answer a close
	watcher := dial()
	watcher.text(`{"op":"subscribe","channel":"show"}`)
	watcher.expectJSON(map[string]string{"type": "subscribed", "channel": "show"})
	watcher.expectJSON(map[string]string{"type": "snapshot", "channel": "show"})
	seq := uint64(1)
	// alive checks that the watcher still gets live events, and that the hub holds only its subscription.
	alive := func(t *testing.T) {
		t.Helper()
		watcher.t = t
		seq++
		land(h, src, join(seq, uint32(seq)))
		watcher.expectJSON(map[string]string{"type": "presence"})
		testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() (bool, string) {
			st := h.Stats()
			return st.Subscriptions == 1 && st.Connections == 1, fmt.Sprintf("%d subscriptions, %d connections; want the watcher's 1 and 1", st.Subscriptions, st.Connections)
		})
	}
	bad := func(channel string) map[string]string {
		return map[string]string{"type": "error", "code": CodeBadRequest, "channel": channel}
	}
	subscribed := func(c *rawClient) {
		c.expectJSON(map[string]string{"type": "subscribed", "channel": "show"})
		c.expectJSON(map[string]string{"type": "snapshot", "channel": "show"})
	}
	cases := []struct {
		name string
		run  func(t *testing.T, c *rawClient)
	}{
		{"binary frame", func(t *testing.T, c *rawClient) {
			c.frame(true, opBinary, []byte(`{"op":"ping"}`))
			c.expectJSON(bad(""))
			c.ping()
		}},
		{"fragments", func(t *testing.T, c *rawClient) {
			c.frame(false, opText, []byte(`{"op":"sub`))
			c.frame(false, 0, []byte(`scribe","chan`))
			c.frame(true, opPingF, []byte("between")) // a control frame between fragments
			c.frame(false, 0, nil)
			c.frame(true, 0, []byte(`nel":"show"}`))
			subscribed(c)
		}},
		{"4096 bytes", func(t *testing.T, c *rawClient) {
			c.text(padTo(MaxFrame))
			c.expectJSON(map[string]string{"type": "pong"})
		}},
		{"4096 bytes in fragments", func(t *testing.T, c *rawClient) {
			f := padTo(MaxFrame)
			c.frame(false, opText, []byte(f[:1000]))
			c.frame(false, 0, []byte(f[1000:4000]))
			c.frame(true, 0, []byte(f[4000:]))
			c.expectJSON(map[string]string{"type": "pong"})
		}},
		{"4097 bytes", func(t *testing.T, c *rawClient) {
			c.text(padTo(MaxFrame + 1))
			c.expectClose(1009)
		}},
		{"4097 bytes in fragments", func(t *testing.T, c *rawClient) {
			f := padTo(MaxFrame + 1)
			c.frame(false, opText, []byte(f[:4000]))
			c.frame(true, 0, []byte(f[4000:]))
			c.expectClose(1009)
		}},
		{"frame header of 2^63 bytes", func(t *testing.T, c *rawClient) {
			h := []byte{0x81, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}
			_, _ = c.c.Write(append(h, bytes.Repeat([]byte(" "), MaxFrame+10)...))
			c.expectClose(1009)
		}},
		{"invalid UTF-8 in the channel", func(t *testing.T, c *rawClient) {
			c.text("{\"op\":\"subscribe\",\"channel\":\"sh\xffow\"}")
			c.expectJSON(bad("sh\uFFFDow"))
			c.ping()
		}},
		{"a channel name or op of kilobytes is repeated cut short", func(t *testing.T, c *rawClient) {
			// JSON escapes "<" as \u003c: repeated whole, such a name would come back 6 times its size.
			long := strings.Repeat("<", MaxFrame-100)
			for _, f := range []string{
				`{"op":"subscribe","channel":"` + long + `"}`,
				`{"op":"subscribe","channel":"` + long + `","since":-1}`,
				`{"op":"` + long[:3000] + `","channel":"` + long[:500] + `"}`,
			} {
				c.text(f)
				op, p := c.read(5 * time.Second)
				var got struct{ Type, Code, Channel, Message string }
				if op != opText || json.Unmarshal(p, &got) != nil || got.Code != CodeBadRequest {
					t.Fatalf("frame %.80q, want bad_request", p)
				}
				if want := strings.Repeat("<", 64) + "…"; got.Channel != want || len(p) > 1024 {
					t.Fatalf("a frame of %d bytes naming %.80q, want at most 1 KiB naming %q", len(p), got.Channel, want)
				}
			}
			c.ping()
		}},
		{"invalid UTF-8 outside strings", func(t *testing.T, c *rawClient) {
			c.text("{\"op\":\"ping\"}\xff")
			c.expectJSON(bad(""))
			c.ping()
		}},
		{"duplicate keys: the last counts", func(t *testing.T, c *rawClient) {
			c.text(`{"op":"ping","op":"subscribe","channel":"nope","channel":"show"}`)
			subscribed(c)
		}},
		{"keys in another case", func(t *testing.T, c *rawClient) {
			c.text(`{"OP":"subscribe","Channel":"show"}`)
			subscribed(c)
		}},
		{"nested objects", func(t *testing.T, c *rawClient) {
			c.text(`{"op":"subscribe","channel":{"name":"show"}}`)
			c.expectJSON(bad(""))
			c.text(`{"op":"subscribe","channel":"show","x":{"op":"unsubscribe","y":[{"since":"z"}]}}`)
			subscribed(c)
		}},
		{"since not a whole number in digits", func(t *testing.T, c *rawClient) {
			for _, since := range []string{"1e3", "-0", "-1", "1.0", "18446744073709551616", `"41"`, "{}"} {
				c.text(`{"op":"subscribe","channel":"show","since":` + since + `}`)
				if f := c.expectJSON(bad("show")); !strings.Contains(f["message"].(string), "since") {
					t.Fatalf("since %s: %v", since, f)
				}
			}
			c.ping()
		}},
		{"null fields", func(t *testing.T, c *rawClient) {
			c.text(`{"op":"subscribe","channel":"show","since":null,"epoch":null}`)
			subscribed(c)
			c.text(`{"op":"subscribe","channel":null}`)
			c.expectJSON(bad(""))
			c.text(`{"op":null}`)
			c.expectJSON(bad(""))
			c.text(`null`)
			c.expectJSON(bad(""))
		}},
		{"not an object", func(t *testing.T, c *rawClient) {
			for _, f := range []string{`[]`, `"ping"`, `42`, ``, `{"op":"ping"}{"op":"ping"}`} {
				c.text(f)
				c.expectJSON(bad(""))
			}
			c.ping()
		}},
		{"subscribe twice", func(t *testing.T, c *rawClient) {
			c.text(`{"op":"subscribe","channel":"show"}`)
			c.text(`{"op":"subscribe","channel":"show"}`)
			subscribed(c)
			subscribed(c)
			if n := h.Stats().Subscriptions; n != 2 {
				t.Fatalf("%d subscriptions, want 2: the watcher's and this one's", n)
			}
			seq++
			land(h, src, join(seq, uint32(seq)))
			c.expectJSON(map[string]string{"type": "presence"})
			watcher.t = t
			watcher.expectJSON(map[string]string{"type": "presence"})
			c.ping() // the event came once
		}},
		{"unsubscribe of a channel never subscribed", func(t *testing.T, c *rawClient) {
			c.text(`{"op":"unsubscribe","channel":"show"}`)
			c.text(`{"op":"unsubscribe","channel":"other"}`)
			c.ping() // no answer to either
		}},
		{"subscribe and unsubscribe in a burst", func(t *testing.T, c *rawClient) {
			const pairs = 100 // 200 frames: within the frames allowed to wait (2*100+16)
			var b bytes.Buffer
			for range pairs {
				b.WriteString(`{"op":"subscribe","channel":"show"}`)
				b.WriteString(`{"op":"unsubscribe","channel":"show"}`)
			}
			for f := range strings.SplitAfterSeq(b.String(), "}") {
				if f != "" {
					c.text(f)
				}
			}
			for range pairs {
				subscribed(c)
			}
			c.ping()
		}},
		{"pings in a flood", func(t *testing.T, c *rawClient) {
			const n = 200
			for range n {
				c.text(`{"op":"ping"}`)
			}
			for range n {
				c.expectJSON(map[string]string{"type": "pong"})
			}
		}},
		{"more requests waiting than allowed", func(t *testing.T, c *rawClient) {
			c.text(`{"op":"subscribe","channel":"show","since":1000}`) // waits for the view (2 s): the rest wait behind
			for range 2*DefaultMaxSubscriptions + 16 + 1 {
				c.text(`{"op":"ping"}`)
			}
			c.expectClose(1008)
		}},
		{"unmasked frame", func(t *testing.T, c *rawClient) {
			c.frame(true, opText, []byte(`{"op":"ping"}`), true)
			c.expectClose(0) // coder/websocket ends the read without a code of its own: the session closes with 1000
		}},
		{"reserved opcode", func(t *testing.T, c *rawClient) {
			c.frame(true, 3, []byte(`{"op":"ping"}`))
			c.expectClose(1002)
		}},
		{"continuation without a start", func(t *testing.T, c *rawClient) {
			c.frame(true, 0, []byte(`{"op":"ping"}`))
			c.expectClose(1002)
		}},
		{"control frame over 125 bytes", func(t *testing.T, c *rawClient) {
			c.frame(true, opPingF, bytes.Repeat([]byte("x"), 126))
			c.expectClose(1002)
		}},
		{"subscribed, then gone without a close", func(t *testing.T, c *rawClient) {
			c.text(`{"op":"subscribe","channel":"show"}`)
			subscribed(c)
			_ = c.c.Close()
		}},
	}
	for _, code := range []uint16{1000, 1001, 1004, 1005, 1006, 1015, 999, 0, 2999, 3000, 4001, 4999, 5000, 65535} {
		cases = append(cases, struct {
			name string
			run  func(t *testing.T, c *rawClient)
		}{fmt.Sprintf("close %d while subscribed", code), func(t *testing.T, c *rawClient) {
			c.text(`{"op":"subscribe","channel":"show"}`)
			subscribed(c)
			p := binary.BigEndian.AppendUint16(nil, code)
			c.closeFrame(append(p, "bye"...))
			op, _ := c.read(5 * time.Second)
			if op != opClose {
				t.Fatalf("close %d answered with opcode %d, want a close frame", code, op)
			}
			c.expectEnd()
		}})
	}
	for _, p := range [][]byte{nil, {3}, append([]byte{3, 232}, 0xff, 0xfe), append([]byte{3, 232}, bytes.Repeat([]byte("r"), 123)...)} {
		cases = append(cases, struct {
			name string
			run  func(t *testing.T, c *rawClient)
		}{fmt.Sprintf("close payload %q", p), func(t *testing.T, c *rawClient) {
			c.text(`{"op":"subscribe","channel":"show"}`)
			subscribed(c)
			c.closeFrame(p)
			op, _ := c.read(5 * time.Second)
			if op != opClose {
				t.Fatalf("close payload %q answered with opcode %d, want a close frame", p, op)
			}
			c.expectEnd()
		}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial()
			c.t = t
			tc.run(t, c)
			_ = c.c.Close()
			alive(t)
		})
	}
	watcher.t = t
	_ = watcher.c.Close()
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() (bool, string) {
		st := h.Stats()
		return st.Subscriptions == 0 && st.Connections == 0, fmt.Sprintf("%d subscriptions, %d connections left", st.Subscriptions, st.Connections)
	})
}

// A client that sends the header of a frame over the limit, and not the rest, is closed with 1009 and its connection
// ended within WriteTimeout. coder/websocket's close handshake waited for the rest of the frame with no deadline, so
// such connections stayed open for as long as their clients liked, while no longer counted as connections: a client
// could hold any number of them past USHER_MAX_CONNECTIONS.
func TestCloseMidFrameEndsTheConnection(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	h, dial := serveHubRaw(t, Config{MaxConnections: 2, WriteTimeout: writeTimeout}, storedEvents(0, 0))
	var clients []*rawClient
	for range 4 { // twice MaxConnections: each is let in once the one before is closed
		c := dial()
		head := []byte{0x81, 0x80 | 126, 0xff, 0xff, 0, 0, 0, 0} // 65535 bytes, of which the client sends 4200
		_, _ = c.c.Write(append(head, bytes.Repeat([]byte(" "), MaxFrame+104)...))
		op, p := c.read(5 * time.Second)
		if op != opClose || len(p) < 2 || binary.BigEndian.Uint16(p) != 1009 {
			t.Fatalf("got opcode %d %q, want a close frame with 1009", op, p)
		}
		clients = append(clients, c)
	}
	start := time.Now()
	for _, c := range clients {
		_ = c.c.SetReadDeadline(start.Add(writeTimeout + 2*time.Second))
		if _, err := io.Copy(io.Discard, c.br); err != nil {
			t.Fatalf("the server did not end a connection closed mid-frame within %s: %v", time.Since(start).Round(time.Millisecond), err)
		}
	}
	if n := h.Stats().Connections; n != 0 {
		t.Fatalf("%d connections", n)
	}
}
