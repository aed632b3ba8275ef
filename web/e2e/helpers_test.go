package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/domdebugger"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
	"github.com/usher-presence/usher/web/e2e"
)

const (
	testSecret    = "ncs-secret-for-the-console-test"
	testJWTSecret = "jwt-secret-for-the-console-test-0123456789"
)

// logBook routes the gateway's warnings to t.Logf and keeps every line it logged, down to debug, so that a test can
// check what the server wrote (String).
type logBook struct {
	testutil.SyncBuffer // every line

	mu   sync.Mutex // guards done; held while a line is kept and logged, so that both see the lines in one order
	t    testing.TB
	done bool
}

func (w *logBook) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.SyncBuffer.Write(p)
	if !w.done && (bytes.Contains(p, []byte("level=WARN")) || bytes.Contains(p, []byte("level=ERROR"))) {
		w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// server is a real gateway with in-process embedded NATS, stopped when the test ends.
type server struct {
	base string // http://127.0.0.1:port
	logs *logBook
	http *http.Client
}

func startServer(t *testing.T) *server {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith is startServer with the gateway's configuration changed by edit (if not nil) before it starts.
func startServerWith(t *testing.T, edit func(*gateway.Config)) *server {
	t.Helper()
	logs := &logBook{t: t}
	t.Cleanup(func() { logs.mu.Lock(); logs.done = true; logs.mu.Unlock() })
	cfg := gateway.Config{
		Addr:       "127.0.0.1:0",
		NCSSecrets: []string{testSecret},
		JWTSecret:  testJWTSecret,
		DataDir:    t.TempDir(),
		NATSListen: bus.ListenOff,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	g, err := gateway.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		if err := g.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &server{base: "http://" + g.Addr().String(), logs: logs, http: client}
}

func token(t testing.TB, sub string, channels ...string) string {
	t.Helper()
	tok, err := auth.Issue(testJWTSecret, channels, time.Hour, sub)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// notice is one signed NCS notification: an RTC channel event with its payload.
type notice struct {
	typ     ncs.EventType
	channel string
	payload map[string]any
}

var noticeCount struct {
	sync.Mutex
	n int
}

// user builds a user event (join, leave, role change) of uid in channel; extra fields override the defaults.
func user(typ ncs.EventType, channel string, uid uint32, clientSeq int64, extra map[string]any) notice {
	p := map[string]any{"channelName": channel, "uid": uid, "clientSeq": clientSeq, "ts": time.Now().Unix(),
		"account": fmt.Sprint("acc-", uid)}
	if typ.IsJoin() || typ.IsLeave() {
		p["platform"] = 1
	}
	for k, v := range extra {
		p[k] = v
	}
	return notice{typ: typ, channel: channel, payload: p}
}

func (n notice) body() []byte {
	noticeCount.Lock()
	noticeCount.n++
	id := fmt.Sprintf("console-test-%d-%d", time.Now().UnixNano(), noticeCount.n)
	noticeCount.Unlock()
	b, err := json.Marshal(map[string]any{"noticeId": id, "productId": 1, "eventType": int(n.typ),
		"notifyMs": time.Now().UnixMilli(), "sid": "sid-" + id, "payload": n.payload})
	if err != nil {
		panic(err)
	}
	return b
}

// post sends one notification, signed, and reports an error unless Usher answers 200.
func (s *server) post(n notice) error {
	body := n.body()
	req, err := http.NewRequest(http.MethodPost, s.base+"/v1/ncs", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	ncs.Sign(req.Header, testSecret, body)
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /v1/ncs: %d %s", resp.StatusCode, raw)
	}
	return nil
}

// send posts notifications in order.
func (s *server) send(t testing.TB, notices ...notice) {
	t.Helper()
	for _, n := range notices {
		if err := s.post(n); err != nil {
			t.Fatal(err)
		}
	}
}

// sendMany posts notifications from workers goroutines at once; order between them does not matter.
func (s *server) sendMany(t testing.TB, workers int, notices []notice) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	next := make(chan notice)
	for range workers {
		wg.Go(func() {
			for n := range next {
				if err := s.post(n); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, n := range notices {
		next <- n
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d notifications failed, the first: %v", len(errs), len(notices), errs[0])
	}
}

// getJSON GETs path from Usher with a bearer token and decodes a 200 answer into v.
func (s *server) getJSON(t testing.TB, path, tok string, v any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, raw)
	}
}

// waitRoster waits until Usher's own roster of channel satisfies want: the notifications were applied.
func (s *server) waitRoster(t testing.TB, channel string, want func(presence.Snapshot) bool) presence.Snapshot {
	t.Helper()
	tok := token(t, "tester", channel)
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		var snap presence.Snapshot
		s.getJSON(t, "/v1/channels/"+url.PathEscape(channel)+"/presence", tok, &snap)
		if want(snap) {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatalf("the roster of %q did not get there within 30 s; last: %+v", channel, snap.Counts)
		}
		<-tick.C
	}
}

// events returns every stored event of channel with seq > since, oldest first.
func (s *server) events(t testing.TB, channel string, since uint64) []presence.Event {
	t.Helper()
	tok := token(t, "tester", channel)
	var out []presence.Event
	for {
		var page struct{ Events []presence.Event }
		s.getJSON(t, fmt.Sprintf("/v1/channels/%s/events?since=%d&limit=1000", url.PathEscape(channel), since), tok, &page)
		out = append(out, page.Events...)
		if len(page.Events) < 1000 {
			return out
		}
		since = page.Events[len(page.Events)-1].Seq
	}
}

// browser is a headless Chromium tab, closed when the test ends. It records every URL the page requests, fails
// the test on an uncaught exception in the page, and saves screenshots under shots.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string

	mu   sync.Mutex
	urls []string
}

// moderatorConsole opens the console at base in a new browser, signed in with a token that grants "*", and waits
// for it to show.
func moderatorConsole(t *testing.T, base string) *browser {
	t.Helper()
	b := newBrowser(t, 1440, 900)
	b.do(wait, chromedp.EmulateViewport(1440, 900), chromedp.Navigate(base+"/#token="+token(t, "moderator", "*")))
	b.poll("the console", `!document.querySelector("#app").hidden`, wait)
	return b
}

// newBrowser starts Debian's Chromium with a fresh profile. With -short the test is skipped; without the browser
// it fails, so that CI cannot pass without running it.
func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	if testing.Short() {
		t.Skip("the console test runs a real browser; skipped with -short")
	}
	path, err := e2e.Chromium()
	if err != nil {
		t.Fatalf("the console test needs Chromium: %v", err)
	}
	shots := os.Getenv("USHER_SCREENSHOTS")
	if shots == "" {
		shots = t.ArtifactDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), e2e.AllocatorOptions(path, t.TempDir(), width, height)...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, shots: shots}
	// The first Do starts the browser and binds it to the context it gets, so it gets ctx itself; the wait is
	// bounded here instead, and cancelling ctx ends it.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err = <-started:
	case <-time.After(30 * time.Second):
		cancel()
		err = fmt.Errorf("no browser within 30 s: %w", <-started)
	}
	if err != nil {
		cancel()
		acancel()
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var u string
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			u = ev.Request.URL
		case *network.EventWebSocketCreated:
			u = ev.URL
		default:
			return
		}
		b.mu.Lock()
		b.urls = append(b.urls, u)
		b.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	console := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range console {
			if err != nil {
				return // the tab closed
			}
			if m.IsException() {
				t.Errorf("uncaught exception in the page: %s", m)
			} else {
				t.Logf("page console: %s", m)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("the page console reader did not stop")
		}
		acancel()
	})
	return b
}

