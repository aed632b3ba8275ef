package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/hub"
	"github.com/usher-presence/usher/test/testutil"
	"github.com/usher-presence/usher/web/static"
)

// usherJSPage serves usher.js, and a blank page that loads it at /.
func usherJSPage(t *testing.T) *http.ServeMux {
	t.Helper()
	lib, err := static.FS.ReadFile("usher.js")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /usher.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write(lib)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<!doctype html><title>usher.js</title><script src="/usher.js"></script>`))
	})
	return mux
}

// shortToken is a token maker for resumingClient: a token of the viewer for the channel, valid for d, whose expiry
// it keeps in *expiry.
func shortToken(t *testing.T, d time.Duration, expiry *time.Time) func(ch string) string {
	return func(ch string) string {
		*expiry = time.Now().Add(d)
		short, err := auth.Issue(testJWTSecret, []string{ch}, d, "viewer")
		if err != nil {
			t.Fatal(err)
		}
		return short
	}
}

// busyThenSnapshot is a scriptedServer script: the first busy connections are closed with 1013, and every later
// one's subscribe gets subscribed and an empty snapshot of "show" at seq 10, the connection then held open.
func busyThenSnapshot(busy int) func(ctx context.Context, c *websocket.Conn, n int) {
	return func(ctx context.Context, c *websocket.Conn, n int) {
		if n <= busy {
			_ = c.Close(websocket.StatusTryAgainLater, "busy")
			return
		}
		if !readOp(ctx, c, "subscribe") {
			return
		}
		writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
			`{"type":"snapshot","channel":"show","seq":10,"hosts":[],"audience":[],"users":[],"counts":{}}`)
		<-ctx.Done()
	}
}

// scriptedServer serves usher.js on a blank page and answers GET /v1/ws with script, run once per connection (n
// counts them from 1). It stands in for Usher where a test needs the server to misbehave on cue, or frames in an
// order that a real server produces only by chance.
func scriptedServer(t *testing.T, script func(ctx context.Context, c *websocket.Conn, n int)) string {
	t.Helper()
	return serveScript(t, usherJSPage(t), script)
}

// scriptedConsole is scriptedServer with the console at / (GET /v1/channels answers 403, as for a token without
// "*").
func scriptedConsole(t *testing.T, script func(ctx context.Context, c *websocket.Conn, n int)) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static.FS))
	mux.HandleFunc("GET /v1/channels", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"error":"forbidden","message":"needs *"}`))
	})
	return serveScript(t, mux, script)
}

// serveScript serves mux, with GET /v1/ws answered by script, until the test ends.
func serveScript(t *testing.T, mux *http.ServeMux, script func(ctx context.Context, c *websocket.Conn, n int)) string {
	var conns atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	mux.HandleFunc("GET /v1/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{hub.Subprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		script(ctx, c, int(conns.Add(1)))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { cancel(); srv.Close() })
	return srv.URL
}

// readOp reads the client's next frame and checks its op.
func readOp(ctx context.Context, c *websocket.Conn, op string) bool {
	_, b, err := c.Read(ctx)
	if err != nil {
		return false
	}
	var m struct{ Op string }
	return json.Unmarshal(b, &m) == nil && m.Op == op
}

func writeJSON(ctx context.Context, c *websocket.Conn, frames ...string) {
	for _, f := range frames {
		if c.Write(ctx, websocket.MessageText, []byte(f)) != nil {
			return
		}
	}
}

// A server that accepts and closes at once (overloaded, shutting down, or closing the client as too slow) sees
// usher.js wait longer each time: the backoff starts over only once a connection has lasted.
func TestUsherJSBacksOffFromAServerThatClosesAtOnce(t *testing.T) {
	t.Parallel()
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, _ int) {
		_ = c.Close(websocket.StatusTryAgainLater, "busy")
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		window.tries = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 40, maxDelay: 5000});
		c.onstate = (state, info) => { if (state === "reconnecting" && info.delay !== undefined) tries.push(info); };
		c.subscribe("show", {});
		window.client = c;
		return true;
	})()`)
	b.poll("six reconnections", `tries.length >= 6`, wait)
	var tries []struct{ Attempt, Delay, Code int }
	if err := json.Unmarshal([]byte(eval[string](b, `client.close(), JSON.stringify(tries)`)), &tries); err != nil {
		t.Fatal(err)
	}
	for i, try := range tries[:6] {
		if try.Attempt != i+1 || try.Code != int(websocket.StatusTryAgainLater) {
			t.Fatalf("reconnection %d: %+v; want attempt %d after a 1013 (all: %+v)", i+1, try, i+1, tries)
		}
	}
	if d := tries[5].Delay; d < 40*32/2 {
		t.Fatalf("sixth delay %d ms, want at least %d: the backoff did not grow (%+v)", d, 40*32/2, tries)
	}
}

// Frames that the server sent before it read an unsubscribe and a new subscribe of the same channel belong to the
// old subscription: the new handlers get nothing before their own subscribed and snapshot.
func TestUsherJSDropsTheOldSubscriptionsFrames(t *testing.T) {
	t.Parallel()
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		if n > 1 || !readOp(ctx, c, "subscribe") {
			return
		}
		writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
			`{"type":"snapshot","channel":"show","seq":10,"hosts":[],"audience":[],"users":[],"counts":{}}`,
			`{"type":"presence","channel":"show","seq":11,"event":"join","uid":1}`)
		if !readOp(ctx, c, "unsubscribe") || !readOp(ctx, c, "subscribe") {
			return
		}
		writeJSON(ctx, c, `{"type":"presence","channel":"show","seq":12,"event":"join","uid":2}`, // in flight: the old one's
			`{"type":"subscribed","channel":"show"}`,
			`{"type":"snapshot","channel":"show","seq":12,"hosts":[],"audience":[],"users":[],"counts":{}}`,
			`{"type":"presence","channel":"show","seq":13,"event":"join","uid":3}`)
		<-ctx.Done()
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		window.got = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t"});
		const second = {
			subscribed: () => got.push("subscribed"),
			snapshot: s => got.push("snapshot " + s.seq),
			event: e => got.push("event " + e.seq),
		};
		c.subscribe("show", {event: e => { if (e.seq === 11) { c.unsubscribe("show"); c.subscribe("show", second); } }});
		window.client = c;
		return true;
	})()`)
	b.poll("the new subscription's event 13", `got.includes("event 13")`, wait)
	if got := eval[string](b, `client.close(), got.join(", ")`); got != "subscribed, snapshot 12, event 13" {
		t.Fatalf("the new handlers got %q, want %q", got, "subscribed, snapshot 12, event 13")
	}
}

