package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

// frame is a server frame, decoded.
type frame struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Code    string `json:"code"`
	Message string `json:"message"`
	presence.Event
	Snapshot presence.Snapshot `json:"-"`
	Raw      string            `json:"-"`
}

type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + "/v1/ws" }

// dial opens a WebSocket with the token in a header (or in ?token= when query is true).
func dial(t testing.TB, base, tok string, query bool) (*wsClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, opts := wsURL(base), &websocket.DialOptions{HTTPHeader: http.Header{}}
	if query {
		u += "?token=" + url.QueryEscape(tok)
	} else if tok != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+tok)
	}
	c, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return &wsClient{t: t, conn: c}, resp, nil
}

func mustDial(t testing.TB, base, tok string) *wsClient {
	t.Helper()
	c, _, err := dial(t, base, tok, false)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("send %s: %v", b, err)
	}
}

func (c *wsClient) subscribe(channel string, since ...uint64) {
	m := map[string]any{"op": "subscribe", "channel": channel}
	if len(since) > 0 {
		m["since"] = since[0]
	}
	c.send(m)
}

// next reads one frame, failing the test after timeout.
func (c *wsClient) next(timeout time.Duration) frame {
	c.t.Helper()
	f, err := c.read(timeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *wsClient) read(timeout time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, fmt.Errorf("frame %s: %w", b, err)
	}
	if f.Type == "snapshot" {
		_ = json.Unmarshal(b, &f.Snapshot)
	}
	f.Raw = string(b)
	return f, nil
}

// expect reads the next frame and checks its type (and channel, when given).
func (c *wsClient) expect(typ, channel string) frame {
	c.t.Helper()
	f := c.next(10 * time.Second)
	if f.Type != typ || (channel != "" && f.Channel != channel) {
		c.t.Fatalf("got %s, want a %s frame for %q", f.Raw, typ, channel)
	}
	return f
}

// expectEvents reads presence frames until it has n, checking they follow each other in seq order.
func (c *wsClient) expectEvents(channel string, n int, after uint64) []presence.Event {
	c.t.Helper()
	var out []presence.Event
	for len(out) < n {
		f := c.expect("presence", channel)
		if f.Seq <= after {
			c.t.Fatalf("event %d after %d: %s", f.Seq, after, f.Raw)
		}
		after = f.Seq
		out = append(out, f.Event)
	}
	return out
}

// quiet checks that nothing but the answer to a ping comes next.
func (c *wsClient) quiet() {
	c.t.Helper()
	c.send(map[string]string{"op": "ping"})
	if f := c.next(10 * time.Second); f.Type != "pong" {
		c.t.Fatalf("expected nothing but a pong, got %s", f.Raw)
	}
}

func joinAudience(t testing.TB, base, channel string, uids ...uint32) {
	t.Helper()
	for _, uid := range uids {
		body := userEvent(fmt.Sprintf("join-%s-%d-%d", channel, uid, rand.Int64()), ncs.AudienceJoin, channel, uid, int64(uid)*10+time.Now().UnixNano()%9+1, time.Now().Unix(), nil)
		if a := postSigned(t, base, body); a.Status != 200 {
			t.Fatalf("post: %d %s", a.Status, a.Raw)
		}
	}
}

func TestWSRefusesBadTokens(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	expired := expiredToken(t)
	for _, tc := range []struct{ name, tok, code string }{
		{"missing", "", "unauthorized"}, {"invalid", "abc.def.ghi", "invalid_token"}, {"expired", expired, "token_expired"},
	} {
		_, resp, err := dial(t, base, tc.tok, false)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s token: err %v, resp %v; want 401", tc.name, err, resp)
		}
		var body struct{ Error, Message string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if body.Error != tc.code || body.Message == "" {
			t.Fatalf("%s token: body %+v, want error %q", tc.name, body, tc.code)
		}
	}
	// ?token= works for browsers.
	c, _, err := dial(t, base, token(t, "show-1"), true)
	if err != nil {
		t.Fatalf("token in the query: %v", err)
	}
	c.quiet()
	// So does a "bearer.<token>" subprotocol, which keeps the token out of URLs; the server answers "usher".
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, _, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{Subprotocols: []string{"usher", "bearer." + token(t, "show-1")}})
	if err != nil {
		t.Fatalf("token in the subprotocol: %v", err)
	}
	defer p.CloseNow()
	if p.Subprotocol() != "usher" {
		t.Fatalf("subprotocol %q, want usher", p.Subprotocol())
	}
	(&wsClient{t: t, conn: p}).quiet()
	_, resp, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{Subprotocols: []string{"usher", "bearer.nope"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token in the subprotocol: %v %v, want 401", err, resp)
	}
}

// TestBearerSchemeAnyCase: the authentication scheme of an Authorization header is case-insensitive (RFC 9110
// 11.1), so "bearer" and "BEARER" carry a token as "Bearer" does, for the WebSocket and for the REST API alike.
func TestBearerSchemeAnyCase(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	tok := token(t, "show-1")
	for _, prefix := range []string{"bearer ", "BEARER ", "Bearer  "} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {prefix + tok}}})
		cancel()
		if err != nil {
			t.Errorf("WebSocket with Authorization %q: %v %v", prefix+"...", err, resp)
			continue
		}
		_ = c.CloseNow()
	}
	req, err := http.NewRequest(http.MethodGet, base+"/v1/channels/show-1/presence", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET presence with scheme \"bearer\": %d, want 200", resp.StatusCode)
	}
	// A scheme that only starts like it is no bearer token.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err = websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearerx " + tok}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("scheme \"Bearerx\": %v %v, want 401", err, resp)
	}
}