// do runs actions with a timeout.
func (b *browser) do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.shot("failed")
		b.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %.80s: %v", expr, err)
	}
	return v
}

// poll waits until a JavaScript expression is truthy.
func (b *browser) poll(what, expr string, timeout time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout),
		chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		b.shot("failed")
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// shot saves a screenshot of the viewport as name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	path := filepath.Join(b.shots, name+".png")
	if err := chromedp.Do(ctx, e2e.Screenshot(path)); err != nil {
		b.t.Errorf("%v", err)
		return
	}
	b.t.Logf("screenshot %s", path)
}

// count counts the URLs the page has requested so far, WebSockets included, that match.
func (b *browser) count(match func(url string) bool) int {
	n := 0
	for _, u := range b.requested() {
		if match(u) {
			n++
		}
	}
	return n
}

// requested returns every URL the page has requested so far, WebSockets included.
func (b *browser) requested() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.urls...)
}

// row is a member row as the page shows it.
type row struct {
	UID      uint32 `json:"uid"`
	Name     string `json:"name"`
	Platform string `json:"platform"`
	Icon     string `json:"icon"`
	Tag      string `json:"tag"`
	Time     string `json:"time"`
	Fresh    bool   `json:"fresh"`
}

// entry is an entry of a channel's activity feed as the page shows it.
type entry struct {
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	UID    uint32 `json:"uid"`
	Reason string `json:"reason"`
	Text   string `json:"text"`
}

// panel is what the page shows of one channel.
type panel struct {
	Found       bool     `json:"found"`
	Visible     bool     `json:"visible"`
	Hosts       string   `json:"hosts"`
	Audience    string   `json:"audience"`
	Arrivals    string   `json:"arrivals"`
	Peak        string   `json:"peak"`
	HostRows    []row    `json:"hostRows"`
	AudRows     []row    `json:"audienceRows"`
	Feed        []entry  `json:"feed"`
	Notes       []string `json:"notes"`
	Seq         uint64   `json:"seq"`
	SnapshotSeq uint64   `json:"snapshotSeq"`
	Snapshots   int      `json:"snapshots"`
	Rows        int      `json:"rows"`
	FeedItems   int      `json:"feedItems"`
	Error       string   `json:"error"`
}