// A subscribe answered "unavailable" (the server is loading its rosters) is made again by usher.js, with backoff,
// on the same connection, until the server serves it; the error handler hears of each refusal.
func TestUsherJSSubscribesAgainAfterUnavailable(t *testing.T) {
	t.Parallel()
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		if n > 1 {
			return
		}
		for range 2 {
			if !readOp(ctx, c, "subscribe") {
				return
			}
			writeJSON(ctx, c, `{"type":"error","code":"unavailable","channel":"show","message":"loading"}`)
		}
		if !readOp(ctx, c, "subscribe") {
			return
		}
		writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
			`{"type":"snapshot","channel":"show","seq":10,"hosts":[],"audience":[],"users":[],"counts":{}}`)
		<-ctx.Done()
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		window.got = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 40});
		c.onstate = state => { if (state !== "live" && state !== "connecting") got.push(state); };
		c.subscribe("show", {
			error: e => got.push("error " + e.code),
			subscribed: () => got.push("subscribed"),
			snapshot: s => got.push("snapshot " + s.seq),
		});
		window.client = c;
		return true;
	})()`)
	b.poll("the snapshot", `got.includes("snapshot 10")`, wait)
	if got := eval[string](b, `client.close(), got.join(", ")`); got != "error unavailable, error unavailable, subscribed, snapshot 10" {
		t.Fatalf("got %q, want two refusals, then the subscription on the same connection", got)
	}
}

// watchSnapshots opens site in a browser, where usher.js (minDelay ms) subscribes to "show": the page's got lists
// the snapshots it receives, as "snapshot <seq>".
func watchSnapshots(t *testing.T, site string, minDelay int) *browser {
	t.Helper()
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, fmt.Sprintf(`(() => {
		window.got = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: %d});
		c.subscribe("show", {snapshot: s => got.push("snapshot " + s.seq)});
		window.client = c;
		return true;
	})()`, minDelay))
	return b
}

// A server that keeps answering "unavailable" is left: at the unavailableTries-th refusal on one connection usher.js
// reconnects (behind a load balancer, perhaps to an instance that serves) rather than retrying there for ever.
func TestUsherJSReconnectsAfterRepeatedUnavailable(t *testing.T) {
	t.Parallel()
	var refused [3]atomic.Int32 // per connection
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		for n <= 2 && readOp(ctx, c, "subscribe") {
			refused[n].Add(1)
			writeJSON(ctx, c, `{"type":"error","code":"unavailable","channel":"show","message":"loading"}`)
		}
		if n == 3 && readOp(ctx, c, "subscribe") {
			writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
				`{"type":"snapshot","channel":"show","seq":10,"hosts":[],"audience":[],"users":[],"counts":{}}`)
			<-ctx.Done()
		}
	})
	b := watchSnapshots(t, site, 20)
	b.poll("the snapshot on the third connection", `got.includes("snapshot 10")`, wait)
	if a, c := refused[1].Load(), refused[2].Load(); a != 3 || c != 3 {
		t.Fatalf("subscribes refused: %d on the first connection, %d on the second; want 3 on each (the subscribe and 2 retries)", a, c)
	}
}

// A retry after "unavailable" belongs to its connection: once the connection is gone, the new one's own subscribe
// is all there is, and a timer left from the old one does not subscribe again after it was served.
func TestUsherJSRetryStaysOnItsConnection(t *testing.T) {
	t.Parallel()
	var extra atomic.Int32
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		switch n {
		case 1:
			for range 2 { // fewer than unavailableTries: the client retries on this connection
				if !readOp(ctx, c, "subscribe") {
					return
				}
				writeJSON(ctx, c, `{"type":"error","code":"unavailable","channel":"show","message":"loading"}`)
			}
			_ = c.Close(websocket.StatusServiceRestart, "reloading") // a retry is pending
		case 2:
			if !readOp(ctx, c, "subscribe") {
				return
			}
			writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
				`{"type":"snapshot","channel":"show","seq":10,"hosts":[],"audience":[],"users":[],"counts":{}}`)
			for readOp(ctx, c, "subscribe") {
				extra.Add(1)
			}
		}
	})
	b := watchSnapshots(t, site, 40)
	b.poll("the snapshot", `got.includes("snapshot 10")`, wait)
	time.Sleep(2 * time.Second) // the old retry's backoff is at most 320 ms
	if n := extra.Load(); n != 0 {
		t.Fatalf("%d more subscribes on the second connection after it was served", n)
	}
}

// A console panel whose resume is refused ("unavailable") and then served by a replay, with no snapshot, shows no
// error once it is served.
func TestConsoleUnavailableThenResumed(t *testing.T) {
	t.Parallel()
	site := scriptedConsole(t, func(ctx context.Context, c *websocket.Conn, n int) {
		if !readOp(ctx, c, "subscribe") {
			return
		}
		switch n {
		case 1:
			writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
				`{"type":"snapshot","channel":"show","seq":10,"hosts":[],"audience":[{"uid":1,"since":1}],"users":[],"counts":{"hosts":0,"audience":1}}`)
			_ = c.Close(websocket.StatusServiceRestart, "reloading")
		case 2:
			writeJSON(ctx, c, `{"type":"error","code":"unavailable","channel":"show","message":"loading"}`)
			if !readOp(ctx, c, "subscribe") {
				return
			}
			writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
				`{"type":"presence","seq":11,"channel":"show","event":"join","role":"audience","uid":2,"clientSeq":1,"ts":1,"noticeId":"n","source":"ncs"}`)
			<-ctx.Done()
		}
	})
	b := newBrowser(t, 1280, 800)
	b.do(wait, chromedp.Navigate(site+"/#token="+token(t, "alice", "show")))
	b.waitPanel("show", "the resumed event, and no error", wait, func(p panel) bool { return p.Seq == 11 && p.Error == "" })
}

// A token that expires while the client is cut off would be refused (401, which a browser reports only as a failed
// connection) on every attempt: usher.js stops with state "closed" and code 4001 instead of retrying for ever, and
// setToken with a new token reconnects and resumes from the last event, without a snapshot.
func TestUsherJSStopsOnAnExpiredTokenAndResumesWithANewOne(t *testing.T) {
	t.Parallel()
	var expiry time.Time
	srv, proxy, b, seq := resumingClient(t, shortToken(t, 4*time.Second, &expiry), "")
	const ch = "show-1"

	proxy.Cut() // the client retries, refused, until the token has expired
	time.Sleep(time.Until(expiry) + 500*time.Millisecond)
	srv.send(t, user(ncs.AudienceJoin, ch, 12, seq+1, nil)) // happens while the client is away
	proxy.Restore()
	b.poll(`state "closed" with code 4001`, `states.includes("closed 4001")`, wait)
	time.Sleep(time.Second) // long enough for two more attempts, had it gone on
	if s := eval[string](b, `states.slice(states.indexOf("closed 4001")).join(", ")`); s != "closed 4001" {
		t.Fatalf("states after the stop: %s; want none", s)
	}

	eval[bool](b, `client.setToken(`+jsString(token(t, "viewer", ch))+`), true`)
	b.poll("the event that happened while away", `got.includes("event 12")`, wait)
	if got := eval[string](b, `client.close(), got.join(", ")`); got != "snapshot 1, event 12" {
		t.Fatalf("the handlers got %q, want %q: a resume, not a new snapshot", got, "snapshot 1, event 12")
	}
}

// A device whose clock runs a day ahead does not take a valid token for an expired one: cut off and back, the
// client reconnects and resumes rather than stopping with 4001.
func TestUsherJSIgnoresAWrongDeviceClock(t *testing.T) {
	t.Parallel()
	srv, proxy, b, seq := resumingClient(t, func(ch string) string { return token(t, "viewer", ch) },
		`const realNow = Date.now; Date.now = () => realNow() + 24 * 3600 * 1000; // this device's clock is a day ahead`)
	const ch = "show-1"
	proxy.Cut()
	b.poll("a failed reconnection", `states.filter(s => s.startsWith("reconnecting")).length >= 2 || states.includes("closed 4001")`, wait)
	srv.send(t, user(ncs.AudienceJoin, ch, 12, seq+1, nil))
	proxy.Restore()
	b.poll("the event sent while cut off", `got.includes("event 12") || states.includes("closed 4001")`, wait)
	if got := eval[string](b, `client.close(), got.join(", ")`); got != "snapshot 1, event 12" {
		t.Fatalf("the handlers got %q (states %s), want a resume: %q", got, eval[string](b, `states.join(", ")`), "snapshot 1, event 12")
	}
}