func TestWSGrants(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	c := mustDial(t, base, token(t, "show-*", "talk #3"))
	c.subscribe("other")
	if f := c.expect("error", "other"); f.Code != "forbidden" {
		t.Fatalf("got %s", f.Raw)
	}
	c.quiet() // forbidden, and nothing else
	for _, ch := range []string{"show-1", "talk #3"} {
		c.subscribe(ch)
		c.expect("subscribed", ch)
		if s := c.expect("snapshot", ch); s.Snapshot.Hosts == nil || s.Snapshot.Seq != 0 {
			t.Fatalf("snapshot %s", s.Raw)
		}
	}
	all := mustDial(t, base, token(t, "*"))
	all.subscribe("anything.at>all")
	all.expect("subscribed", "anything.at>all")
	all.expect("snapshot", "anything.at>all")
	all.subscribe("bad/name")
	if f := all.expect("error", "bad/name"); f.Code != "bad_request" {
		t.Fatalf("got %s", f.Raw)
	}
	all.send("not an object")
	if f := all.expect("error", ""); f.Code != "bad_request" {
		t.Fatalf("got %s", f.Raw)
	}
}

func TestWSSnapshotThenLive(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	const ch = "show-1"
	joinAudience(t, base, ch, 1, 2)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 2 })

	c := mustDial(t, base, token(t, ch))
	c.subscribe(ch)
	c.expect("subscribed", ch)
	snap := c.expect("snapshot", ch).Snapshot
	if snap.Counts.Audience != 2 || len(snap.Audience) != 2 {
		t.Fatalf("snapshot %+v", snap)
	}
	joinAudience(t, base, ch, 3, 4, 5)
	events := c.expectEvents(ch, 3, snap.Seq)
	for i, e := range events {
		if e.Event != presence.Join || e.UID != uint32(3+i) {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	c.send(map[string]string{"op": "unsubscribe", "channel": ch})
	c.quiet() // answered in order: the unsubscribe has taken effect
	joinAudience(t, base, ch, 6)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 6 })
	c.quiet() // nothing after the unsubscribe
}

func TestWSResume(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.RecentEvents = 5 // the view keeps the last 5 events: resumes from further back read USHER_PRESENCE
	g, base := startGateway(t, cfg)
	const ch = "show #1"
	tok := token(t, ch)
	resumes := func(from string) float64 {
		return scrape(t, base, "")[`usher_ws_resumes_total{from="`+from+`"}`]
	}
	c := mustDial(t, base, tok)
	c.subscribe(ch)
	c.expect("subscribed", ch)
	c.expect("snapshot", ch)
	joinAudience(t, base, ch, 1, 2, 3)
	seen := c.expectEvents(ch, 3, 0)
	last := seen[2].Seq
	_ = c.conn.Close(websocket.StatusNormalClosure, "")

	// Events happen while the client is away: on this channel and on another. The view still holds them all.
	joinAudience(t, base, ch, 4, 5)
	joinAudience(t, base, "elsewhere", 9)
	joinAudience(t, base, ch, 6)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 6 })

	c2 := mustDial(t, base, tok)
	c2.subscribe(ch, last)
	c2.expect("subscribed", ch)
	missed := c2.expectEvents(ch, 3, last) // no snapshot: the three missed events, in order
	if missed[0].UID != 4 || missed[1].UID != 5 || missed[2].UID != 6 {
		t.Fatalf("resumed %+v", missed)
	}
	joinAudience(t, base, ch, 7)
	if live := c2.expectEvents(ch, 1, missed[2].Seq); live[0].UID != 7 {
		t.Fatalf("live after resume: %+v", live)
	}
	c2.quiet() // no duplicate
	if m, s := resumes("memory"), resumes("stored"); m != 1 || s != 0 {
		t.Fatalf("resumes from memory %v, stored %v: want the view's memory to have answered", m, s)
	}

	// A resume from before what the stream retains, and the view's memory, gets reset and a snapshot.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := g.JetStream().Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Purge(ctx, jetstream.WithPurgeSequence(last+1)); err != nil {
		t.Fatal(err)
	}
	c3 := mustDial(t, base, tok)
	c3.subscribe(ch, 1)
	c3.expect("subscribed", ch)
	c3.expect("reset", ch)
	if s := c3.expect("snapshot", ch).Snapshot; s.Counts.Audience != 7 {
		t.Fatalf("snapshot after reset: %+v", s)
	}
	joinAudience(t, base, ch, 8)
	c3.expectEvents(ch, 1, 0)

	// From further back than the view's memory, within what the stream retains: the stored events.
	c4 := mustDial(t, base, tok)
	c4.subscribe(ch, last)
	c4.expect("subscribed", ch)
	missed = c4.expectEvents(ch, 5, last)
	for i, e := range missed {
		if e.UID != uint32(4+i) {
			t.Fatalf("resumed %+v", missed)
		}
	}
	c4.quiet()
	if m, s := resumes("memory"), resumes("stored"); m != 1 || s != 1 {
		t.Fatalf("resumes from memory %v, stored %v: want the last from the stored events", m, s)
	}
}

// A client resumes, on an instance started since, from an event before the checkpoint that instance loaded its
// rosters from: the instance's memory holds no event from before its start, so the stored ones are replayed.
func TestWSResumeOnAnInstanceStartedSince(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const ch = "restarted"
	tok := token(t, ch)
	g, base := startGatewayToStop(t, testConfig(t, dir))
	c := mustDial(t, base, tok)
	c.subscribe(ch)
	c.expect("subscribed", ch)
	c.expect("snapshot", ch)
	joinAudience(t, base, ch, 1)
	last := c.expectEvents(ch, 1, 0)[0].Seq
	_ = c.conn.CloseNow()
	joinAudience(t, base, ch, 2, 3)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	if err := g.Shutdown(context.Background()); err != nil { // its final checkpoint holds all three
		t.Fatal(err)
	}

	_, base = startGateway(t, testConfig(t, dir))
	c2 := mustDial(t, base, tok)
	c2.subscribe(ch, last)
	c2.expect("subscribed", ch)
	missed := c2.expectEvents(ch, 2, last)
	if missed[0].UID != 2 || missed[1].UID != 3 {
		t.Fatalf("resumed %+v", missed)
	}
	c2.quiet()
	if s := scrape(t, base, "")[`usher_ws_resumes_total{from="stored"}`]; s != 1 {
		t.Fatalf("%v resumes from the stored events, want 1", s)
	}
}