func (p panel) String() string {
	b, _ := json.MarshalIndent(p, "", " ")
	return string(b)
}

// readPanel reads a channel's panel from the DOM: what a person would see.
const readPanel = `(ch) => {
  const p = [...document.querySelectorAll("#panels .panel")].find(p => p.dataset.channel === ch);
  if (!p) return {found: false};
  const stat = k => p.querySelector('[data-stat="' + k + '"] .v').textContent;
  const rows = role => [...p.querySelectorAll('.group[data-role="' + role + '"] .row')].map(r => ({
    uid: +r.dataset.uid, name: r.querySelector(".acc").textContent, platform: r.querySelector(".pname").textContent,
    icon: r.querySelector(".pf").title, tag: r.querySelector(".tag").hidden ? "" : r.querySelector(".tag").textContent,
    time: r.querySelector(".t").textContent, fresh: r.classList.contains("new")}));
  return {
    found: true, visible: p.getClientRects().length > 0,
    hosts: stat("hosts"), audience: stat("audience"), arrivals: stat("arrivals"), peak: stat("peak"),
    hostRows: rows("host"), audienceRows: rows("audience"),
    feed: [...p.querySelectorAll(".feed li[data-seq]")].map(li => ({seq: +li.dataset.seq, kind: li.dataset.kind,
      uid: +(li.dataset.uid || 0), reason: li.dataset.reason || "", text: li.querySelector(".txt").textContent})),
    notes: [...p.querySelectorAll(".feed li.note .txt")].map(e => e.textContent),
    seq: +(p.dataset.seq || 0), snapshotSeq: +(p.dataset.snapshotSeq || 0), snapshots: +(p.dataset.snapshots || 0),
    rows: p.querySelectorAll(".row").length, feedItems: p.querySelectorAll(".feed li").length,
    error: p.querySelector(".panel-error").hidden ? "" : p.querySelector(".panel-error").textContent,
  };
}`

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (b *browser) panel(channel string) panel {
	b.t.Helper()
	return eval[panel](b, "("+readPanel+")("+jsString(channel)+")")
}

// waitPanel waits until the channel's panel shows what want accepts, and returns it.
func (b *browser) waitPanel(channel, what string, timeout time.Duration, want func(panel) bool) panel {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		p := b.panel(channel)
		if p.Found && want(p) {
			return p
		}
		if time.Now().After(deadline) {
			b.shot("failed")
			b.t.Fatalf("the panel of %q did not show %s within %s; it shows:\n%s", channel, what, timeout, p)
		}
		<-tick.C
	}
}

// clickChannel clicks a channel in the picker.
func (b *browser) clickChannel(channel string) {
	b.t.Helper()
	sel := `[...document.querySelectorAll("#channel-list li[data-channel]")].find(li => li.dataset.channel === ` + jsString(channel) + `)`
	b.poll("channel "+channel+" in the picker", sel, 15*time.Second)
	b.do(5*time.Second, chromedp.Evaluate[chromedp.Void](sel+`.querySelector("button").click()`))
}

func uids(rows []row) []uint32 {
	out := make([]uint32, len(rows))
	for i, r := range rows {
		out[i] = r.UID
	}
	return out
}

// find returns the feed entry of kind for uid.
func (p panel) find(kind string, uid uint32) (entry, bool) {
	for _, e := range p.Feed {
		if e.Kind == kind && e.UID == uid {
			return e, true
		}
	}
	return entry{}, false
}

func digits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

// press presses the left mouse button at the centre of the element that the JavaScript expression el gives, holds
// it for hold and releases it at the same place: a click as a person makes one, during which the page may change.
func (b *browser) press(el string, hold time.Duration) {
	b.t.Helper()
	at := eval[struct{ X, Y float64 }](b, `(() => { const r = (`+el+`).getBoundingClientRect();
		return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()`)
	buttons := func(n int64) chromedp.MouseOption {
		return func(p *input.DispatchMouseEventParams) {
			p.Button = input.MouseButtonLeft
			p.Buttons = n
			p.ClickCount = 1
		}
	}
	b.do(5*time.Second, chromedp.MouseEvent(chromedp.MouseMoved, at.X, at.Y))
	b.do(5*time.Second, chromedp.MouseEvent(chromedp.MousePressed, at.X, at.Y, buttons(1)))
	time.Sleep(hold)
	b.do(5*time.Second, chromedp.MouseEvent(chromedp.MouseReleased, at.X, at.Y, buttons(0)))
}