// resumingClient is a real Usher behind a proxy the test can cut, with a join of uid 11 on channel "show-1", and a
// browser page whose usher.js client (window.client) watches it with token tok after setup (JavaScript run first).
// Its snapshots and events are listed in window.got, its states (with their codes) in window.states.
func resumingClient(t *testing.T, tok func(ch string) string, setup string) (*server, *testutil.CutProxy, *browser, int64) {
	t.Helper()
	srv := startServer(t)
	proxy := testutil.NewCutProxy(t, strings.TrimPrefix(srv.base, "http://"))
	const ch = "show-1"
	seq := time.Now().UnixMilli()
	srv.send(t, user(ncs.AudienceJoin, ch, 11, seq, nil))
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate("http://"+proxy.Addr()+"/")) // the console page, which loads usher.js
	eval[bool](b, `(() => {
		`+setup+`
		window.got = []; window.states = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: `+jsString(tok(ch))+`, minDelay: 100, maxDelay: 400});
		c.onstate = (state, info) => states.push(state + " " + (info.code || ""));
		c.subscribe(`+jsString(ch)+`, {snapshot: s => got.push("snapshot " + s.audience.length), event: e => got.push("event " + e.uid)});
		window.client = c;
		return true;
	})()`)
	b.poll("the snapshot", `got.includes("snapshot 1")`, wait)
	return srv, proxy, b, seq
}

// A token handed to the client long after it was issued (cached by the app, a saved session) has less life left
// than its lifetime: when it runs out while the client is cut off, the client asks the server over HTTP why it
// cannot connect, learns token_expired, and stops with 4001 then, not a lifetime later.
func TestUsherJSStopsOnACachedTokenThatExpired(t *testing.T) {
	t.Parallel()
	var expiry time.Time
	_, proxy, b, _ := resumingClient(t, func(ch string) string {
		now := time.Now()
		expiry = now.Add(3 * time.Second)
		c := auth.Claims{Channels: []string{ch}, RegisteredClaims: jwt.RegisteredClaims{Subject: "viewer",
			IssuedAt: jwt.NewNumericDate(now.Add(-time.Hour)), ExpiresAt: jwt.NewNumericDate(expiry)}}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testJWTSecret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}, "")
	proxy.Cut()
	time.Sleep(time.Until(expiry) + 500*time.Millisecond)
	proxy.Restore()
	b.poll(`state "closed" with code 4001`, `states.includes("closed 4001")`, wait)
	if s := eval[string](b, `states.slice(states.indexOf("closed 4001")).join(", ")`); s != "closed 4001" {
		t.Fatalf("states after the stop: %s; want none", s)
	}
}

// Channel names are keys, not properties: a channel named like a property every JavaScript object has
// ("constructor", "toString", "__proto__"; all valid Agora names) is kept and resumed as any other. The frames of
// its earlier subscription are dropped after a subscribe again, and a reconnection resumes it, and only it.
func TestUsherJSChannelsNamedLikeObjectProperties(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"constructor", "toString", "__proto__"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ch := jsString(name)
			var (
				mu     sync.Mutex
				second []string // what the client sent on the second connection
			)
			site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
				switch n {
				case 1:
					if !readOp(ctx, c, "subscribe") {
						return
					}
					writeJSON(ctx, c, `{"type":"subscribed","channel":`+ch+`}`,
						`{"type":"snapshot","channel":`+ch+`,"seq":10,"hosts":[],"audience":[],"users":[],"counts":{}}`,
						`{"type":"presence","channel":`+ch+`,"seq":11,"event":"join","uid":1}`)
					if !readOp(ctx, c, "unsubscribe") || !readOp(ctx, c, "subscribe") {
						return
					}
					writeJSON(ctx, c, `{"type":"presence","channel":`+ch+`,"seq":12,"event":"join","uid":2}`, // the old one's
						`{"type":"subscribed","channel":`+ch+`}`,
						`{"type":"snapshot","channel":`+ch+`,"seq":12,"hosts":[],"audience":[],"users":[],"counts":{}}`,
						`{"type":"presence","channel":`+ch+`,"seq":13,"event":"join","uid":3}`)
					_ = c.Close(websocket.StatusServiceRestart, "reloading")
				case 2:
					for {
						_, b, err := c.Read(ctx)
						if err != nil {
							return
						}
						mu.Lock()
						second = append(second, string(b))
						first := len(second) == 1
						mu.Unlock()
						if first {
							writeJSON(ctx, c, `{"type":"subscribed","channel":`+ch+`}`,
								`{"type":"presence","channel":`+ch+`,"seq":14,"event":"join","uid":4}`)
						}
					}
				}
			})
			b := newBrowser(t, 800, 600)
			b.do(wait, chromedp.Navigate(site+"/"))
			eval[bool](b, `(() => {
				window.got = [];
				const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 40});
				const second = {
					subscribed: () => got.push("subscribed"),
					snapshot: s => got.push("snapshot " + s.seq),
					event: e => got.push("event " + e.seq),
				};
				c.subscribe(`+ch+`, {event: e => { if (e.seq === 11) { c.unsubscribe(`+ch+`); c.subscribe(`+ch+`, second); } }});
				window.client = c;
				return true;
			})()`)
			b.poll("the event after the reconnection", `got.includes("event 14")`, wait)
			time.Sleep(300 * time.Millisecond) // for any other subscribe the client would send
			const want = "subscribed, snapshot 12, event 13, subscribed, event 14"
			if got := eval[string](b, `client.close(), got.join(", ")`); got != want {
				t.Errorf("the new handlers got %q, want %q", got, want)
			}
			mu.Lock()
			defer mu.Unlock()
			if wantSent := `{"op":"subscribe","channel":` + ch + `,"since":13}`; len(second) != 1 || second[0] != wantSent {
				t.Errorf("on the second connection the client sent %q, want only %s", second, wantSent)
			}
		})
	}
}

// An app that renews its token before it expires (setToken while connected: "the next connection uses it") keeps
// its client: when the server closes the old token's connection with 4001, usher.js reconnects with the new token
// and resumes, rather than stopping with state "closed" as if it had no valid token.
func TestUsherJSGoesOnWithATokenRenewedBeforeExpiry(t *testing.T) {
	t.Parallel()
	var expiry time.Time
	srv, _, b, seq := resumingClient(t, shortToken(t, 3*time.Second, &expiry), "")
	const ch = "show-1"
	eval[bool](b, `client.setToken(`+jsString(token(t, "viewer", ch))+`), true`) // renewed in good time
	time.Sleep(time.Until(expiry) + 500*time.Millisecond)                        // the server closes the old token's connection
	srv.send(t, user(ncs.AudienceJoin, ch, 12, seq+1, nil))
	b.poll("the event after the old token's expiry", `got.includes("event 12") || states.includes("closed 4001")`, wait)
	if got := eval[string](b, `client.close(), got.join(", ")`); got != "snapshot 1, event 12" {
		t.Fatalf("the handlers got %q (states %s), want a resume with the new token: %q", got,
			eval[string](b, `states.join(", ")`), "snapshot 1, event 12")
	}
}