// TestWSStalledClient: a client that stops reading is closed, and another client of the same channel keeps
// receiving every event.
func TestWSStalledClient(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	const ch = "busy"
	stalled := mustDial(t, base, token(t, ch))
	stalled.subscribe(ch)
	reader := mustDial(t, base, token(t, ch))
	reader.subscribe(ch)
	reader.expect("subscribed", ch)
	reader.expect("snapshot", ch)

	// The reader reads all the time, into memory; it is checked afterwards.
	frames := make(chan []byte, 1<<16)
	go func() {
		defer close(frames)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, b, err := reader.conn.Read(ctx)
			cancel()
			if err != nil {
				return
			}
			frames <- b
		}
	}()

	// Events of about 1 KB each (a long account): far more than socket buffers hold for the stalled client.
	const n = 20000
	storeJoins(t, g, ch, n, 1000)

	var got int
	var after uint64
	for b := range frames {
		var f frame
		if err := json.Unmarshal(b, &f); err != nil || f.Type != "presence" || f.Seq <= after {
			t.Fatalf("reader got %.200s after seq %d", b, after)
		}
		after = f.Seq
		if got++; got == n {
			break
		}
	}
	if got != n {
		t.Fatalf("the reader received %d of %d events", got, n)
	}
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, func() (bool, string) {
		st := g.HubStats()
		return st.SlowClosed >= 1, fmt.Sprintf("%+v", st)
	})
	if m := scrape(t, base, ""); m["usher_ws_slow_clients_dropped_total"] != 1 || m["usher_ws_frames_sent_total"] < n {
		t.Errorf("metrics: slow clients dropped %v (want 1), frames sent %v (want at least %d)",
			m["usher_ws_slow_clients_dropped_total"], m["usher_ws_frames_sent_total"], n)
	}
	// The stalled client, reading at last, finds its connection closed.
	var closeErr error
	for closeErr == nil {
		_, closeErr = stalled.read(10 * time.Second)
	}
	if code := websocket.CloseStatus(closeErr); code != -1 && code != 4008 {
		t.Fatalf("stalled client closed with %v, want 4008 or a dropped connection", closeErr)
	}
}

func TestWSLimitsAndExpiry(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.MaxSubscriptions = 2
	_, base := startGateway(t, cfg)
	c := mustDial(t, base, token(t, "*"))
	for _, ch := range []string{"a", "b"} {
		c.subscribe(ch)
		c.expect("subscribed", ch)
		c.expect("snapshot", ch)
	}
	c.subscribe("c")
	if f := c.expect("error", "c"); f.Code != "too_many_subscriptions" {
		t.Fatalf("got %s", f.Raw)
	}
	// A frame over 4 KiB closes the connection (1009, message too big).
	c.send(map[string]string{"op": "ping", "pad": strings.Repeat("x", 5000)})
	_, err := c.read(10 * time.Second)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("after a 5 KB frame: %v, want close 1009", err)
	}

	// A token that expires closes the connection with 4001.
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, auth.Claims{Channels: []string{"*"},
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(1500 * time.Millisecond))}}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	e := mustDial(t, base, tok)
	_, err = e.read(10 * time.Second)
	if websocket.CloseStatus(err) != 4001 {
		t.Fatalf("expiring token: %v, want close 4001", err)
	}
}