// pickerButton is a JavaScript expression for the picker's button of channel (null when it is not listed).
func pickerButton(channel string) string {
	return `[...document.querySelectorAll("#channel-list li[data-channel]")].find(li => li.dataset.channel === ` +
		jsString(channel) + `)?.querySelector("button")`
}

// channelState calls the JavaScript function fn with this bound to console.js's own object of an open channel (a
// Channel) and decodes what it returns into T. console.js exports nothing; the DevTools protocol reaches its state
// the way one would in the debugger: the input listener of the panel's filter box closes over the channel as self.
func channelState[T any](b *browser, channel, fn string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	const group = "channelState" // a listener's handler is reported only for an object in a group
	yes := true
	props := func(ctx context.Context, tg *chromedp.Target, obj *runtime.RemoteObject) ([]*runtime.PropertyDescriptor, []*runtime.InternalPropertyDescriptor, error) {
		if obj == nil || obj.ObjectID == "" {
			return nil, nil, nil
		}
		r, err := cdp.Call(ctx, tg, runtime.GetProperties, runtime.GetPropertiesParams{ObjectID: obj.ObjectID, OwnProperties: &yes})
		return r.Result, r.InternalProperties, err
	}
	// self finds the variable self in the scopes of the filter box's input listener.
	self := func(ctx context.Context, tg *chromedp.Target) (*runtime.RemoteObject, error) {
		box, err := chromedp.Evaluate[*runtime.RemoteObject](`[...document.querySelectorAll("#panels .panel")].find(p => p.dataset.channel === `+
			jsString(channel)+`).querySelector(".filter")`, chromedp.EvalObjectGroup(group))(ctx, tg)
		if err != nil {
			return nil, err
		}
		ls, err := cdp.Call(ctx, tg, domdebugger.GetEventListeners, domdebugger.GetEventListenersParams{ObjectID: box.ObjectID})
		if err != nil {
			return nil, err
		}
		for _, l := range ls.Listeners {
			if l.Type != "input" {
				continue
			}
			_, internal, err := props(ctx, tg, l.Handler)
			if err != nil {
				return nil, err
			}
			for _, ip := range internal {
				if ip.Name != "[[Scopes]]" {
					continue
				}
				scopes, _, err := props(ctx, tg, ip.Value)
				if err != nil {
					return nil, err
				}
				for _, sc := range scopes {
					vars, _, err := props(ctx, tg, sc.Value)
					if err != nil {
						return nil, err
					}
					for _, v := range vars {
						if v.Name == "self" && v.Value != nil && v.Value.ObjectID != "" {
							return v.Value, nil
						}
					}
				}
			}
		}
		return nil, fmt.Errorf("no channel object found behind the filter box of %q", channel)
	}
	v, err := chromedp.Run(ctx, chromedp.Action[T](func(ctx context.Context, tg *chromedp.Target) (T, error) {
		var v T
		defer cdp.Call(ctx, tg, runtime.ReleaseObjectGroup, runtime.ReleaseObjectGroupParams{ObjectGroup: group})
		ch, err := self(ctx, tg)
		if err != nil {
			return v, err
		}
		r, err := cdp.Call(ctx, tg, runtime.CallFunctionOn, runtime.CallFunctionOnParams{FunctionDeclaration: fn, ObjectID: ch.ObjectID, ReturnByValue: &yes})
		if err != nil {
			return v, err
		}
		if r.ExceptionDetails != nil {
			return v, &chromedp.ExceptionError{ExceptionDetails: r.ExceptionDetails}
		}
		return v, json.Unmarshal(r.Result.Value, &v)
	}))
	if err != nil {
		b.t.Fatalf("the state of channel %q: %v", channel, err)
	}
	return v
}

// hide puts another tab in front of the page, which the browser then treats as hidden (document.hidden, and no
// animation frames), until show.
func (b *browser) hide() {
	b.t.Helper()
	c := chromedp.FromContext(b.ctx)
	if _, err := cdp.Call(b.ctx, c.Browser, target.CreateTarget, target.CreateTargetParams{URL: "about:blank"}); err != nil {
		b.t.Fatalf("open a tab in front: %v", err)
	}
	b.poll("the page hidden", `document.visibilityState === "hidden"`, wait)
}

// show brings the page's tab to the front again.
func (b *browser) show() {
	b.t.Helper()
	c := chromedp.FromContext(b.ctx)
	if _, err := cdp.Call(b.ctx, c.Browser, target.ActivateTarget, target.ActivateTargetParams{TargetID: c.Target.TargetID}); err != nil {
		b.t.Fatalf("bring the page to the front: %v", err)
	}
	b.poll("the page visible", `document.visibilityState === "visible"`, wait)
}