// A listener that throws is the app's fault, reported as an uncaught exception, but it does not stop the client:
// an onstate that throws on "reconnecting" must not leave the client waiting for a reconnection that never comes.
func TestUsherJSGoesOnWhenAListenerThrows(t *testing.T) {
	t.Parallel()
	site := scriptedServer(t, busyThenSnapshot(2))
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		window.got = []; window.thrown = 0;
		// The app's bug is reported as an uncaught error; this page counts it rather than failing the test on it.
		window.addEventListener("error", e => { if (String(e.message).includes("the app's bug")) { thrown++; e.preventDefault(); } });
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 40});
		c.onstate = state => { got.push(state); if (state === "reconnecting") throw new Error("the app's bug"); };
		c.subscribe("show", {snapshot: s => got.push("snapshot " + s.seq)});
		window.client = c;
		return true;
	})()`)
	b.poll("the snapshot, or a stalled client", `got.includes("snapshot 10") || got.filter(s => s === "reconnecting").length === 1 && thrown > 0 && performance.now() > 5000`, wait)
	if got := eval[string](b, `client.close(), got.join(", ")`); !strings.Contains(got, "snapshot 10") {
		t.Fatalf("the client got %q and stopped after onstate threw", got)
	}
	if n := eval[int](b, `thrown`); n == 0 {
		t.Errorf("the listener's exception was not reported")
	}
}

// An app may close the client from its onstate, for instance when it has gone to the background and a reconnection
// starts. The client is then closed: the attempt it was starting is not made, and no state follows "closed".
func TestUsherJSCloseFromOnstateStopsTheAttempt(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	script := busyThenSnapshot(1)
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		conns.Store(int32(n))
		script(ctx, c, n)
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		window.got = []; window.background = false;
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 200});
		c.onstate = (state, info) => {
			got.push(state);
			if (state === "reconnecting" && info.delay !== undefined) setTimeout(() => { background = true; }, 0); // while it waits
			if ((state === "connecting" || state === "reconnecting") && background) c.close();
		};
		c.subscribe("show", {snapshot: s => got.push("snapshot " + s.seq)});
		window.client = c;
		return true;
	})()`)
	b.poll("closed", `got.includes("closed")`, wait)
	time.Sleep(time.Second) // for a connection and a snapshot, had the attempt gone on
	got := eval[string](b, `got.join(", ")`)
	if got != "live, reconnecting, reconnecting, closed" || conns.Load() != 1 {
		t.Fatalf("after close() from onstate: states %q, %d connections; want %q and 1", got, conns.Load(), "live, reconnecting, reconnecting, closed")
	}
}

// A token the server will never take (here signed with another key, as after the JWT secret was changed) stops the
// client with "closed" 4001, reason invalid_token, instead of retrying for ever; setToken with a good one goes on.
// A token whose nbf has not come yet by the server's clock (an issuer's clock ahead) is retried until it is valid.
func TestUsherJSTokensTheServerRefuses(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const ch = "show-1"
	srv.send(t, user(ncs.AudienceJoin, ch, 11, time.Now().UnixMilli(), nil))
	sign := func(key string, nbf time.Time) string {
		c := auth.Claims{Channels: []string{ch}, RegisteredClaims: jwt.RegisteredClaims{Subject: "viewer",
			IssuedAt: jwt.NewNumericDate(time.Now()), NotBefore: jwt.NewNumericDate(nbf),
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(srv.base+"/"))
	start := func(tok string) {
		eval[bool](b, `(() => {
			if (window.client) window.client.close();
			const got = [], states = []; // this client's: the one closed above may still report
			window.got = got; window.states = states;
			const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: `+jsString(tok)+`, minDelay: 100, maxDelay: 300});
			c.onstate = (state, info) => states.push(state + " " + (info.code || "") + " " + (info.reason || ""));
			c.subscribe(`+jsString(ch)+`, {snapshot: s => got.push("snapshot " + s.audience.length)});
			window.client = c;
			return true;
		})()`)
	}

	start(sign("another-secret-0123456789abcdef", time.Now()))
	b.poll(`state "closed" 4001 invalid_token`, `states.includes("closed 4001 invalid_token")`, wait)
	time.Sleep(time.Second) // long enough for several more attempts, had it gone on
	if s := eval[string](b, `states.slice(states.indexOf("closed 4001 invalid_token")).join(", ")`); s != "closed 4001 invalid_token" {
		t.Fatalf("states after the stop: %s; want none", s)
	}
	eval[bool](b, `client.setToken(`+jsString(token(t, "viewer", ch))+`), true`)
	b.poll("the snapshot with the good token", `got.includes("snapshot 1")`, wait)

	validFrom := time.Now().Add(3 * time.Second).Truncate(time.Second) // nbf is in whole seconds
	start(sign(testJWTSecret, validFrom))
	b.poll("the snapshot once the token is valid", `got.includes("snapshot 1") || states.some(s => s.startsWith("closed"))`, wait)
	if s := eval[string](b, `states.join(", ")`); strings.Contains(s, "closed") || time.Now().Before(validFrom) {
		t.Fatalf("states %s (the token is valid from %s)", s, validFrom.Format(time.RFC3339Nano))
	}
}

// usher.js resumes with the epoch of the snapshot its seq counts from, and takes the epoch of a later snapshot (after
// a reset: the stream was made anew) for the next resume.
func TestUsherJSResumesWithTheEpoch(t *testing.T) {
	t.Parallel()
	ops := make(chan string, 8)
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		_, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		ops <- string(b)
		switch n {
		case 1:
			writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
				`{"type":"snapshot","channel":"show","seq":10,"epoch":"1700000000000","hosts":[],"audience":[],"users":[],"counts":{}}`,
				`{"type":"presence","seq":11,"channel":"show","event":"join","role":"audience","uid":2,"clientSeq":1,"ts":1,"noticeId":"n","source":"ncs"}`)
			_ = c.Close(websocket.StatusServiceRestart, "restart")
		case 2:
			writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`, `{"type":"reset","channel":"show"}`,
				`{"type":"snapshot","channel":"show","seq":3,"epoch":"1800000000000","hosts":[],"audience":[],"users":[],"counts":{}}`)
			_ = c.Close(websocket.StatusServiceRestart, "restart")
		default:
			<-ctx.Done()
		}
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		window.got = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 50, maxDelay: 100});
		c.subscribe("show", {snapshot: s => got.push("snapshot " + s.seq), event: e => got.push("event " + e.seq)});
		window.client = c;
		return true;
	})()`)
	want := []string{
		`{"op":"subscribe","channel":"show"}`,
		`{"op":"subscribe","channel":"show","since":11,"epoch":"1700000000000"}`,
		`{"op":"subscribe","channel":"show","since":3,"epoch":"1800000000000"}`,
	}
	for i, w := range want {
		select {
		case got := <-ops:
			if got != w {
				t.Fatalf("subscribe %d: %s, want %s", i+1, got, w)
			}
		case <-time.After(wait):
			t.Fatalf("no subscribe %d (want %s)", i+1, w)
		}
	}
	if got := eval[string](b, `client.close(), got.join(", ")`); got != "snapshot 10, event 11, snapshot 3" {
		t.Fatalf("the handlers got %q", got)
	}
}

// The server stops taking the console's token (signed with a key it no longer has, as after USHER_JWT_SECRET was
// changed): usher.js stops with 4001 invalid_token, and the console says the token was refused, everywhere it says
// why it stopped: the request for a new token, the channel's notes, and the connection's status, none of them
// "expired".
func TestConsoleSaysTheServerRefusedTheToken(t *testing.T) {
	t.Parallel()
	var refusing atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static.FS))
	mux.HandleFunc("GET /v1/channels", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"error":"forbidden","message":"needs *"}`))
	})
	ctx, cancel := context.WithCancel(context.Background())
	mux.HandleFunc("GET /v1/ws", func(w http.ResponseWriter, r *http.Request) {
		if refusing.Load() { // the upgrade and usher.js's probe alike
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_token","message":"invalid token: bad signature or algorithm"}`))
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{hub.Subprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		if !readOp(ctx, c, "subscribe") {
			return
		}
		writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
			`{"type":"snapshot","channel":"show","seq":10,"hosts":[],"audience":[{"uid":1,"since":1}],"users":[],"counts":{"hosts":0,"audience":1}}`)
		for !refusing.Load() && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		_ = c.Close(websocket.StatusServiceRestart, "restarting")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { cancel(); srv.Close() })

	b := newBrowser(t, 1280, 800)
	b.do(wait, chromedp.Navigate(srv.URL+"/#token="+token(t, "alice", "show")))
	b.waitPanel("show", "the snapshot", wait, func(p panel) bool { return p.Seq == 10 })
	refusing.Store(true)
	b.poll("the request for a new token", `!document.querySelector("#renew").hidden && document.querySelector("#conn").dataset.state === "closed"`, wait)
	p := b.waitPanel("show", "the channel's note of the stop", wait, func(p panel) bool {
		return strings.Contains(strings.Join(p.Notes, "\n"), "the token after event 10")
	})
	msg := eval[string](b, `document.querySelector("#renew-msg").textContent`)
	detail := eval[string](b, `document.querySelector("#conn .conn-detail").textContent`)
	notes := strings.Join(p.Notes, "\n")
	if !strings.Contains(msg, "no longer accepts") || !strings.Contains(notes, "refused the token") ||
		strings.Contains(msg+notes+detail, "expired") || !strings.Contains(detail, "refused") {
		t.Fatalf("after the server refused the token: request %q, connection %q, notes %q", msg, detail, notes)
	}
}