// TestWSGrantIsolation is a property test: clients with random grants subscribe to random channels while events
// happen on all of them; no client ever receives a frame about a channel its token does not grant.
func TestWSGrantIsolation(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	rng := rand.New(rand.NewPCG(1, 2))
	channels := []string{"a", "a.b", "a.>", "ab", "a b", "b", "b*c", "show-1", "show-10", "show.1", "%41", "A"}
	legal := func(ch string) bool { return ncs.ValidChannelName(ch) == nil }
	grantsPool := []string{"a", "a*", "a.*", "show-1*", "b", "*", "%*", "A", "show.1"}

	type client struct {
		c      *wsClient
		grants auth.Grants
	}
	var clients []client
	for range 12 {
		var g auth.Grants
		for range 1 + rng.IntN(3) {
			g = append(g, grantsPool[rng.IntN(len(grantsPool))])
		}
		cl := client{c: mustDial(t, base, token(t, g...)), grants: g}
		for _, ch := range channels {
			if rng.IntN(2) == 0 {
				cl.c.subscribe(ch)
			}
		}
		clients = append(clients, cl)
	}
	for _, ch := range channels {
		if legal(ch) {
			joinAudience(t, base, ch, 1, 2)
		}
	}
	for _, ch := range channels {
		if legal(ch) {
			waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 2 })
		}
	}
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Go(func() {
			cl.c.send(map[string]string{"op": "ping"})
			for {
				f, err := cl.c.read(10 * time.Second)
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				switch f.Type {
				case "pong":
					return
				case "error":
					if f.Code == "forbidden" && cl.grants.Allows(f.Channel) {
						t.Errorf("grants %v: forbidden %q", cl.grants, f.Channel)
					}
				default:
					if !cl.grants.Allows(f.Channel) {
						t.Errorf("grants %v received %s", cl.grants, f.Raw)
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestWSConnectionLimitAndOrigins(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.MaxConnections = 2
	cfg.AllowedOrigins = []string{"console.example.com"}
	g, base := startGateway(t, cfg)
	tok := token(t, "*")
	mustDial(t, base, tok).quiet()
	mustDial(t, base, tok).quiet()
	_, resp, err := dial(t, base, tok, false)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection with a limit of 2: %v %v, want 503", err, resp)
	}
	if st := g.HubStats(); st.Connections != 2 {
		t.Fatalf("stats %+v, want 2 connections", st)
	}

	cfg2 := testConfig(t, t.TempDir())
	cfg2.AllowedOrigins = []string{"console.example.com"}
	_, base2 := startGateway(t, cfg2)
	for _, c := range []struct {
		origin string
		ok     bool
	}{{"http://console.example.com", true}, {"http://evil.example.com", false}, {base2, true}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, resp, err := websocket.Dial(ctx, wsURL(base2), &websocket.DialOptions{HTTPHeader: http.Header{
			"Authorization": {"Bearer " + tok}, "Origin": {c.origin}}})
		cancel()
		if c.ok != (err == nil) {
			t.Errorf("origin %s: err %v, want allowed %v", c.origin, err, c.ok)
		}
		if err == nil {
			_ = conn.CloseNow()
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %s refused with %v, want 403", c.origin, resp)
		}
	}
}

// TestWSAllowedOriginsChecked: an USHER_ALLOWED_ORIGINS entry that can never match an origin is refused at start,
// naming the setting. A malformed pattern made coder/websocket refuse every cross-origin upgrade (403), even those a
// good pattern listed with it allows; one with a path never matches (an origin has none).
func TestWSAllowedOriginsChecked(t *testing.T) {
	t.Parallel()
	for _, bad := range [][]string{{"[console.example.com"}, {"*.example.com", "console.example.com["}, {`a\`},
		{"https://console.example.com/"}, {"console.example.com/app"}} {
		cfg := testConfig(t, t.TempDir())
		cfg.AllowedOrigins = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "USHER_ALLOWED_ORIGINS") {
			t.Errorf("allowed origins %q: %v, want an error naming USHER_ALLOWED_ORIGINS", bad, err)
		}
	}
	for _, good := range [][]string{{"console.example.com"}, {"*.example.com", "https://console.example.com", "localhost:*"}} {
		cfg := testConfig(t, t.TempDir())
		cfg.AllowedOrigins = good
		if err := cfg.Validate(); err != nil {
			t.Errorf("allowed origins %q: %v", good, err)
		}
	}
}

// TestWSDeadPeerDropped: a peer that does not answer pings (here: a client that never reads, so its library never
// sends a pong) is dropped after about two ping intervals.
func TestWSDeadPeerDropped(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.PingInterval = 300 * time.Millisecond
	g, base := startGateway(t, cfg)
	c := mustDial(t, base, token(t, "*"))
	c.send(map[string]string{"op": "subscribe", "channel": "a"}) // written, never read
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
		st := g.HubStats()
		return st.Subscriptions == 1, fmt.Sprintf("%+v", st)
	})
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
		st := g.HubStats()
		return st.Connections == 0, fmt.Sprintf("%+v", st)
	})
}

// TestWSSubscribeWhileBusy: clients subscribe, several at once and again and again, while the channel's roster
// changes fast. Each snapshot is exactly the roster its events up to its seq make, and after it each client gets
// every later event of the channel once, in order: nothing the snapshot (shared between subscribers, and built
// while events go on) covers, nothing missing.
func TestWSSubscribeWhileBusy(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	const ch, clients, rounds = "busy", 6, 5
	tok := token(t, ch)

	// The channel changes all the time: joins of new members, and leaves of earlier ones.
	done := make(chan struct{})
	var last atomic.Uint32
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 10 * time.Second}
		now := time.Now().Unix()
		for uid := uint32(1); uid <= 600; uid++ {
			bodies := [][]byte{userEvent(fmt.Sprint("j", uid), ncs.AudienceJoin, ch, uid, 10, now, nil)}
			if uid%3 == 0 {
				bodies = append(bodies, userEvent(fmt.Sprint("l", uid-2), ncs.AudienceLeave, ch, uid-2, 11, now, nil))
			}
			for _, body := range bodies {
				if a := post(t, client, base+"/v1/ncs", body, signed(testSecret, body)); a.Status != 200 {
					t.Errorf("post: %d %s", a.Status, a.Raw)
					return
				}
			}
			last.Store(uid)
		}
	}()

	type view struct {
		snap   presence.Snapshot
		events []presence.Event
	}
	results := make(chan view, clients*rounds)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			c := mustDial(t, base, tok)
			for r := range rounds {
				for last.Load() < uint32(100*r+10*i) { // spread the subscribes over the burst
					time.Sleep(time.Millisecond)
				}
				c.subscribe(ch) // again: starts over with a new snapshot
				var v view
				subscribed := false
				for got := false; !got; {
					f, err := c.read(10 * time.Second)
					switch {
					case err != nil:
						t.Errorf("client %d round %d: %v", i, r, err)
						return
					case f.Type == "subscribed" && !subscribed:
						subscribed = true
					case f.Type == "snapshot" && subscribed:
						v.snap, got = f.Snapshot, true
					case f.Type == "presence" && !subscribed: // the last round's, sent before the new subscribe
					default:
						t.Errorf("client %d round %d: unexpected frame %s", i, r, f.Raw)
						return
					}
				}
				// Read until the burst is over and this client has caught up with the channel.
				for {
					f, err := c.read(2 * time.Second)
					if err != nil {
						break // quiet for 2 s: the burst is over, or this round's share is read
					}
					if f.Type != "presence" || f.Channel != ch {
						t.Errorf("unexpected frame %s", f.Raw)
						return
					}
					v.events = append(v.events, f.Event)
					if r < rounds-1 && last.Load() >= uint32(100*(r+1)+10*i) {
						break // on to the next round's subscribe
					}
				}
				results <- v
			}
		})
	}
	wg.Wait()
	<-done
	close(results)

	var all struct{ Events []presence.Event }
	if code, raw := getJSON(t, base, "/v1/channels/"+ch+"/events?limit=1000", tok, &all); code != 200 {
		t.Fatal(raw)
	}
	n := 0
	for v := range results {
		n++
		// The snapshot is the fold of the channel's events up to its seq.
		fold := presence.NewView()
		i := 0
		for ; i < len(all.Events) && all.Events[i].Seq <= v.snap.Seq; i++ {
			fold.Apply(all.Events[i])
		}
		want := fold.Snapshot(ch)
		want.Epoch = v.snap.Epoch // the stream's, which the events do not carry
		if a, b := js(v.snap), js(want); a != b || v.snap.Epoch == "" {
			t.Fatalf("snapshot at seq %d:\n%s\nthe events up to it make:\n%s", v.snap.Seq, a, b)
		}
		// Then the channel's next events, each once, in order (a round may stop before the end).
		for k, e := range v.events {
			if i+k >= len(all.Events) || e.Seq != all.Events[i+k].Seq {
				t.Fatalf("after the snapshot at %d, event %d is seq %d; the channel's next is %+v", v.snap.Seq, k, e.Seq, all.Events[min(i+k, len(all.Events)-1)])
			}
		}
	}
	if n != clients*rounds {
		t.Fatalf("%d subscriptions checked, want %d", n, clients*rounds)
	}
}

// TestWSShutdownGoingAway: on shutdown each client gets a close frame with 1001 (going away), so that it resumes
// elsewhere, instead of a connection dropped without a word.
func TestWSShutdownGoingAway(t *testing.T) {
	t.Parallel()
	g, err := gateway.Start(context.Background(), testConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + g.Addr().String()
	clients := []*wsClient{mustDial(t, base, token(t, "*")), mustDial(t, base, token(t, "*"))}
	for _, c := range clients {
		c.subscribe("show-1")
		c.expect("subscribed", "show-1")
		c.expect("snapshot", "show-1")
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- g.Shutdown(ctx)
	}()
	for i, c := range clients {
		_, err := c.read(20 * time.Second)
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Errorf("client %d: %v (close status %d), want close status 1001", i, err, got)
		}
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestEventReadsLeaveNoConsumer: each page of events, read for a resume or for GET .../events, goes through an
// ordered consumer of its own; none stays on the server once read.
func TestEventReadsLeaveNoConsumer(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.RecentEvents = 1 // resumes read the stored events, not the view's memory
	g, base := startGateway(t, cfg)
	joinAudience(t, base, "show-1", 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	consumers := func() int {
		s, err := g.JetStream().Stream(ctx, bus.PresenceStream)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Consumers
	}
	c := mustDial(t, base, token(t, "*"))
	c.subscribe("show-1")
	c.expect("subscribed", "show-1")
	at := c.expect("snapshot", "show-1").Seq
	for at < 3 { // a 200 means stored: the view may get the joins after the snapshot
		at = c.expect("presence", "show-1").Seq
	}
	before := consumers() // the view's own
	for range 3 {
		c.subscribe("show-1", 0)
		c.expect("subscribed", "show-1")
		c.expectEvents("show-1", 3, 0)
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/channels/show-1/events?since=0", nil)
		req.Header.Set("Authorization", "Bearer "+token(t, "*"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET events: %d", resp.StatusCode)
		}
	}
	c.quiet()
	if n := scrape(t, base, "")[`usher_ws_resumes_total{from="stored"}`]; n != 3 {
		t.Fatalf("%v resumes from the stored events, want 3", n)
	}
	if after := consumers(); after != before {
		t.Fatalf("%d consumers on %s after 3 resumes and 3 reads of events (up to seq %d), %d before", after, bus.PresenceStream, at, before)
	}
}

// A stream made anew (here: an instance started on an empty data directory) starts its seqs again. A client that
// resumes from a seq of the old stream, naming its epoch, gets reset and a snapshot of the new one, not the new
// stream's events after that seq; GET .../events answers 410. A restart on the same data directory keeps the epoch,
// so its clients resume.
func TestResumeAcrossAStreamMadeAnew(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	tok := token(t, ch)
	start := func(dir string) (*gateway.Gateway, string) {
		g, err := gateway.Start(context.Background(), testConfig(t, dir))
		if err != nil {
			t.Fatalf("start gateway: %v", err)
		}
		return g, "http://" + g.Addr().String()
	}
	stop := func(g *gateway.Gateway) {
		if err := g.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	dirA := t.TempDir()
	g, base := start(dirA)
	joinAudience(t, base, ch, 1, 2, 3)
	old := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	stop(g)
	if old.Epoch == "" {
		t.Fatalf("snapshot without an epoch: %+v", old)
	}

	// Restarted on the same data: the same stream, the same epoch; the client resumes.
	g, base = start(dirA)
	if s := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 }); s.Epoch != old.Epoch {
		t.Fatalf("epoch %s after a restart, was %s", s.Epoch, old.Epoch)
	}
	c := mustDial(t, base, tok)
	c.send(map[string]any{"op": "subscribe", "channel": ch, "since": old.Seq, "epoch": old.Epoch})
	c.expect("subscribed", ch)
	joinAudience(t, base, ch, 4)
	if ev := c.expectEvents(ch, 1, old.Seq); ev[0].UID != 4 {
		t.Fatalf("after the resume: %+v", ev)
	}
	stop(g)

	// On an empty data directory: a new stream, past the old seq.
	g, base = start(t.TempDir())
	defer stop(g)
	joinAudience(t, base, ch, 11, 12, 13, 14, 15, 16)
	fresh := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 6 })
	if fresh.Epoch == old.Epoch || fresh.Seq <= old.Seq {
		t.Fatalf("new stream: epoch %s seq %d; old: epoch %s seq %d", fresh.Epoch, fresh.Seq, old.Epoch, old.Seq)
	}
	c = mustDial(t, base, tok)
	c.send(map[string]any{"op": "subscribe", "channel": ch, "since": old.Seq, "epoch": old.Epoch})
	c.expect("subscribed", ch)
	c.expect("reset", ch)
	if s := c.expect("snapshot", ch).Snapshot; s.Counts.Audience != 6 || s.Epoch != fresh.Epoch {
		t.Fatalf("snapshot after reset: %+v", s)
	}

	path := fmt.Sprintf("/v1/channels/%s/events?since=%d&epoch=", ch, old.Seq)
	var body struct {
		Events []presence.Event `json:"events"`
		Epoch  string           `json:"epoch"`
	}
	if status, raw := getJSON(t, base, path+old.Epoch, tok, &body); status != http.StatusGone || !strings.Contains(raw, `"error":"expired"`) {
		t.Fatalf("events of the old epoch: %d %s", status, raw)
	}
	if status, raw := getJSON(t, base, path+fresh.Epoch, tok, &body); status != http.StatusOK || len(body.Events) != int(fresh.Seq-old.Seq) || body.Epoch != fresh.Epoch {
		t.Fatalf("events of the new epoch: %d %s", status, raw)
	}
}

// USHER_PRESENCE deleted by hand while the checkpoints are kept (or restored from an older backup than them): at
// the next start the stream is made anew, behind the checkpoint. The applier goes on from the stream with the
// checkpoint's rosters, and so must the view: it serves those rosters, then the new events, at the new seqs, and a
// client resuming from the old stream gets reset and a snapshot.
func TestStreamDeletedBehindTheCheckpoint(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	tok := token(t, ch)
	cfg := testConfig(t, t.TempDir())
	cfg.CheckpointInterval = 100 * time.Millisecond
	g, base := startGatewayToStop(t, cfg)
	joinAudience(t, base, ch, 1, 2, 3)
	joinAudience(t, base, "other", 7, 8)
	old := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	// Every event stored before the stream goes: one still to publish would fail, and so would the final
	// checkpoint, and the next start would derive every event again from the first notification.
	waitSnapshot(t, base, "other", func(s presence.Snapshot) bool { return s.Counts.Audience == 2 })
	// The stream goes; the checkpoints stay (the applier saves its last one as it stops).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.JetStream().DeleteStream(ctx, bus.PresenceStream); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	g, base = startGateway(t, cfg)
	joinAudience(t, base, ch, 4)
	s := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 4 })
	if s.Seq != 1 || s.Epoch == old.Epoch {
		t.Fatalf("snapshot %+v: want the old members and the new join, at seq 1 of a new epoch (old: %s)", s, old.Epoch)
	}
	c := mustDial(t, base, tok)
	c.send(map[string]any{"op": "subscribe", "channel": ch, "since": 0, "epoch": old.Epoch})
	c.expect("subscribed", ch)
	c.expect("reset", ch)
	if snap := c.expect("snapshot", ch).Snapshot; snap.Counts.Audience != 4 {
		t.Fatalf("snapshot after reset: %+v", snap)
	}
	joinAudience(t, base, ch, 5)
	if ev := c.expectEvents(ch, 1, 1); ev[0].UID != 5 || ev[0].Seq != 2 {
		t.Fatalf("live after the snapshot: %+v", ev)
	}
	var list struct{ Channels []presence.Summary }
	if status, raw := getJSON(t, base, "/v1/channels", token(t, "*"), &list); status != 200 || len(list.Channels) != 2 {
		t.Fatalf("channels: %d %s", status, raw)
	}

	// The checkpoints saved since count in the new stream: a view made from them takes the next events of a channel
	// whose last event was in the old stream.
	_ = c.conn.CloseNow() // it reads no more: Shutdown would wait out its close handshake
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, base = startGateway(t, cfg)
	joinAudience(t, base, "other", 9)
	waitSnapshot(t, base, "other", func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
}

// USHER_PRESENCE made anew while an instance runs (deleted and made again by hand): the view notices the new epoch,
// stops serving its rosters of the old stream, closes its WebSockets with 1012 so that their clients resume (and
// get reset and a snapshot), and serves again, at the new stream's seqs.
func TestStreamMadeAnewWhileRunning(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	tok := token(t, ch)
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	joinAudience(t, base, ch, 1, 2, 3)
	old := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	c := mustDial(t, base, tok)
	c.subscribe(ch)
	c.expect("subscribed", ch)
	c.expect("snapshot", ch)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	remakePresenceStream(ctx, t, g.JetStream())
	_, _, err := c.conn.Read(ctx)
	if status := websocket.CloseStatus(err); status != websocket.StatusServiceRestart {
		t.Fatalf("the WebSocket got %v (status %d), want a close with 1012", err, status)
	}
	joinAudience(t, base, ch, 4)
	s := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 4 })
	// (With no checkpoint saved yet, the applier derives every event again, from the first notification.)
	if s.Epoch == old.Epoch {
		t.Fatalf("snapshot %+v after the stream was made anew (before: epoch %s seq %d)", s, old.Epoch, old.Seq)
	}
	c = mustDial(t, base, tok)
	c.send(map[string]any{"op": "subscribe", "channel": ch, "since": old.Seq, "epoch": old.Epoch})
	c.expect("subscribed", ch)
	c.expect("reset", ch)
	if snap := c.expect("snapshot", ch).Snapshot; snap.Counts.Audience != 4 || snap.Epoch != s.Epoch {
		t.Fatalf("snapshot after reset: %+v", snap)
	}
}

// USHER_PRESENCE made anew and written to without a pause: the view's consumer, made again on the new stream, would
// go on from the seq it had reached, taking the new stream's events for the ones that follow, and never be idle
// long enough to check the epoch. It notices when it makes the consumer again, and closes its WebSockets with 1012.
func TestStreamMadeAnewUnderLoad(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	joinAudience(t, base, ch, 1, 2, 3)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	c := mustDial(t, base, token(t, ch))
	c.subscribe(ch)
	c.expect("subscribed", ch)
	c.expect("snapshot", ch)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	js := g.JetStream()
	remakePresenceStream(ctx, t, js)
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.conn.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()
	// Another writer's events, one every 50 ms, with no pause for the view to find idle.
	for i := 1; ; i++ {
		select {
		case err := <-closed:
			if status := websocket.CloseStatus(err); status != websocket.StatusServiceRestart {
				t.Fatalf("the WebSocket got %v (status %d), want a close with 1012", err, status)
			}
			return
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the view did not notice the stream made anew within 15 s")
		}
		e := fmt.Sprintf(`{"channel":"elsewhere","event":"join","role":"audience","uid":%d,"clientSeq":1,"ts":1,"noticeId":"x-%d","source":"ncs"}`, 100+i, i)
		if _, err := js.Publish(ctx, "usher.presence.elsewhere", []byte(e)); err != nil {
			t.Fatal(err)
		}
	}
}

// USHER_PRESENCE made anew while the checkpoints are kept, and an instance whose view loads the checkpoint after
// the applier went on in the new stream: the applier clamped the checkpoint's rosters to the new stream's last seq
// as it found it (0), and published the next events from seq 1. A view that loads that checkpoint later must take
// those events, not clamp to the stream's last seq as it finds it then and skip them.
func TestViewAfterTheApplierWentOnInAStreamMadeAnew(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	start := func(name string) (*gateway.Gateway, string) {
		cfg := testConfig(t, "")
		cfg.NATSURL, cfg.InstanceID, cfg.LeaseTTL = ns.ClientURL(), name, time.Second
		cfg.CheckpointInterval = time.Hour // the only checkpoints: those saved as an applier stops
		g, err := gateway.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
		return g, "http://" + g.Addr().String()
	}
	a, baseA := start("a")
	joinAudience(t, baseA, ch, 1, 2, 3)
	waitSnapshot(t, baseA, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	if err := a.Shutdown(context.Background()); err != nil { // its final checkpoint: presence event 3
		t.Fatal(err)
	}
	a, baseA = start("a")
	waitSnapshot(t, baseA, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := a.JetStream()
	remakePresenceStream(ctx, t, js)
	joinAudience(t, baseA, ch, 4) // the applier's publish at seq 4 fails; it starts again from the checkpoint
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
		s, err := js.Stream(ctx, bus.PresenceStream)
		if err != nil {
			return false, err.Error()
		}
		last := s.CachedInfo().State.LastSeq
		return last == 1, fmt.Sprintf("the new stream's last seq is %d, want 1 (the join of 4)", last)
	})

	// An instance started now loads the checkpoint of presence event 3 of the old stream, which now holds 1 event.
	_, baseB := start("b")
	s := waitSnapshot(t, baseB, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 4 })
	if s.Seq != 1 {
		t.Fatalf("b's snapshot: %+v, want seq 1", s)
	}
	joinAudience(t, baseA, ch, 5)
	for _, base := range []string{baseA, baseB} {
		waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 5 && s.Seq == 2 })
	}
}

// remakePresenceStream deletes USHER_PRESENCE and makes it again, empty, with the gateway's default settings (as an
// operator might by hand): a new epoch, and seqs starting again.
func remakePresenceStream(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	remakeStream(ctx, t, js, bus.PresenceStream)
}

// remakeStream is remakePresenceStream for the stream called name.
func remakeStream(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) {
	t.Helper()
	if err := js.DeleteStream(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: gateway.DefaultDedupWindow,
		MaxAge: gateway.DefaultNCSMaxAge, PresenceMaxAge: gateway.DefaultPresenceMaxAge, LeaseTTL: gateway.DefaultLeaseTTL}); err != nil {
		t.Fatal(err)
	}
}

// A limit set by hand on USHER_PRESENCE that removes events from the middle of the stream (max_msgs_per_subject:
// the oldest events of one channel, while the stream's first seq stays where it was) would let a client resume
// without the events removed, told nothing: its roster would be wrong for good. Usher sets it back at start.
func TestResumeAfterAPerChannelLimitSetByHand(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	cfg := testConfig(t, "")
	cfg.NATSURL = ns.ClientURL()
	cfg.RecentEvents = 1 // the resume reads the stored events, which the limit removed from
	start := func() (*gateway.Gateway, string) {
		g, err := gateway.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
		return g, "http://" + g.Addr().String()
	}
	g, base := start()
	joinAudience(t, base, "other", 100) // the stream's first event, kept: the stream's first seq stays 1
	joinAudience(t, base, ch, 1)
	s := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ps, err := g.JetStream().Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	c := ps.CachedInfo().Config
	c.MaxMsgsPerSubject = 2 // by hand
	if _, err := g.JetStream().UpdateStream(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, base = start() // Usher's own settings unchanged
	joinAudience(t, base, ch, 2, 3, 4)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 4 })

	cl := mustDial(t, base, token(t, ch))
	cl.send(map[string]any{"op": "subscribe", "channel": ch, "since": s.Seq, "epoch": s.Epoch})
	cl.expect("subscribed", ch)
	if f := cl.next(10 * time.Second); f.Type == "reset" {
		if snap := cl.expect("snapshot", ch).Snapshot; snap.Counts.Audience != 4 {
			t.Fatalf("snapshot after reset: %+v", snap)
		}
		return
	} else if f.Type != "presence" || f.Event.UID != 2 {
		t.Fatalf("resumed after %d: first frame %s, want the join of 2 (or reset and a snapshot)", s.Seq, f.Raw)
	}
	if ev := cl.expectEvents(ch, 2, s.Seq+1); ev[0].UID != 3 || ev[1].UID != 4 {
		t.Fatalf("resumed: %+v", ev)
	}
}

// USHER_NCS deleted by hand and made again while Usher runs: its seqs start again at 1. The notifications stored in
// the new stream, each answered 200, must all reach the rosters.
func TestNCSStreamMadeAnewWhileRunning(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	joinAudience(t, base, ch, 1, 2, 3)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := g.JetStream()
	remakeStream(ctx, t, js, bus.NCSStream)
	joinAudience(t, base, ch, 4, 5, 6, 7)
	testutil.Eventually(t, 15*time.Second, 50*time.Millisecond, func() (bool, string) {
		var s presence.Snapshot
		status, raw := getJSON(t, base, "/v1/channels/"+ch+"/presence", token(t, ch), &s)
		return status == 200 && s.Counts.Audience == 7, raw
	})
}

// TestResumeAQuietChannelAfterExpiry: a channel with no event for longer than USHER_PRESENCE_MAX_AGE, while other
// channels' events expire, has a snapshot whose seq is older than the oldest event kept. A client resuming from it
// has missed nothing: it goes live, with no reset (which would give it a snapshot at that same seq, and a reset
// again on every reconnect). A since after which the channel's own events are gone still gets a reset (gone from
// the stream, and from the instance's memory, which here holds only the latest event).
func TestResumeAQuietChannelAfterExpiry(t *testing.T) {
	t.Parallel()
	base, quiet, quiet2, busy := quietAfterExpiry(t, func(cfg *gateway.Config) { cfg.RecentEvents = 1 })
	tok := token(t, "quiet")

	c := mustDial(t, base, tok)
	c.send(map[string]any{"op": "subscribe", "channel": "quiet", "since": quiet2.Seq, "epoch": quiet2.Epoch})
	c.expect("subscribed", "quiet")
	c.quiet() // no reset, no snapshot
	joinAudience(t, base, "quiet", 3)
	if ev := c.expectEvents("quiet", 1, busy.Seq); ev[0].UID != 3 {
		t.Fatalf("after the resume: %+v", ev)
	}

	// From quiet's first join: its second is gone.
	c = mustDial(t, base, tok)
	c.send(map[string]any{"op": "subscribe", "channel": "quiet", "since": quiet.Seq, "epoch": quiet.Epoch})
	c.expect("subscribed", "quiet")
	c.expect("reset", "quiet")
	if s := c.expect("snapshot", "quiet").Snapshot; s.Counts.Audience != 3 {
		t.Fatalf("snapshot after the reset: %+v", s)
	}
}

// Events gone from the stream but still in the instance's memory are replayed from there: no reset.
func TestResumeFromMemoryPastExpiry(t *testing.T) {
	t.Parallel()
	base, quiet, quiet2, _ := quietAfterExpiry(t)
	c := mustDial(t, base, token(t, "quiet"))
	c.send(map[string]any{"op": "subscribe", "channel": "quiet", "since": quiet.Seq, "epoch": quiet.Epoch})
	c.expect("subscribed", "quiet")
	if ev := c.expectEvents("quiet", 1, quiet.Seq); ev[0].Seq != quiet2.Seq || ev[0].UID != 2 {
		t.Fatalf("resumed %+v, want quiet's second join at %d", ev, quiet2.Seq)
	}
	c.quiet()
}

// An instance that started with USHER_PRESENCE at seq N is ready once its view holds N. When the stream is made
// anew afterwards (its seqs start again) the view reloads onto the new stream, and serves; its readiness must not
// go on waiting for seq N of the old stream, or /readyz says 503 until the new stream has as many events.
func TestReadyAfterStreamMadeAnew(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	cfg := testConfig(t, t.TempDir())
	cfg.CheckpointInterval = 100 * time.Millisecond
	g, base := startGatewayToStop(t, cfg)
	joinAudience(t, base, ch, 1, 2, 3, 4, 5)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 5 })
	if err := g.Shutdown(context.Background()); err != nil { // saves the final checkpoint, at seq 5
		t.Fatal(err)
	}

	g, base = startGateway(t, cfg) // started with USHER_PRESENCE at seq 5
	old := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 5 })
	if code := getStatus(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d after start-up", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	remakePresenceStream(ctx, t, g.JetStream())
	joinAudience(t, base, ch, 6)
	s := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 6 && s.Epoch != old.Epoch })
	if s.Seq != 1 {
		t.Fatalf("snapshot %+v: want seq 1 of the new stream", s)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		code, raw := getJSON(t, base, "/readyz", "", nil)
		return code == 200, fmt.Sprintf("/readyz %d %s while the view serves the new stream at seq %d", code, raw, s.Seq)
	})
}

// TestWSResumeChurn: a client that drops its connection again and again, each time after a few milliseconds, and
// resumes from the last event it had, while events of its channel and of two others keep coming, gets every event
// of its channel exactly once and in order. The view's memory holds only 6 events, so the resumes are answered from
// it or from USHER_PRESENCE as the client falls behind, and it moves on under them.
func TestWSResumeChurn(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.RecentEvents = 6
	_, base := startGateway(t, cfg)
	tok := token(t, "a")
	const n = 600 // notifications, a third of them of "a"
	posted := make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: 10 * time.Second}
		for i := range n {
			body := audienceJoin(fmt.Sprint("churn-", i), []string{"a", "b", "c"}[i%3], uint32(i+1), 1)
			if !sendSigned(client, base+"/v1/ncs", body) {
				posted <- fmt.Errorf("notification %d refused", i)
				return
			}
		}
		posted <- nil
	}()

	c := mustDial(t, base, tok)
	c.subscribe("a")
	c.expect("subscribed", "a")
	start := c.expect("snapshot", "a").Snapshot
	last := start.Seq
	var got []uint64
	// read takes the frames that come within d, which must be events of "a"; then the connection is closed.
	read := func(d time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(d); time.Now().Before(deadline); {
			f, err := c.read(time.Until(deadline))
			if err != nil {
				return
			}
			if f.Type != "presence" || f.Channel != "a" {
				t.Fatalf("after %d events: got %s, want events of a", len(got), f.Raw)
			}
			got, last = append(got, f.Seq), f.Seq
		}
	}
	resume := func() {
		t.Helper()
		c = mustDial(t, base, tok)
		c.send(map[string]any{"op": "subscribe", "channel": "a", "since": last, "epoch": start.Epoch})
		c.expect("subscribed", "a")
	}
	for done := false; !done; {
		read(time.Duration(rand.IntN(15)) * time.Millisecond)
		_ = c.conn.CloseNow()
		time.Sleep(time.Duration(rand.IntN(12)) * time.Millisecond) // some of the time, past what the memory holds
		select {
		case err := <-posted:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
		}
		resume()
	}
	final := waitSnapshot(t, base, "a", func(s presence.Snapshot) bool { return s.Counts.Audience == n/3 })
	for last < final.Seq {
		f := c.next(10 * time.Second)
		if f.Type != "presence" || f.Channel != "a" {
			t.Fatalf("after %d events: got %s, want events of a", len(got), f.Raw)
		}
		got, last = append(got, f.Seq), f.Seq
	}
	c.quiet()

	var want []uint64
	for since := start.Seq; ; {
		var page struct{ Events []presence.Event }
		if code, raw := getJSON(t, base, fmt.Sprintf("/v1/channels/a/events?since=%d&limit=1000", since), tok, &page); code != 200 {
			t.Fatalf("events: %d %s", code, raw)
		}
		if len(page.Events) == 0 {
			break
		}
		for _, e := range page.Events {
			want = append(want, e.Seq)
		}
		since = page.Events[len(page.Events)-1].Seq
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the client got the events %v of a; its events after %d are %v", got, start.Seq, want)
	}
	m := scrape(t, base, "")
	t.Logf("resumes from memory %v, stored %v", m[`usher_ws_resumes_total{from="memory"}`], m[`usher_ws_resumes_total{from="stored"}`])
}