// An app that closes the client (a React Native screen unmounting) leaves no timer of it running: here a subscribe
// answered "unavailable" has its retry pending, minutes away at most, when the app closes the client.
func TestUsherJSCloseLeavesNoTimer(t *testing.T) {
	t.Parallel()
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		if n == 1 && readOp(ctx, c, "subscribe") {
			writeJSON(ctx, c, `{"type":"error","code":"unavailable","channel":"show","message":"loading"}`)
		}
		for readOp(ctx, c, "subscribe") { // and answers the client's close
		}
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		// The timers usher.js has pending (it calls setTimeout and clearTimeout by their global names).
		window.pending = new Set();
		const set = window.setTimeout, clear = window.clearTimeout;
		window.setTimeout = (fn, ms) => {
			const id = set(() => { pending.delete(id); fn(); }, ms);
			if (String(new Error().stack).includes("/usher.js")) pending.add(id);
			return id;
		};
		window.clearTimeout = id => { pending.delete(id); clear(id); };
		window.got = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 5000, stableAfter: 60000});
		c.onstate = state => got.push(state);
		c.subscribe("show", {error: e => got.push("error " + e.code)});
		window.client = c;
		return true;
	})()`)
	b.poll("the refusal", `got.includes("error unavailable")`, wait)
	eval[bool](b, `client.close(), true`)
	b.poll("closed", `got.includes("closed")`, wait)
	if n := eval[int](b, `pending.size`); n != 0 {
		t.Fatalf("%d timers still pending after close() (states %s)", n, eval[string](b, `got.join(", ")`))
	}
}

// rnWebSocket is, in the page, a WebSocket that behaves as React Native's on Android: close() on a socket still
// connecting only marks it closing (the native module knows a socket only once it has opened), and a socket that
// then opens reports open and its messages all the same.
const rnWebSocket = `class RNWebSocket {
	constructor(url, protocols) {
		this.readyState = 0;
		const ws = this.native = new WebSocket(url, protocols);
		ws.onopen = () => { this.opened = true; this.readyState = 1; if (this.onopen) this.onopen({}); };
		ws.onmessage = m => { if (this.onmessage) this.onmessage({data: m.data}); };
		ws.onclose = e => { this.readyState = 3; if (this.onclose) this.onclose({code: e.code, reason: e.reason}); };
	}
	send(data) { this.native.send(data); }
	close(code, reason) {
		if (this.readyState >= 2) return;
		this.readyState = 2;
		if (this.opened) this.native.close(code, reason);
	}
}`

// slowHandshakes serves usher.js and answers GET /v1/ws after delay(n) (n counts the connections from 1), then
// serves "show" with a snapshot at seq 10n. Each connection's fate goes to ends: "n open" once the client sent
// its first frame, "n closed by the client" when the client closed it. open counts the sockets open.
func slowHandshakes(t *testing.T, delay func(n int) time.Duration) (site string, ends chan string, open *atomic.Int32) {
	ends, open = make(chan string, 64), new(atomic.Int32)
	var conns atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	mux := usherJSPage(t)
	mux.HandleFunc("GET /v1/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" { // usher.js asking whether its token is taken, after an attempt that failed
			http.Error(w, "not a WebSocket request", http.StatusBadRequest)
			return
		}
		n := int(conns.Add(1))
		select {
		case <-time.After(delay(n)):
		case <-ctx.Done():
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{hub.Subprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		open.Add(1)
		defer open.Add(-1)
		for first := true; ; first = false {
			_, _, err := c.Read(ctx)
			if err != nil {
				if websocket.CloseStatus(err) != -1 {
					ends <- fmt.Sprintf("%d closed by the client", n)
				}
				return
			}
			if first {
				ends <- fmt.Sprintf("%d open", n)
				writeJSON(ctx, c, `{"type":"subscribed","channel":"show"}`,
					fmt.Sprintf(`{"type":"snapshot","channel":"show","seq":%d,"hosts":[],"audience":[],"users":[],"counts":{}}`, 10*n))
			}
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { cancel(); srv.Close() })
	return srv.URL, ends, open
}

// A connection attempt abandoned after connectTimeout that opens later all the same (React Native's WebSocket on
// Android cannot cancel a handshake) is not the client's connection: usher.js closes it as it opens and takes
// nothing from it, so the app has one connection, and one snapshot.
func TestUsherJSClosesAnAbandonedAttemptThatOpens(t *testing.T) {
	t.Parallel()
	site, ends, open := slowHandshakes(t, func(n int) time.Duration {
		if n == 1 {
			return 1500 * time.Millisecond // past the client's connectTimeout
		}
		return 0
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		`+rnWebSocket+`
		window.got = []; window.states = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", WebSocket: RNWebSocket,
			connectTimeout: 500, minDelay: 50, maxDelay: 100});
		c.onstate = s => states.push(s);
		c.subscribe("show", {snapshot: s => got.push("snapshot " + s.seq)});
		window.client = c;
		return true;
	})()`)
	// Chromium opens one WebSocket to a host at a time, so the attempts after the first wait for its handshake too:
	// which one serves is not known, only that one does.
	b.poll("a snapshot", `got.length > 0`, wait)
	time.Sleep(2 * time.Second) // past every handshake
	got, states := eval[string](b, `got.join(", ")`), eval[string](b, `states.join(", ")`)
	if n := strings.Count(states, "live"); n != 1 || strings.Count(got, "snapshot") != 1 {
		t.Errorf("the page got %q, states %q; want one snapshot and one live", got, states)
	}
	if n := open.Load(); n != 1 {
		t.Errorf("%d sockets open, want the client's one", n)
	}
	eval[bool](b, `client.close(), true`)
	for deadline := time.Now().Add(5 * time.Second); open.Load() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets still open after close()", open.Load())
		}
	}
	close(ends)
	subscribed := 0
	for e := range ends {
		if strings.HasSuffix(e, " open") {
			subscribed++
		}
	}
	if subscribed != 1 {
		t.Errorf("the client subscribed on %d connections, want 1", subscribed)
	}
}

// An app that closes the client while it connects (a React Native screen unmounting at once) gets no connection:
// if the socket opens all the same, usher.js closes it, subscribes nothing and says nothing more than "closed".
func TestUsherJSCloseWhileConnecting(t *testing.T) {
	t.Parallel()
	site, ends, _ := slowHandshakes(t, func(int) time.Duration { return 700 * time.Millisecond })
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		`+rnWebSocket+`
		window.got = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", WebSocket: RNWebSocket});
		c.onstate = s => got.push(s);
		c.subscribe("show", {snapshot: s => got.push("snapshot " + s.seq)});
		c.close();
		return true;
	})()`)
	select {
	case e := <-ends:
		if e != "1 closed by the client" {
			t.Errorf("after close(): connection %s", e)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the socket was left open after close()")
	}
	b.poll(`"closed"`, `got.includes("closed")`, wait)
	time.Sleep(300 * time.Millisecond)
	if got := eval[string](b, `got.join(", ")`); got != "closed" {
		t.Fatalf("after close() while connecting: %q, want %q", got, "closed")
	}
}

// countingWebSocket, run in a page before usher.js makes its client, replaces the page's WebSocket with one that
// counts the sockets made (window.sockets; the last is window.socket) and, per socket, the subscribes sent and not
// answered yet (subscribed or error): window.maxWaiting is the most there ever were.
const countingWebSocket = `window.sockets = 0; window.maxWaiting = 0;
	window.WebSocket = class extends WebSocket {
		constructor(url, protocols) {
			super(url, protocols);
			sockets++;
			window.socket = this;
			this.waiting = 0;
			// Added before usher.js sets onmessage, so it runs first: an answer is counted before the next send.
			this.addEventListener("message", m => {
				const f = JSON.parse(m.data);
				if (f.type === "subscribed" || f.type === "error") this.waiting--;
			});
		}
		send(data) {
			if (JSON.parse(data).op === "subscribe") maxWaiting = Math.max(maxWaiting, ++this.waiting);
			super.send(data);
		}
	};`

// manyChannels starts, in b's page (which loads usher.js from a real Usher), a client (window.client) with tok that
// subscribes at once to every channel of names. The page lists what the handlers get: window.snaps the channels of
// each snapshot, window.events "<channel> <uid>" of each event, window.resets and window.errors ("<channel>
// <code>"); window.states the states, with their codes. Sockets are counted (countingWebSocket). After each
// snapshot, the page calls window.onSnapshot if setup (JavaScript run first) set it.
func manyChannels(b *browser, tok string, names []string, setup string) {
	b.t.Helper()
	list, err := json.Marshal(names)
	if err != nil {
		b.t.Fatal(err)
	}
	eval[bool](b, `(() => {
		`+countingWebSocket+`
		`+setup+`
		window.states = []; window.snaps = []; window.events = []; window.resets = []; window.errors = [];
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: `+jsString(tok)+`, minDelay: 100, maxDelay: 400});
		c.onstate = (state, info) => states.push(state + (info.code ? " " + info.code : ""));
		for (const ch of `+string(list)+`) {
			c.subscribe(ch, {snapshot: () => { snaps.push(ch); if (window.onSnapshot) onSnapshot(); }, event: e => events.push(ch + " " + e.uid),
				reset: () => resets.push(ch), error: e => errors.push(ch + " " + e.code)});
		}
		window.client = c;
		return true;
	})()`)
}

// names returns n channel names: prefix followed by a number of width digits.
func names(prefix string, n, width int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%0*d", prefix, width, i)
	}
	return out
}

// An app that subscribes to more channels at once than the server takes on a connection (a moderator's view, or a
// server whose USHER_MAX_SUBSCRIPTIONS is low) keeps its connection: usher.js sends its subscribes a few at a time,
// so the server never has so many waiting that it closes the connection (1008, on which the client reconnected and
// sent them all again, for ever). The first channels are served, the others refused with too_many_subscriptions.
func TestUsherJSSubscribesToMoreChannelsThanTheServerTakes(t *testing.T) {
	t.Parallel()
	const max = 2 // the server closes a connection on which more than max(2*2+16, 64) = 64 frames wait
	srv := startServerWith(t, func(c *gateway.Config) { c.MaxSubscriptions = max })
	chans := names("mod-", 100, 2)
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(srv.base+"/")) // the console page, which loads usher.js
	manyChannels(b, token(t, "moderator", "mod-*"), chans, "")
	b.poll("an answer to every subscribe, or a reconnection",
		`snaps.length + errors.length >= `+fmt.Sprint(len(chans))+` || states.some(s => s.startsWith("reconnecting"))`, wait)
	if s := eval[string](b, `states.join(", ")`); s != "live" {
		t.Fatalf("states %q, want only live: the connection did not stay (errors: %s)", s, eval[string](b, `errors.slice(0, 5).join(", ")`))
	}
	if got := eval[[]string](b, `snaps`); !slices.Equal(got, chans[:max]) {
		t.Errorf("snapshots of %q, want the first %d channels subscribed, %q", got, max, chans[:max])
	}
	var wantErrors []string
	for _, ch := range chans[max:] {
		wantErrors = append(wantErrors, ch+" too_many_subscriptions")
	}
	if got := eval[[]string](b, `errors`); !slices.Equal(got, wantErrors) {
		t.Errorf("errors %q, want too_many_subscriptions for each channel past the first %d, in order", got, max)
	}

	seq := time.Now().UnixMilli()
	srv.send(t, user(ncs.AudienceJoin, chans[0], 7, seq, nil), user(ncs.AudienceJoin, chans[1], 7, seq, nil))
	b.poll("the served channels' events", `events.includes("mod-00 7") && events.includes("mod-01 7")`, wait)
	if s, n, w := eval[string](b, `states.join(", ")`), eval[int](b, `sockets`), eval[int](b, `maxWaiting`); s != "live" || n != 1 || w > 16 {
		t.Errorf("states %q, %d sockets, at most %d subscribes waiting at once; want live, 1, at most 16", s, n, w)
	}
	eval[bool](b, `client.close(), true`)
}

// An app that watches many channels, all of them allowed, gets every one, with at most 16 subscribes waiting for
// their answer at a time. When the connection drops in the middle of them (here at the 50th snapshot, the window
// full), the next connection subscribes to every channel again through the window (the served ones resume, the
// others get their snapshot); when it drops once all are served, every channel resumes from its last event, none
// with a snapshot.
func TestUsherJSResumesManyChannels(t *testing.T) {
	t.Parallel()
	const n = 200
	srv := startServerWith(t, func(c *gateway.Config) { c.MaxSubscriptions = n })
	proxy := testutil.NewCutProxy(t, strings.TrimPrefix(srv.base, "http://"))
	chans := names("many-", n, 3)
	seq := time.Now().UnixMilli()
	joins := func(uid uint32) []notice {
		out := make([]notice, len(chans))
		for i, ch := range chans {
			out[i] = user(ncs.AudienceJoin, ch, uid, seq+int64(uid), nil)
		}
		return out
	}
	srv.sendMany(t, 8, joins(1))
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate("http://"+proxy.Addr()+"/"))
	// The first connection ends at the 50th snapshot, as the page takes it: no answer of that socket comes after.
	manyChannels(b, token(t, "moderator", "many-*"), chans, `window.onSnapshot = () => { if (snaps.length === 50) socket.close(); };`)
	lives := func(want int) {
		t.Helper()
		b.poll(fmt.Sprintf("live %d times", want), fmt.Sprintf(`states.filter(s => s === "live").length >= %d`, want), wait)
	}
	lives(2)
	b.poll("every snapshot", fmt.Sprintf(`snaps.length >= %d || errors.length > 0`, n), 3*wait)
	if got := eval[[]string](b, `snaps`); !slices.Equal(slices.Sorted(slices.Values(got)), chans) {
		t.Fatalf("%d snapshots, want one per channel (%d)", len(got), n)
	}

	eval[bool](b, `window.mark = states.length, true`)
	proxy.Cut()
	b.poll("a reconnection", `states.slice(mark).some(s => s.startsWith("reconnecting"))`, wait)
	srv.sendMany(t, 8, joins(2)) // while the client is away
	proxy.Restore()
	lives(3)
	b.poll("every channel's event of uid 2", fmt.Sprintf(`new Set(events.filter(e => e.endsWith(" 2"))).size >= %d || errors.length > 0`, n), 3*wait)
	if got := eval[int](b, `events.filter(e => e.endsWith(" 2")).length`); got != n {
		t.Errorf("%d events of uid 2, want one per channel (%d)", got, n)
	}
	if got := eval[[]string](b, `snaps`); !slices.Equal(slices.Sorted(slices.Values(got)), chans) {
		t.Errorf("%d snapshots, want one per channel (%d): a resume sent snapshots", len(got), n)
	}
	if r, e := eval[[]string](b, `resets`), eval[[]string](b, `errors`); len(r)+len(e) > 0 {
		t.Errorf("resets %q, errors %q; want none", r, e)
	}
	if w := eval[int](b, `maxWaiting`); w > 16 {
		t.Errorf("at most %d subscribes waited at once, want at most 16 (states %s)", w, eval[string](b, `states.join(", ")`))
	}
	eval[bool](b, `client.close(), true`)
}

// Subscribes waiting in usher.js for room (the window of 16) are the app's latest word: an unsubscribe of one never
// reaches the server, a subscribe again of one is sent once, for the new handlers, and a channel subscribed again
// while its first subscribe is in flight gets its own answer only, the first one's dropped.
func TestUsherJSQueuedSubscribes(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		read []string // the client's frames, as "<op> <channel>"
	)
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		if n > 1 {
			return
		}
		for seq := 1; ; seq++ {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var f struct{ Op, Channel string }
			if err := json.Unmarshal(b, &f); err != nil {
				return
			}
			mu.Lock()
			read = append(read, f.Op+" "+f.Channel)
			mu.Unlock()
			if f.Op == "subscribe" {
				ch := jsString(f.Channel)
				writeJSON(ctx, c, `{"type":"subscribed","channel":`+ch+`}`,
					fmt.Sprintf(`{"type":"snapshot","channel":%s,"seq":%d,"hosts":[],"audience":[],"users":[],"counts":{}}`, ch, seq))
			}
		}
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		`+countingWebSocket+`
		window.got = {};
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t"});
		const handlers = name => {
			const push = what => (got[name] = got[name] || []).push(what);
			return {subscribed: () => push("subscribed"), snapshot: s => push("snapshot"), error: e => push("error " + e.code)};
		};
		c.onstate = state => {
			if (state !== "live") return;
			// Not channel names: the server's refusal would not name them, and their answer would never free a place.
			window.refused = ["", 5, null].filter(ch => { try { c.subscribe(ch, {}); return false; } catch (e) { return true; } }).length;
			// All at once, as the connection opens: the first 16 go out, the others wait.
			for (let i = 0; i < 40; i++) { const ch = "c" + String(i).padStart(2, "0"); c.subscribe(ch, handlers(ch)); }
			c.unsubscribe("c30"); // waiting
			c.subscribe("c31", handlers("c31 again")); // waiting
			c.subscribe("c00", handlers("c00 again")); // in flight, and now waiting again
			c.unsubscribe("c01"); c.subscribe("c01", handlers("c01 again")); // the same, unsubscribed first
		};
		window.client = c;
		return true;
	})()`)
	// An answer to a subscribe sends the next one as the page takes it: none waits for an answer once all are in.
	b.poll("an answer to every subscribe", `sockets === 1 && socket.waiting === 0 && (got["c01 again"] || []).length >= 2`, wait)
	got := eval[map[string][]string](b, `got`)
	eval[bool](b, `client.close(), true`)
	if n := eval[int](b, `refused`); n != 3 {
		t.Errorf("subscribe took %d of 3 names that are not channel names", 3-n)
	}
	for _, ch := range []string{"c00", "c01", "c30", "c31"} {
		if len(got[ch]) > 0 {
			t.Errorf("%s's first handlers got %q, want nothing: the app replaced them before any answer", ch, got[ch])
		}
	}
	for _, ch := range []string{"c00 again", "c01 again", "c31 again", "c02", "c39"} {
		if want := []string{"subscribed", "snapshot"}; !slices.Equal(got[ch], want) {
			t.Errorf("%s got %q, want %q", ch, got[ch], want)
		}
	}
	mu.Lock()
	frames := slices.Clone(read)
	mu.Unlock()
	count := func(frame string) int {
		return len(slices.DeleteFunc(slices.Clone(frames), func(f string) bool { return f != frame }))
	}
	for frame, want := range map[string]int{"subscribe c00": 2, "subscribe c01": 2, "unsubscribe c01": 1, "subscribe c31": 1,
		"subscribe c30": 0, "unsubscribe c30": 0, "unsubscribe c31": 0, "subscribe c39": 1} {
		if n := count(frame); n != want {
			t.Errorf("the server read %q %d times, want %d (frames: %q)", frame, n, want, frames)
		}
	}
	if w := eval[int](b, `maxWaiting`); w > 16 {
		t.Errorf("at most %d subscribes waited at once, want at most 16", w)
	}
}

// A subscribe made again after "unavailable" waits for room in the window as any other: here the first 16 channels
// are refused, the next 16 wait for their answers (held back), and the retries of the first 16 come due meanwhile.
// They go out after the channels queued before them, once answers make room.
func TestUsherJSRetriesGoThroughTheWindow(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var (
		mu   sync.Mutex
		read []string // the channels of the client's subscribes
	)
	site := scriptedServer(t, func(ctx context.Context, c *websocket.Conn, n int) {
		if n > 1 {
			return
		}
		refused := map[string]bool{}
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var f struct{ Op, Channel string }
			if err := json.Unmarshal(b, &f); err != nil || f.Op != "subscribe" {
				return
			}
			mu.Lock()
			read = append(read, f.Channel)
			mu.Unlock()
			ch := jsString(f.Channel)
			if f.Channel < "c16" && !refused[f.Channel] {
				refused[f.Channel] = true
				writeJSON(ctx, c, `{"type":"error","code":"unavailable","channel":`+ch+`,"message":"loading"}`)
				continue
			}
			select {
			case <-release:
			case <-ctx.Done():
				return
			}
			writeJSON(ctx, c, `{"type":"subscribed","channel":`+ch+`}`,
				`{"type":"snapshot","channel":`+ch+`,"seq":10,"hosts":[],"audience":[],"users":[],"counts":{}}`)
		}
	})
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(site+"/"))
	eval[bool](b, `(() => {
		`+countingWebSocket+`
		window.got = {};
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: "t", minDelay: 40});
		for (let i = 0; i < 40; i++) {
			const ch = "c" + String(i).padStart(2, "0"), push = what => (got[ch] = got[ch] || []).push(what);
			c.subscribe(ch, {subscribed: () => push("subscribed"), snapshot: () => push("snapshot"), error: e => push("error " + e.code)});
		}
		window.client = c;
		return true;
	})()`)
	// The 8 channels never sent and the 16 retries (due within 80 ms of their refusal) wait in the client's queue.
	b.poll("the retries due", `client.queue.length === 24 || maxWaiting > 16`, wait)
	close(release)
	b.poll("every snapshot", `Object.values(got).filter(g => g.includes("snapshot")).length === 40 || sockets > 1`, wait)
	got := eval[map[string][]string](b, `got`)
	w, sockets := eval[int](b, `maxWaiting`), eval[int](b, `sockets`)
	eval[bool](b, `client.close(), true`)
	if w > 16 || sockets != 1 {
		t.Errorf("at most %d subscribes waited at once on %d sockets, want at most 16 on 1", w, sockets)
	}
	for _, ch := range names("c", 40, 2) {
		want := []string{"subscribed", "snapshot"}
		if ch < "c16" {
			want = append([]string{"error unavailable"}, want...)
		}
		if !slices.Equal(got[ch], want) {
			t.Errorf("%s got %q, want %q", ch, got[ch], want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The retries come in the order their timers (with jitter) fired, after every channel subscribed before.
	if len(read) != 56 || !slices.Equal(read[:40], names("c", 40, 2)) ||
		!slices.Equal(slices.Sorted(slices.Values(read[40:])), names("c", 16, 2)) {
		t.Errorf("the server read subscribes of %q, want c00 to c39, then c00 to c15 again in any order", read)
	}
}

// A token that is not a JWT does not make usher.js throw. One that a WebSocket subprotocol cannot carry (a space;
// the browser's WebSocket throws on it) stops the client at once, without a connection attempt, as a token the
// server refuses: "closed" 4001 invalid_token. One whose claims cannot be read (not base64url, not JSON) is tried
// as it is, and the server's refusal stops the client the same way; so does any token sent in the query.
func TestUsherJSTokensThatAreNotJWTs(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(srv.base+"/"))
	eval[bool](b, `(() => { `+countingWebSocket+` return true; })()`)
	for _, tc := range []struct {
		name, token, tokenIn string
		sockets              bool // whether the client tries to connect
	}{
		{"a space", "not a jwt", "protocol", false},
		{"a line break", token(t, "viewer", "show-1") + "\n", "protocol", false},
		{"claims not base64url", "eyJhbGciOiJIUzI1NiJ9.not!base64.sig", "protocol", true},
		{"claims not JSON", "eyJhbGciOiJIUzI1NiJ9.e2JhZA.sig", "protocol", true}, // "{bad"
		{"a space, in the query", "not a jwt", "query", true},
	} {
		eval[bool](b, `(() => {
			if (window.client) client.close();
			const states = []; // this client's: the one closed above may still report
			window.states = states; window.threw = ""; window.sockets = 0;
			try {
				const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: `+jsString(tc.token)+`,
					tokenIn: `+jsString(tc.tokenIn)+`, minDelay: 100, maxDelay: 300});
				c.onstate = (state, info) => states.push(state + " " + (info.code || "") + " " + (info.reason || ""));
				c.subscribe("show-1", {});
				window.client = c;
			} catch (e) {
				window.client = null;
				threw = String(e);
			}
			return true;
		})()`)
		if threw := eval[string](b, `threw`); threw != "" {
			t.Errorf("a token with %s: new UsherClient threw %s", tc.name, threw)
			continue
		}
		b.poll(`state "closed" for a token with `+tc.name, `states.some(s => s.startsWith("closed"))`, wait)
		if s := eval[string](b, `states.join(", ")`); !strings.HasSuffix(s, "closed 4001 invalid_token") {
			t.Errorf("a token with %s: states %q, want them to end with %q", tc.name, s, "closed 4001 invalid_token")
		}
		if n := eval[int](b, `sockets`); (n > 0) != tc.sockets {
			t.Errorf("a token with %s: %d sockets made; want some: %t", tc.name, n, tc.sockets)
		}
	}
	eval[bool](b, `window.client && client.close(), true`)
}

// A token that a WebSocket subprotocol cannot carry, given with setToken while connected, stops the client as the
// connection drops, "closed" 4001 invalid_token, rather than the reconnection throwing and the client stopping
// without a word; setToken with a good token then resumes.
func TestUsherJSSetTokenThatCannotBeSent(t *testing.T) {
	t.Parallel()
	srv, proxy, b, seq := resumingClient(t, func(ch string) string { return token(t, "viewer", ch) }, countingWebSocket)
	const ch = "show-1"
	eval[bool](b, `client.onstate = (state, info) => states.push(state + " " + (info.code || "") + " " + (info.reason || "")), true`)
	eval[bool](b, `client.setToken("not a jwt"), true`)
	proxy.Cut()
	b.poll(`state "closed"`, `states.some(s => s.startsWith("closed"))`, wait)
	if s, n := eval[string](b, `states.join(", ")`), eval[int](b, `sockets`); !strings.HasSuffix(s, "closed 4001 invalid_token") || n != 1 {
		t.Fatalf("states %q, %d sockets; want them to end with %q, and the first socket only", s, n, "closed 4001 invalid_token")
	}
	srv.send(t, user(ncs.AudienceJoin, ch, 12, seq+1, nil))
	proxy.Restore()
	eval[bool](b, `client.setToken(`+jsString(token(t, "viewer", ch))+`), true`)
	b.poll("the event that happened while stopped", `got.includes("event 12")`, wait)
	if got := eval[string](b, `client.close(), got.join(", ")`); got != "snapshot 1, event 12" {
		t.Fatalf("the handlers got %q, want %q: a resume", got, "snapshot 1, event 12")
	}
}

// A channel name with a lone surrogate (a string cut in the middle of an emoji) reaches the server as another name
// (JSON's "\ud800" decodes to U+FFFD), so the server's refusal, bad_request, names a channel the client never
// subscribed to, and that subscribe's place in the window was never given back: 16 of them, and no other subscribe
// went out on the connection, nor on any later one. subscribe throws on them, as on any name the server's answer
// would not name.
func TestUsherJSChannelNamesTheServerCannotName(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t, 800, 600)
	b.do(wait, chromedp.Navigate(srv.base+"/"))
	eval[bool](b, `(() => {
		`+countingWebSocket+`
		window.snaps = []; window.threw = 0;
		const c = new UsherClient({url: location.origin.replace("http", "ws") + "/v1/ws", token: `+jsString(token(t, "viewer", "show-1"))+`});
		c.onstate = state => {
			if (state !== "live") return;
			for (let i = 0; i < 16; i++) {
				for (const ch of ["cut-" + i + "\ud83d", "\ude00cut-" + i]) {
					try { c.subscribe(ch, {}); } catch (e) { threw++; }
				}
			}
			// Longer than Agora allows; the second makes a frame over the server's 4 KiB.
			for (const ch of ["x".repeat(65), "x".repeat(5000)]) {
				try { c.subscribe(ch, {}); } catch (e) { threw++; }
			}
			c.subscribe("show-1", {snapshot: () => snaps.push("show-1")});
		};
		window.client = c;
		return true;
	})()`)
	// Every subscribe sent has its answer, and one still waits in the client: it will never go.
	b.poll("show-1's snapshot", `snaps.length > 0 || (sockets === 1 && socket.waiting === 0 && client.queue.length > 0)`, wait)
	snaps, threw := eval[int](b, `snaps.length`), eval[int](b, `threw`)
	eval[bool](b, `client.close(), true`)
	if snaps != 1 {
		t.Errorf("show-1 got %d snapshots, want 1: its subscribe waits behind subscribes whose answers name another channel", snaps)
	}
	if threw != 34 {
		t.Errorf("subscribe threw on %d of 32 names with a lone surrogate and 2 too long", threw)
	}
	if sockets := eval[int](b, `sockets`); sockets != 1 {
		t.Errorf("%d connections: the client reconnected", sockets)
	}
}
