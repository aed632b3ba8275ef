package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/golang-jwt/jwt/v5"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
	"github.com/usher-presence/usher/web/e2e"
)

const wait = 20 * time.Second

// TestConsoleLive opens the console in Chromium with the link `usher serve --demo` prints, watches a channel while
// signed notifications arrive (joins, a role change, a leave with reason 2), cuts the server's connection while
// more happen, and checks that the page resumes from its last event without losing or repeating one.
func TestConsoleLive(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	// The browser talks to Usher through a proxy, so that the test can cut the server's connection.
	proxy := testutil.NewCutProxy(t, strings.TrimPrefix(srv.base, "http://"))
	site := "http://" + proxy.Addr()
	const show, talk = "show #1 <b>&amp;", "talk.2" // the name must be shown as text, never as markup
	seq := time.Now().UnixMilli()
	next := func() int64 { seq++; return seq }
	srv.send(t,
		user(ncs.BroadcasterJoin, show, 1, next(), map[string]any{"platform": 5, "account": "anna"}),
		user(ncs.AudienceJoin, show, 11, next(), map[string]any{"platform": 1, "account": "ben"}),
		user(ncs.AudienceJoin, show, 12, next(), map[string]any{"platform": 2, "account": "cleo"}),
		user(ncs.AudienceJoin, talk, 21, next(), map[string]any{"platform": 7}),
	)
	srv.waitRoster(t, show, func(s presence.Snapshot) bool { return s.Counts.Hosts == 1 && s.Counts.Audience == 2 })
	srv.waitRoster(t, talk, func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })

	b := newBrowser(t, 1440, 900)
	tok := token(t, "moderator", "*")
	b.do(wait, chromedp.EmulateViewport(1440, 900), chromedp.Navigate(site+"/#token="+tok))
	b.poll("the console to sign in", `!document.querySelector("#app").hidden`, wait)
	if loc := eval[string](b, "location.href"); loc != site+"/" {
		t.Errorf("after sign-in the address is %q; the token must leave it", loc)
	}

	// The picker of a "*" token lists the active channels with their counts.
	b.poll("both channels with counts in the picker", `(() => {
		const li = [...document.querySelectorAll("#channel-list li[data-channel]")];
		const c = n => li.find(l => l.dataset.channel === n)?.querySelector(".cl-counts")?.textContent || "";
		return c(`+jsString(show)+`) === "1 host2 audience" && c("talk.2") === "0 hosts1 audience";
	})()`, wait)
	b.clickChannel(show)
	p := b.waitPanel(show, "the snapshot", wait, func(p panel) bool { return p.Hosts == "1" && p.Audience == "2" })
	if got := eval[string](b, `document.querySelector("#panels .panel.active .ch-name").textContent`); got != show {
		t.Errorf("channel name shown as %q, want %q", got, show)
	}
	if !slices.Equal(uids(p.HostRows), []uint32{1}) || !slices.Equal(uids(p.AudRows), []uint32{12, 11}) {
		t.Fatalf("rows: hosts %v, audience %v; want [1] and [12 11] (newest first)", uids(p.HostRows), uids(p.AudRows))
	}
	if r := p.HostRows[0]; r.Name != "anna" || r.Platform != "Windows" || r.Icon != "Windows" {
		t.Errorf("host row %+v", r)
	}
	if r := p.AudRows[0]; r.Name != "cleo" || r.Platform != "iOS" || r.Fresh {
		t.Errorf("audience row %+v: members of the snapshot are not new arrivals", r)
	}
	if p.Snapshots != 1 || p.SnapshotSeq == 0 || p.Arrivals != "0" {
		t.Errorf("after the snapshot: %s", p)
	}
	b.shot("1-snapshot")

	// Arrivals: highlighted, counted, in the feed, with platform and client type.
	srv.send(t,
		user(ncs.AudienceJoin, show, 13, next(), map[string]any{"platform": 7, "account": "dev"}),
		user(ncs.BroadcasterJoin, show, 2, next(), map[string]any{"platform": 6, "clientType": 10, "account": "recorder"}),
	)
	p = b.waitPanel(show, "two arrivals", wait, func(p panel) bool {
		_, a := p.find("join", 13)
		_, h := p.find("join", 2)
		return p.Hosts == "2" && p.Audience == "3" && p.Arrivals == "+2" && a && h
	})
	if len(p.AudRows) == 0 || p.AudRows[0].UID != 13 || !p.AudRows[0].Fresh || p.AudRows[0].Platform != "Web" {
		t.Errorf("the new audience member should be first and highlighted: %+v", p.AudRows)
	}
	if len(p.HostRows) == 0 || p.HostRows[0].UID != 2 || p.HostRows[0].Tag != "Cloud recording" || p.HostRows[0].Platform != "Linux" {
		t.Errorf("the cloud recorder: %+v", p.HostRows)
	}
	for _, r := range append(p.HostRows, p.AudRows...) {
		if !regexp.MustCompile(`^\d+s$|^\d+m \d\ds$`).MatchString(r.Time) {
			t.Errorf("time in channel of %d is %q", r.UID, r.Time)
		}
	}
	if e, ok := p.find("join", 13); !ok || !strings.Contains(e.Text, "dev") || !strings.Contains(e.Text, "joined as audience") || !strings.Contains(e.Text, "Web") {
		t.Errorf("feed entry of the join of 13: %+v", e)
	}
	if e, ok := p.find("join", 2); !ok || !strings.Contains(e.Text, "joined as a host") || !strings.Contains(e.Text, "Cloud recording") {
		t.Errorf("feed entry of the join of 2: %+v", e)
	}

	// A role change and a leave with reason 2 (timed out) and its duration.
	srv.send(t, user(ncs.RoleToBroadcaster, show, 12, next(), map[string]any{"account": "cleo"}))
	p = b.waitPanel(show, "cleo as a host", wait, func(p panel) bool {
		_, ok := p.find("role.change", 12)
		return p.Hosts == "3" && p.Audience == "2" && ok
	})
	if !slices.Contains(uids(p.HostRows), 12) || slices.Contains(uids(p.AudRows), 12) {
		t.Errorf("after the role change: hosts %v, audience %v", uids(p.HostRows), uids(p.AudRows))
	}
	if e, ok := p.find("role.change", 12); !ok || !strings.Contains(e.Text, "cleo") || !strings.Contains(e.Text, "became a host") {
		t.Errorf("feed entry of the role change: %+v", e)
	}
	srv.send(t, user(ncs.AudienceLeave, show, 11, next(), map[string]any{"account": "ben", "reason": 2, "duration": 75}))
	p = b.waitPanel(show, "ben's leave", wait, func(p panel) bool {
		_, ok := p.find("leave", 11)
		return p.Audience == "1" && ok
	})
	if e, ok := p.find("leave", 11); !ok || e.Reason != "2" || !strings.Contains(e.Text, "ben") ||
		!strings.Contains(e.Text, "timed out") || !strings.Contains(e.Text, "after 1m 15s") {
		t.Errorf("feed entry of the leave: %+v", e)
	}
	if p.Peak != "3" {
		t.Errorf("peak audience %q, want 3", p.Peak)
	}
	b.shot("2-live")

	// Cut the server's connection; more happens meanwhile.
	proxy.Cut()
	b.poll("the page to show it is reconnecting", `document.querySelector("#conn").dataset.state === "reconnecting"`, wait)
	srv.send(t,
		user(ncs.AudienceJoin, show, 14, next(), map[string]any{"platform": 8}),
		user(ncs.AudienceJoin, show, 15, next(), map[string]any{"platform": 6, "clientType": 3}),
		user(ncs.AudienceLeave, show, 13, next(), map[string]any{"account": "dev", "reason": 1, "duration": 20}),
		user(ncs.RoleToAudience, show, 12, next(), map[string]any{"account": "cleo"}),
		user(ncs.BroadcasterLeave, show, 2, next(), map[string]any{"account": "recorder", "platform": 6, "reason": 10, "duration": 3700}),
	)
	srv.waitRoster(t, show, func(s presence.Snapshot) bool { return s.Counts.Hosts == 1 && s.Counts.Audience == 3 })
	if p = b.panel(show); p.Audience != "1" || len(p.Feed) != 4 {
		t.Fatalf("the page changed while cut off: %s", p)
	}
	stored := srv.events(t, show, p.SnapshotSeq) // what the page should end up showing
	if len(stored) != 9 {
		t.Fatalf("%d events stored after the snapshot, want 9: %+v", len(stored), stored)
	}
	b.shot("3-reconnecting")
	proxy.Restore()
	b.poll("the page to resume", `document.querySelector("#conn").dataset.resumes === "1"`, 30*time.Second)
	p = b.waitPanel(show, "what happened while cut off", wait, func(p panel) bool {
		return p.Hosts == "1" && p.Audience == "3" && len(p.Feed) >= len(stored)
	})
	if state := eval[string](b, `document.querySelector("#conn").dataset.state`); state != "resumed" && state != "live" {
		t.Errorf("connection state %q after the resume", state)
	}
	if p.Snapshots != 1 {
		t.Errorf("the page took %d snapshots: it should have resumed from its last event", p.Snapshots)
	}
	if !slices.Equal(uids(p.AudRows), []uint32{12, 15, 14}) || !slices.Equal(uids(p.HostRows), []uint32{1}) {
		t.Errorf("after the resume: hosts %v, audience %v", uids(p.HostRows), uids(p.AudRows))
	}
	// Every event after the snapshot is in the feed, once, in order: the same as Usher's stored stream.
	var want, got []uint64
	for _, e := range stored {
		want = append(want, e.Seq)
	}
	for i := len(p.Feed) - 1; i >= 0; i-- { // the feed is newest first
		got = append(got, p.Feed[i].Seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("feed events %v, stored events after the snapshot %v", got, want)
	}
	if e, ok := p.find("leave", 2); !ok || !strings.Contains(e.Text, "network reconnect") || !strings.Contains(e.Text, "after 1h 01m") {
		t.Errorf("feed entry of the host's leave: %+v", e)
	}
	if e, ok := p.find("role.change", 12); !ok || !strings.Contains(e.Text, "moved to the audience") {
		t.Errorf("feed: %+v", p.Feed)
	}
	notes := strings.Join(p.Notes, "\n")
	if !strings.Contains(notes, fmt.Sprintf("Connection lost after event %d", want[3])) ||
		!strings.Contains(notes, fmt.Sprintf("resuming after event %d", want[3])) {
		t.Errorf("notes %q: want the event the connection was lost after (%d)", p.Notes, want[3])
	}
	b.shot("4-resumed")

	// Live again after the resume.
	srv.send(t, user(ncs.AudienceJoin, show, 16, next(), map[string]any{"platform": 0}))
	p = b.waitPanel(show, "a join after the resume", wait, func(p panel) bool { return p.Audience == "4" })
	if p.AudRows[0].UID != 16 || p.AudRows[0].Platform != "Other" {
		t.Errorf("after the resume: %+v", p.AudRows[0])
	}

	// Moderators: two channels side by side.
	b.clickChannel(talk)
	b.do(5*time.Second, chromedp.Click(chromedp.CSS(`#layout [data-layout="grid"]`)))
	b.waitPanel(talk, "the second channel", wait, func(p panel) bool { return p.Visible && p.Audience == "1" })
	b.waitPanel(show, "the first channel beside it", wait, func(p panel) bool { return p.Visible && p.Audience == "4" })
	b.shot("5-side-by-side")
	b.do(5*time.Second, e2e.ColorScheme("dark"))
	b.shot("6-dark")

	// A phone: one channel at a time, the picker in a drawer.
	b.do(5*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.poll("the phone layout, the picker out of the way", `getComputedStyle(document.querySelector("#menu")).display !== "none" &&
		document.querySelector("#side").getBoundingClientRect().right <= 0`, wait)
	if p = b.panel(show); p.Visible {
		t.Errorf("on a phone only the active channel is shown")
	}
	b.waitPanel(talk, "the active channel on a phone", wait, func(p panel) bool { return p.Visible })
	b.shot("7-phone")
	b.do(5*time.Second, chromedp.Click(chromedp.CSS("#menu")))
	b.poll("the channel drawer", `document.querySelector("#side").getBoundingClientRect().left >= 0`, wait)
	b.shot("8-phone-channels")

	// The token never went into a URL, and the server never logged it.
	for _, u := range b.requested() {
		if strings.Contains(u, tok) || strings.Contains(u, "token=") {
			t.Errorf("the page requested %q", u)
		}
	}
	if strings.Contains(srv.logs.String(), tok) {
		t.Errorf("the server logged the token")
	}
}

// TestConsoleSignIn signs in by pasting tokens: one that is not a token, one the server refuses, then one that
// grants a channel and a prefix. The picker lists what the token grants, and refuses what it does not.
func TestConsoleSignIn(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t, 1280, 800)
	b.do(wait, chromedp.Navigate(srv.base+"/"))
	b.poll("the sign-in form", `!document.querySelector("#signin").hidden`, wait)

	signIn := func(tok string) {
		t.Helper()
		b.do(wait, chromedp.SetValue(chromedp.CSS("#token-input"), tok), chromedp.Click(chromedp.CSS("#signin-button")))
	}
	signIn("not a token")
	b.poll("the error about a malformed token", `document.querySelector("#signin-error").textContent.includes("not a token")`, wait)
	forged, err := auth.Issue("a-key-that-is-not-the-servers-one", []string{"*"}, time.Hour, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	signIn(forged)
	b.poll("the server's refusal", `document.querySelector("#signin-error").textContent.includes("refused")`, wait)
	b.shot("signin-refused")

	tok := token(t, "alice", "show-1", "team-*")
	signIn(tok)
	b.poll("the console", `!document.querySelector("#app").hidden`, wait)
	if who := eval[string](b, `document.querySelector("#who").textContent`); who != "alice" {
		t.Errorf("signed in as %q", who)
	}
	// The picker is drawn at the next animation frame, which a loaded machine may give late.
	b.poll("the picker", `document.querySelectorAll("#channel-list li[data-channel]").length > 0`, wait)
	listed := eval[[]string](b, `[...document.querySelectorAll("#channel-list li[data-channel]")].map(li => li.dataset.channel)`)
	if !slices.Equal(listed, []string{"show-1"}) {
		t.Errorf("picker lists %q, want the granted channel show-1", listed)
	}
	if note := eval[string](b, `document.querySelector("#grant-note").textContent`); !strings.Contains(note, "team-") {
		t.Errorf("grant note %q should mention the team- prefix", note)
	}
	open := func(name string) {
		t.Helper()
		b.do(wait, chromedp.SetValue(chromedp.CSS("#open-input"), name), chromedp.Click(chromedp.CSS("#open-form button")))
	}
	open("other")
	b.poll("the refusal of a channel the token does not grant", `document.querySelector("#open-error").textContent.includes("does not grant")`, wait)
	open("team-red")
	b.waitPanel("team-red", "an empty roster", wait, func(p panel) bool { return p.Snapshots == 1 && p.Audience == "0" })
	srv.send(t, user(ncs.AudienceJoin, "team-red", 7, time.Now().UnixMilli(), map[string]any{"platform": 2}))
	b.waitPanel("team-red", "the join", wait, func(p panel) bool { return p.Audience == "1" && p.Arrivals == "+1" })

	// A reload keeps the session (the token is in this tab's sessionStorage) and the open channels.
	b.do(wait, chromedp.Reload())
	b.poll("the console after a reload", `!document.querySelector("#app").hidden`, wait)
	b.waitPanel("team-red", "the channel after a reload", wait, func(p panel) bool { return p.Audience == "1" && p.Visible })
	b.do(wait, chromedp.Click(chromedp.CSS("#signout")))
	b.poll("the sign-in form after signing out", `!document.querySelector("#signin").hidden && !sessionStorage.getItem("usher.token")`, wait)
	for _, u := range b.requested() {
		if strings.Contains(u, tok) || strings.Contains(u, "token=") {
			t.Errorf("the page requested %q", u)
		}
	}
}

// TestConsoleLinkDuringSignIn opens a second #token= link while the first sign-in still waits for the server's
// answer: the later link wins, and the earlier answer, arriving last, neither starts a second connection nor
// changes who is signed in.
func TestConsoleLinkDuringSignIn(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t, 1280, 800)
	// Every GET /v1/channels (the sign-in's check of its token) is held until the test lets it go.
	paused := make(chan *fetch.EventRequestPaused, 8)
	if err := chromedp.Listen(b.ctx, func(ev any) {
		if e, ok := ev.(*fetch.EventRequestPaused); ok {
			paused <- e
		}
	}); err != nil {
		t.Fatal(err)
	}
	call := func(f func(ctx context.Context, tg *chromedp.Target) error) {
		t.Helper()
		b.do(wait, chromedp.Func(f))
	}
	call(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/v1/channels?*"}}})
		return err
	})
	held := func(what string) *fetch.EventRequestPaused {
		t.Helper()
		select {
		case e := <-paused:
			return e
		case <-time.After(wait):
			t.Fatalf("no request for %s", what)
			return nil
		}
	}
	release := func(e *fetch.EventRequestPaused) {
		t.Helper()
		call(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
			return err
		})
	}

	b.do(wait, chromedp.Navigate(srv.base+"/#token="+token(t, "alice", "show-1")))
	first := held("alice's sign-in")
	b.do(wait, chromedp.Evaluate[chromedp.Void](`location.hash = "token=`+token(t, "bob", "show-2")+`"`))
	second := held("bob's sign-in")
	release(second)
	b.poll("bob signed in", `!document.querySelector("#app").hidden && document.querySelector("#who").textContent === "bob"`, wait)
	b.waitPanel("show-2", "bob's channel", wait, func(p panel) bool { return p.Snapshots == 1 })
	release(first)
	// alice's answer reaches the page: give it the time to act on it, then look.
	time.Sleep(time.Second)
	if who := eval[string](b, `document.querySelector("#who").textContent`); who != "bob" {
		t.Errorf("signed in as %q after alice's late answer, want bob", who)
	}
	if n := b.count(func(u string) bool { return strings.Contains(u, "/v1/ws") }); n != 1 {
		t.Errorf("the page opened %d WebSockets, want 1", n)
	}
	if p := b.panel("show-2"); p.Snapshots != 1 {
		t.Errorf("bob's channel after alice's late answer: %v", p)
	}
}

// TestConsoleLargeAudience watches a channel with thousands of members: the list stays virtualised (a bounded
// number of rows in the DOM) while the counts follow every join, and scrolling reaches the oldest member.
func TestConsoleLargeAudience(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const arena = "arena"
	before, during := 6000, 4000
	if raceEnabled {
		before, during = 3000, 2000 // the race detector slows ingest about threefold
	}
	base := time.Now().UnixMilli()
	joins := func(from, n int) []notice {
		out := make([]notice, n)
		for i := range out {
			uid := uint32(100000 + from + i)
			out[i] = user(ncs.AudienceJoin, arena, uid, base+int64(from+i), map[string]any{"platform": []int{1, 2, 5, 6, 7, 8, 0}[i%7]})
		}
		return out
	}
	start := time.Now()
	srv.sendMany(t, 16, joins(0, before))
	srv.waitRoster(t, arena, func(s presence.Snapshot) bool { return s.Counts.Audience == before })
	t.Logf("%d joins stored and applied in %s", before, time.Since(start).Round(time.Millisecond))

	b := newBrowser(t, 1440, 900)
	b.do(wait, chromedp.EmulateViewport(1440, 900), chromedp.Navigate(srv.base+"/#token="+token(t, "host", arena))) // one channel: opened at once
	p := b.waitPanel(arena, "the snapshot", wait, func(p panel) bool { return digits(p.Audience) == fmt.Sprint(before) })
	const maxRows = 60
	if p.Rows > maxRows || p.Rows < 5 {
		t.Fatalf("%d member rows in the DOM for %d members; the list must render only what is in view", p.Rows, before)
	}
	b.poll("long-task observer", `(window.__longest = 0, new PerformanceObserver(l => l.getEntries().forEach(e => {
		window.__longest = Math.max(window.__longest, e.duration); })).observe({type: "longtask"}), true)`, wait)

	start = time.Now()
	srv.sendMany(t, 16, joins(before, during))
	p = b.waitPanel(arena, "every live join", 60*time.Second, func(p panel) bool { return digits(p.Audience) == fmt.Sprint(before+during) })
	t.Logf("%d live joins shown in %s", during, time.Since(start).Round(time.Millisecond))
	if p.Rows > maxRows || p.FeedItems > 200 {
		t.Errorf("DOM not bounded: %d rows, %d feed items", p.Rows, p.FeedItems)
	}
	if digits(p.Arrivals) != fmt.Sprint(during) {
		t.Errorf("arrivals in the last minute %q, want %d", p.Arrivals, during)
	}
	b.waitPanel(arena, "the last event at the top of the feed", wait, func(p panel) bool { return len(p.Feed) > 0 && p.Feed[0].Seq == p.Seq })
	if top := eval[float64](b, `document.querySelector(".panel.active .feed").scrollTop`); top != 0 {
		t.Errorf("the feed scrolled to %.0f px: the newest entries are out of view", top)
	}
	maxBlock := 1000.0
	if raceEnabled {
		maxBlock = 2000 // the browser shares the CPU with a server slowed down by the race detector
	}
	if longest := eval[float64](b, "window.__longest"); longest > maxBlock {
		t.Errorf("the page was blocked for %.0f ms at once while the joins arrived", longest)
	} else {
		t.Logf("longest task while the joins arrived: %.0f ms", longest)
	}
	b.shot("large-audience")

	// Scroll to the end: the oldest member is there, still with a bounded number of rows.
	b.do(5*time.Second, chromedp.Evaluate[chromedp.Void](`(() => { const v = document.querySelector('.panel.active .group[data-role="audience"] .vlist'); v.scrollTop = v.scrollHeight; })()`))
	p = b.waitPanel(arena, "the oldest member after scrolling", wait, func(p panel) bool {
		return len(p.AudRows) > 0 && slices.Contains(uids(p.AudRows), 100000)
	})
	if p.Rows > maxRows {
		t.Errorf("%d rows after scrolling", p.Rows)
	}
	b.shot("large-audience-end")
	b.do(5*time.Second, chromedp.SetValue(chromedp.CSS(".panel.active .filter"), "100042"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector(".panel.active .filter").dispatchEvent(new Event("input"))`))
	b.waitPanel(arena, "one match for a uid", wait, func(p panel) bool {
		return len(p.AudRows) == 1 && p.AudRows[0].UID == 100042
	})
}

// TestConsolePickerWhileEventsFlow uses the channel picker while an open channel gets about 20 events a second, so
// that the picker's counts change every few hundred milliseconds and the busy channel climbs past another: a picker
// button with the keyboard focus keeps it (Enter opens the channel), and a click on a button (the button held down
// for 150 ms, once for 400 ms) opens its channel every time.
func TestConsolePickerWhileEventsFlow(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const busy, calm, quiet = "busy", "calm", "quiet"
	var mu sync.Mutex
	seq := time.Now().UnixMilli()
	next := func() int64 { mu.Lock(); defer mu.Unlock(); seq++; return seq }
	srv.send(t, user(ncs.AudienceJoin, busy, 1, next(), nil), user(ncs.AudienceJoin, quiet, 2, next(), nil))
	for uid := uint32(3); uid < 6; uid++ {
		srv.send(t, user(ncs.AudienceJoin, calm, uid, next(), nil))
	}
	srv.waitRoster(t, calm, func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })

	b := moderatorConsole(t, srv.base)
	order := `[...document.querySelectorAll("#channel-list li[data-channel]")].map(li => li.dataset.channel).join(" ")`
	b.poll("the picker, busiest first", order+` === "calm busy quiet"`, wait)
	b.clickChannel(busy)
	b.waitPanel(busy, "the snapshot", wait, func(p panel) bool { return p.Snapshots == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	var sender sync.WaitGroup
	sender.Go(func() {
		for uid := uint32(100); ctx.Err() == nil; uid++ {
			if err := srv.post(user(ncs.AudienceJoin, busy, uid, next(), nil)); err != nil && ctx.Err() == nil {
				t.Errorf("post: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	defer func() { cancel(); sender.Wait() }()
	b.poll("the busy channel at the top of the picker", order+` === "busy calm quiet"`, wait)

	// Keyboard: focus quiet's button; it keeps the focus while the counts change, and Enter opens the channel.
	counts := `document.querySelector("#channel-list li[data-channel=busy] .cl-counts").textContent`
	before := eval[string](b, counts)
	eval[bool](b, `(window.quietButton = `+pickerButton(quiet)+`).focus(), true`)
	time.Sleep(1500 * time.Millisecond)
	if after := eval[string](b, counts); after == before {
		t.Fatalf("the busy channel's counts in the picker stayed %q: the picker was not updated", after)
	}
	if !eval[bool](b, `document.activeElement === window.quietButton && window.quietButton.isConnected`) {
		t.Errorf("the focused picker button lost the focus while the picker was updated; the focus is on <%s>",
			eval[string](b, `document.activeElement.tagName + (document.activeElement.className ? "." + document.activeElement.className : "")`))
	} else {
		b.do(5*time.Second, chromedp.KeyEvent(kb.Enter))
		b.waitPanel(quiet, "the channel opened with Enter", wait, func(p panel) bool { return p.Visible })
	}
	closeQuiet := func() {
		t.Helper()
		eval[bool](b, `document.querySelector('#panels .panel[data-channel="quiet"] .close')?.click(), true`)
		b.poll("the channel closed", `!document.querySelector('#panels .panel[data-channel="quiet"]')`, wait)
	}
	closeQuiet()

	// Mouse: each click opens the channel.
	holds := []time.Duration{150, 150, 150, 150, 150, 400}
	opened := 0
	for _, hold := range holds {
		b.press(pickerButton(quiet), hold*time.Millisecond)
		ok := false
		for deadline := time.Now().Add(time.Second); !ok && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			ok = eval[bool](b, `!!document.querySelector('#panels .panel.active[data-channel="quiet"]')`)
		}
		if ok {
			opened++
			closeQuiet()
		} else {
			t.Logf("a click held for %s did not open the channel", hold*time.Millisecond)
		}
	}
	if opened != len(holds) {
		t.Errorf("%d of %d clicks on a picker button opened the channel while another channel had events", opened, len(holds))
	}
}

// listed is the picker's channels, in order.
const listed = `[...document.querySelectorAll("#channel-list li[data-channel]")].map(li => li.dataset.channel)`

// startManyChannels starts a server with 232 active channels, more than the picker shows: "big-one" with 3 members,
// then room-000 to room-229 and "zz-needle" (the last by name) with one each.
func startManyChannels(t *testing.T) *server {
	t.Helper()
	srv := startServer(t)
	const rooms = 230
	seq := time.Now().UnixMilli()
	var notices []notice
	for i := range rooms {
		seq++
		notices = append(notices, user(ncs.AudienceJoin, fmt.Sprintf("room-%03d", i), 1, seq, nil))
	}
	for uid := uint32(1); uid <= 3; uid++ {
		seq++
		notices = append(notices, user(ncs.AudienceJoin, "big-one", uid, seq, nil))
	}
	seq++
	notices = append(notices, user(ncs.AudienceJoin, "zz-needle", 1, seq, nil)) // last by name of the 1-member ones
	srv.sendMany(t, 8, notices)
	srv.waitRoster(t, "zz-needle", func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })
	for i := range rooms {
		srv.waitRoster(t, fmt.Sprintf("room-%03d", i), func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })
	}
	srv.waitRoster(t, "big-one", func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	return srv
}

// An open channel past the busiest 200 is listed by the console (it is open) and is among those the server did not
// send: "N more" counts it once. Of 232 active channels with zz-needle open, 200 are shown and 32 are not.
func TestConsolePickerCountsAnOpenChannelOnce(t *testing.T) {
	t.Parallel()
	srv := startManyChannels(t)
	b := moderatorConsole(t, srv.base)
	b.do(wait, chromedp.SetValue(chromedp.CSS("#open-input"), "zz-needle"), chromedp.Click(chromedp.CSS("#open-form button")))
	b.waitPanel("zz-needle", "zz-needle's roster", wait, func(p panel) bool { return p.Snapshots > 0 && p.Audience == "1" })
	more := `document.querySelector("#channel-list .cl-more").textContent`
	b.poll("the busiest 200 again, the box cleared", `document.querySelector("#open-input").value === "" &&
		document.querySelector("#list-status").textContent === "232 active" && `+listed+`.length === 200 && `+more+`.endsWith("type to narrow the list")`, wait)
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](more+`.startsWith("32 more")`, chromedp.WithPollingTimeout(time.Second))); err != nil {
		t.Errorf("with zz-needle open, the picker says %q, want 32 more (232 active, 200 shown)", eval[string](b, more))
	}
}

// Text in the box that no channel name can contain (not ASCII, or longer than a name) is not sent to the server,
// which is asked for the busiest 200 as with an empty box: the picker lists no channel, and says so, without "N more"
// of what the server did not send, which would not match the text either.
func TestConsolePickerOfTextNoNameHas(t *testing.T) {
	t.Parallel()
	srv := startManyChannels(t)
	b := moderatorConsole(t, srv.base)
	b.poll("the busiest 200", listed+`.length === 200`, wait)
	const notes = `[...document.querySelectorAll("#channel-list .cl-more")].map(li => li.textContent).join(" / ")`
	for _, text := range []string{"rooм", strings.Repeat("room-", 13) + "0"} {
		eval[bool](b, `(document.querySelector("#open-input").value = "", true)`)
		b.do(wait, chromedp.SendKeys(chromedp.CSS("#open-input"), text))
		b.poll("no channel matching "+text, listed+`.length === 0 && `+notes+`.includes("No channel matches")`, wait)
		if got := eval[string](b, notes); strings.Contains(got, "more") {
			t.Errorf("with %q in the box, no channel listed, the picker says %q", text, got)
		}
	}
}

// The console from an Usher that knows q, sort and limit may poll an older one behind the same load balancer while
// instances are upgraded: that one answers every channel, by name, without total. The picker then filters and counts
// itself, as it did before, and does not call every active channel a match of what is typed.
func TestConsolePickerOfAnOlderUsher(t *testing.T) {
	t.Parallel()
	srv := startManyChannels(t)
	target, err := url.Parse(srv.base)
	if err != nil {
		t.Fatal(err)
	}
	older := httputil.NewSingleHostReverseProxy(target) // answers GET /v1/channels as an Usher before total did
	direct := older.Director
	older.Director = func(r *http.Request) {
		direct(r)
		if r.URL.Path == "/v1/channels" {
			r.URL.RawQuery = ""
		}
	}
	older.ModifyResponse = func(r *http.Response) error {
		if r.Request.URL.Path != "/v1/channels" || r.StatusCode != http.StatusOK {
			return nil
		}
		var body map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return err
		}
		r.Body.Close()
		delete(body, "total")
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(raw)), int64(len(raw))
		r.Header.Del("Content-Length")
		return nil
	}
	front := httptest.NewServer(older)
	t.Cleanup(front.Close)

	b := moderatorConsole(t, front.URL)
	b.poll("the busiest 200 of every channel", listed+`.length === 200 && `+listed+`[0] === "big-one" &&
		document.querySelector("#channel-list .cl-more").textContent.startsWith("32 more") &&
		document.querySelector("#list-status").textContent === "232 active"`, wait)
	b.do(wait, chromedp.SendKeys(chromedp.CSS("#open-input"), "room-00"))
	b.poll("the ten rooms matching", listed+`.length === 10`, wait)
	// The list is asked for with the text, then again 3 s after its answer was taken: then that answer is drawn.
	asked := func() int { return b.count(func(u string) bool { return strings.Contains(u, "q=room-00") }) }
	for deadline := time.Now().Add(10 * time.Second); asked() < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the list was asked for with the text %d times in 10 s: %q", asked(), b.requested())
		}
	}
	const status = `document.querySelector("#list-status").textContent`
	if got := eval[string](b, status); got != "232 active" {
		t.Errorf("an older Usher's list of every channel, 10 of them matching the box: the status says %q, want 232 active", got)
	}
}

// With more active channels than the picker shows, the console asks the server for the busiest 200 only, and for
// those matching what is typed in the box: a channel past the first 200 is found by typing its name, and no request
// of the page lists every channel (with 100,000 channels that list was 8 MB, polled every 3 s).
func TestConsolePickerOfManyChannels(t *testing.T) {
	t.Parallel()
	srv := startManyChannels(t)
	b := moderatorConsole(t, srv.base)
	b.poll("the busiest 200, then how many more", listed+`.length === 200 && `+listed+`[0] === "big-one" && `+listed+`[1] === "room-000" &&
		document.querySelector("#channel-list .cl-more").textContent.startsWith("32 more") &&
		document.querySelector("#list-status").textContent === "232 active"`, wait)
	if got := eval[[]string](b, listed); slices.Contains(got, "zz-needle") {
		t.Fatalf("zz-needle is among the first 200 listed")
	}

	b.do(wait, chromedp.SendKeys(chromedp.CSS("#open-input"), "NEEDLE"))
	b.poll("the channel past the first 200, found by its name", listed+`.join(" ") === "zz-needle" &&
		document.querySelector("#list-status").textContent === "1 match"`, wait)
	lists := 0
	for _, u := range b.requested() {
		if !strings.Contains(u, "/v1/channels") {
			continue
		}
		lists++
		if !strings.Contains(u, "sort=size") || !strings.Contains(u, "limit=200") {
			t.Errorf("the page asked for %s: not the busiest 200", u)
		}
	}
	if lists < 2 || b.count(func(u string) bool { return strings.Contains(u, "q=needle") }) == 0 {
		t.Errorf("%d requests for the list, none for the channels matching what was typed: %q", lists, b.requested())
	}
}

// TestConsoleHiddenTabArrivals watches a channel from a tab in the background (another tab in front: no animation
// frames, so nothing is drawn) while joins arrive over more than a minute of the page's clock: the channel keeps the
// times of the last minute's joins only, not of every join since the tab was hidden. The page's clock is moved on
// 61 s between two bursts of joins, rather than the test waiting a minute.
func TestConsoleHiddenTabArrivals(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const busy = "busy"
	seq := time.Now().UnixMilli()
	srv.send(t, user(ncs.AudienceJoin, busy, 1, seq, nil))
	b := newBrowser(t, 1280, 800)
	b.do(wait, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `(() => { const now = Date.now; let skew = 0; Date.now = () => now() + skew; window.skipClock = ms => { skew += ms; }; })()`})
		return err
	}), chromedp.Navigate(srv.base+"/#token="+token(t, "host", busy))) // one channel: opened at once
	b.waitPanel(busy, "the snapshot", wait, func(p panel) bool { return p.Snapshots == 1 && p.Audience == "1" })

	b.hide()
	const burst = 100
	uid := uint32(100)
	joins := func() {
		t.Helper()
		var ns []notice
		for range burst {
			uid++
			seq++
			ns = append(ns, user(ncs.AudienceJoin, busy, uid, seq, nil))
		}
		srv.sendMany(t, 4, ns)
		// Every join applied (acknowledged is stored, not yet applied): the roster's seq is then the last event's.
		members := int(uid) - 100 + 1
		want := srv.waitRoster(t, busy, func(s presence.Snapshot) bool { return s.Counts.Audience == members }).Seq
		deadline := time.Now().Add(wait)
		for channelState[uint64](b, busy, `function () { return this.seq; }`) < want {
			if time.Now().After(deadline) {
				t.Fatalf("the hidden page did not get the joins up to event %d", want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	joins()
	if n := channelState[int](b, busy, `function () { return this.arrivals.length; }`); n != burst {
		t.Fatalf("%d arrival times kept after %d joins", n, burst)
	}
	eval[bool](b, `skipClock(61000), true`)
	joins()
	if n := channelState[int](b, busy, `function () { return this.arrivals.length; }`); n != burst {
		t.Errorf("the hidden tab keeps %d arrival times; the joins of the last minute are %d", n, burst)
	}

	b.show()
	b.waitPanel(busy, "the last minute's arrivals", wait, func(p panel) bool {
		return p.Arrivals == fmt.Sprintf("+%d", burst) && digits(p.Audience) == fmt.Sprint(1+2*burst)
	})
}

// TestConsoleTokenRenewal lets a short token expire while a channel is open: the console stops (close 4001), stops
// polling the channel list, and asks for a new token. A pasted token, and later a new #token= link, resume the same
// panel from its last event, with what happened while the token was expired. While the token still works, a link
// for the same user and grants renews it as well, a link that cannot be used leaves the session as it is, and a link
// for another user starts a new session.
func TestConsoleTokenRenewal(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const show = "show-1"
	seq := time.Now().UnixMilli()
	next := func() int64 { seq++; return seq }
	srv.send(t, user(ncs.AudienceJoin, show, 11, next(), map[string]any{"account": "ana"}))
	issue := func(sub string, ttl time.Duration, channels ...string) string {
		t.Helper()
		tok, err := auth.Issue(testJWTSecret, channels, ttl, sub)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	var tokens []string
	b := newBrowser(t, 1440, 900)
	listPolls := func() int { return b.count(func(u string) bool { return strings.Contains(u, "/v1/channels?") }) }
	const samePanel = `document.querySelector('#panels .panel[data-channel="show-1"]') === window.watched && window.watched.isConnected`
	// expire waits for the token to expire, checks that the console stopped and asks for a new one, and sends a
	// join of uid meanwhile.
	expire := func(uid uint32) panel {
		t.Helper()
		b.poll("the token to expire", `document.querySelector("#conn").dataset.state === "closed"`, 15*time.Second)
		if detail := eval[string](b, `document.querySelector("#conn .conn-detail").textContent`); detail != "token expired" {
			t.Errorf("connection detail %q", detail)
		}
		time.Sleep(500 * time.Millisecond) // a list request already sent is seen
		polled := listPolls()
		srv.send(t, user(ncs.AudienceJoin, show, uid, next(), nil))
		srv.waitRoster(t, show, func(s presence.Snapshot) bool {
			return slices.ContainsFunc(s.Audience, func(m presence.Member) bool { return m.UID == uid })
		})
		time.Sleep(3*time.Second + 500*time.Millisecond) // a list poll
		if n := listPolls() - polled; n != 0 {
			t.Errorf("the console asked for the channel list %d times in 3.5 s with its expired token", n)
		}
		if status := eval[string](b, `document.querySelector("#list-status").textContent`); status != "paused" {
			t.Errorf("the picker's list status is %q after the expiry", status)
		}
		b.poll("the request for a new token", `!document.querySelector("#renew").hidden && document.querySelector("#signin").hidden`, wait)
		if msg := eval[string](b, `document.querySelector("#renew-msg").textContent`); !strings.Contains(msg, "expired") {
			t.Errorf("the request for a new token says %q", msg)
		}
		p := b.waitPanel(show, "the open channel, still there", wait, func(p panel) bool { return p.Visible })
		if !eval[bool](b, samePanel) {
			t.Fatalf("the panel was replaced after the expiry")
		}
		return p
	}
	// resumed waits for the panel to show the join of uid, resumed after the event it had before the expiry.
	resumed := func(before panel, uid uint32, resumes int) {
		t.Helper()
		b.poll("the console to resume", fmt.Sprintf(`document.querySelector("#conn").dataset.resumes === "%d" && document.querySelector("#renew").hidden`, resumes), wait)
		p := b.waitPanel(show, fmt.Sprintf("the join of %d, sent while the token was expired", uid), wait, func(p panel) bool {
			_, ok := p.find("join", uid)
			return ok
		})
		if p.Snapshots != 1 || !eval[bool](b, samePanel) {
			t.Errorf("the channel was not resumed in the same panel (%d snapshots): %s", p.Snapshots, p)
		}
		notes := strings.Join(p.Notes, "\n")
		if !strings.Contains(notes, fmt.Sprintf("The token expired after event %d", before.Seq)) ||
			!strings.Contains(notes, fmt.Sprintf("resuming after event %d", before.Seq)) {
			t.Errorf("notes %q: want the expiry and the resume after event %d", p.Notes, before.Seq)
		}
		if got := eval[string](b, `sessionStorage.getItem("usher.token")`); got != tokens[len(tokens)-1] {
			t.Errorf("the tab keeps another token than the new one")
		}
	}

	tokens = append(tokens, issue("moderator", 4*time.Second, "*"))
	b.do(wait, chromedp.EmulateViewport(1440, 900), chromedp.Navigate(srv.base+"/#token="+tokens[0]))
	b.poll("the console", `!document.querySelector("#app").hidden`, wait)
	b.clickChannel(show)
	b.waitPanel(show, "the snapshot", wait, func(p panel) bool { return p.Snapshots == 1 && p.Audience == "1" })
	eval[bool](b, `!!(window.watched = document.querySelector('#panels .panel[data-channel="show-1"]'))`)
	p := expire(12)
	b.shot("token-expired")

	// A pasted token.
	tokens = append(tokens, issue("moderator", 6*time.Second, "*"))
	b.do(wait, chromedp.SetValue(chromedp.CSS("#renew-input"), tokens[1]), chromedp.Click(chromedp.CSS("#renew-button")))
	resumed(p, 12, 1)
	polled := listPolls()
	for deadline := time.Now().Add(10 * time.Second); listPolls() == polled; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the console did not poll the channel list again with the new token")
		}
	}

	// It expires too; a new link renews.
	p = expire(13)
	tokens = append(tokens, issue("moderator", 8*time.Second, "*"))
	eval[bool](b, `(location.hash = "#token=`+tokens[2]+`"), true`)
	resumed(p, 13, 2)
	if loc := eval[string](b, "location.href"); strings.Contains(loc, "token") {
		t.Errorf("the address is %q: the token must leave it", loc)
	}

	// While the token works: a link that cannot be used is refused, and the session goes on.
	eval[bool](b, `(location.hash = "#token=not-a-token"), true`)
	b.poll("the refusal of the link", `!document.querySelector("#renew").hidden && document.querySelector("#renew-error").textContent.includes("not a token")`, wait)
	b.do(wait, chromedp.Click(chromedp.CSS("#renew-dismiss")))
	b.poll("the session as it was", `document.querySelector("#renew").hidden && `+samePanel+` && sessionStorage.getItem("usher.token") === `+jsString(tokens[2]), wait)

	// A link for the same user and grants renews: the connection goes on with the old token until it expires, then
	// resumes with the new one, without asking for a token.
	tokens = append(tokens, issue("moderator", time.Hour, "*"))
	eval[bool](b, `(location.hash = "#token=`+tokens[3]+`"), true`)
	b.poll("the new token kept", `sessionStorage.getItem("usher.token") === `+jsString(tokens[3]), wait)
	if !eval[bool](b, samePanel+` && document.querySelector("#renew").hidden && document.querySelector("#signin").hidden`) {
		t.Errorf("a link for the same user and grants did not keep the session")
	}
	b.poll("the connection to resume with the new token", `document.querySelector("#conn").dataset.resumes === "3"`, wait)
	srv.send(t, user(ncs.AudienceJoin, show, 14, next(), nil))
	p = b.waitPanel(show, "a join after the token changed", wait, func(p panel) bool {
		_, ok := p.find("join", 14)
		return ok
	})
	if !eval[bool](b, samePanel+` && document.querySelector("#renew").hidden`) || p.Snapshots != 1 {
		t.Errorf("the old token's expiry interrupted the session: %s", p)
	}
	if notes := strings.Join(p.Notes, "\n"); strings.Count(notes, "The token expired") != 2 {
		t.Errorf("notes %q: the old token's connection ended, but the console had a new token", p.Notes)
	}

	// A link for another user starts a new session.
	tokens = append(tokens, issue("guest", time.Hour, show))
	eval[bool](b, `(location.hash = "#token=`+tokens[4]+`"), true`)
	b.poll("a new session for another user", `document.querySelector("#who").textContent === "guest" && !window.watched.isConnected`, wait)
	b.waitPanel(show, "the guest's one channel", wait, func(p panel) bool { return p.Snapshots == 1 && p.Audience == "4" })

	// So does a token for another user pasted into the form a refused link brings up.
	eval[bool](b, `!!(window.watched = document.querySelector('#panels .panel[data-channel="show-1"]'))`)
	eval[bool](b, `(location.hash = "#token=not-a-token"), true`)
	b.poll("the refusal of the link", `!document.querySelector("#renew").hidden`, wait)
	tokens = append(tokens, issue("auditor", time.Hour, show))
	b.do(wait, chromedp.SetValue(chromedp.CSS("#renew-input"), tokens[5]), chromedp.Click(chromedp.CSS("#renew-button")))
	b.poll("a new session for the pasted token's user", `document.querySelector("#who").textContent === "auditor" && !window.watched.isConnected`, wait)

	for _, u := range b.requested() {
		for _, tok := range tokens {
			if strings.Contains(u, tok) || strings.Contains(u, "token=") {
				t.Errorf("the page requested %q", u)
			}
		}
	}
}

// TestConsoleIgnoresAWrongDeviceClock signs in on a machine whose clock runs a day ahead: the server, not this
// device's clock, says whether a token has expired (as usher.js does). A token that has expired is refused as such;
// a fresh one signs in and watches the channel, rather than being refused as "expired".
func TestConsoleIgnoresAWrongDeviceClock(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const show = "show-1"
	srv.send(t, user(ncs.AudienceJoin, show, 1, time.Now().UnixMilli(), nil))
	b := newBrowser(t, 1280, 800)
	b.do(wait, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `(() => { const now = Date.now; Date.now = () => now() + 24 * 3600 * 1000; })()`})
		return err
	}), chromedp.Navigate(srv.base+"/#token="+expiredToken(t, "host", show)))
	b.poll("the refusal of an expired token", `document.querySelector("#signin-error").textContent.includes("expired")`, wait)
	b.do(wait, chromedp.Evaluate[chromedp.Void](`location.hash = "#token=" + `+jsString(token(t, "host", show)))) // one channel: opened at once
	b.poll("the console signed in with a token the server takes", `!document.querySelector("#app").hidden`, wait)
	b.waitPanel(show, "the snapshot", wait, func(p panel) bool { return p.Snapshots == 1 && p.Audience == "1" })
}

// expiredToken is a token that expired a minute ago.
func expiredToken(t testing.TB, sub string, channels ...string) string {
	t.Helper()
	now := time.Now()
	c := auth.Claims{Channels: channels, RegisteredClaims: jwt.RegisteredClaims{Subject: sub,
		IssuedAt: jwt.NewNumericDate(now.Add(-time.Hour)), ExpiresAt: jwt.NewNumericDate(now.Add(-time.Minute))}}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestConsoleRefusedLinkForAnotherUser opens, in a signed-in tab, links for another user that cannot be used: one
// signed with another key, one that has expired. As README promises for a link that cannot be used (malformed,
// expired, refused), each is reported and the session goes on: it is not signed out for a token the server refuses.
func TestConsoleRefusedLinkForAnotherUser(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const show = "show-1"
	srv.send(t, user(ncs.AudienceJoin, show, 1, time.Now().UnixMilli(), nil))
	b := newBrowser(t, 1280, 800)
	tok := token(t, "host", show)
	b.do(wait, chromedp.Navigate(srv.base+"/#token="+tok)) // one channel: opened at once
	b.waitPanel(show, "the snapshot", wait, func(p panel) bool { return p.Snapshots == 1 && p.Audience == "1" })
	eval[bool](b, `!!(window.watched = document.querySelector('#panels .panel[data-channel="show-1"]'))`)

	forged, err := auth.Issue("a-key-that-is-not-the-servers-one", []string{"*"}, time.Hour, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range []struct{ name, tok, says string }{
		{"signed with another key", forged, "refused"},
		{"expired", expiredToken(t, "guest", show), "expired"},
	} {
		eval[bool](b, `(location.hash = "#token=`+link.tok+`"), true`)
		b.poll("the refusal of the link "+link.name+", or a sign-in form",
			`!document.querySelector("#renew").hidden && document.querySelector("#renew-error").textContent.includes(`+jsString(link.says)+`)
			|| !document.querySelector("#signin").hidden`, wait)
		if !eval[bool](b, `document.querySelector("#signin").hidden && window.watched.isConnected && document.querySelector("#who").textContent === "host"
			&& sessionStorage.getItem("usher.token") === `+jsString(tok)) {
			t.Fatalf("a link %s for another user ended the session (sign-in form shown: %v, says %q)", link.name,
				eval[bool](b, `!document.querySelector("#signin").hidden`), eval[string](b, `document.querySelector("#signin-error").textContent`))
		}
		b.do(wait, chromedp.Click(chromedp.CSS("#renew-dismiss")))
	}
	srv.send(t, user(ncs.AudienceJoin, show, 2, time.Now().UnixMilli(), nil))
	b.waitPanel(show, "the next join, in the same session", wait, func(p panel) bool { return p.Audience == "2" && p.Snapshots == 1 })
}

// A token pasted as it was copied from a terminal or an e-mail, broken over lines, is the token: the console signs
// in with it and goes live (a line break in a header or a WebSocket subprotocol would be refused by the browser).
func TestConsoleSignInWithAWrappedToken(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t, 1280, 800)
	b.do(wait, chromedp.Navigate(srv.base+"/"))
	b.poll("the sign-in form", `!document.querySelector("#signin").hidden`, wait)
	tok := token(t, "alice", "show-1")
	wrapped := tok[:40] + "\n" + tok[40:len(tok)-20] + "\r\n  " + tok[len(tok)-20:]
	eval[bool](b, `(document.querySelector("#token-input").value = `+jsString(wrapped)+`, true)`)
	b.do(wait, chromedp.Click(chromedp.CSS("#signin-button")))
	b.waitPanel("show-1", "the channel, live", wait, func(p panel) bool { return p.Snapshots == 1 })
	if got := eval[string](b, `sessionStorage.getItem("usher.token")`); got != tok {
		t.Errorf("kept the token %q, want %q", got, tok)
	}
}

// An account is the app's text, in any script: one written right to left, or holding a bidirectional control
// (U+202E, right-to-left override), is shown as itself and changes nothing around it. In the feed, the uid stays to
// the right of the name and "joined as audience" reads left to right; the member row likewise.
func TestConsoleRightToLeftAccounts(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const ch = "show-rtl"
	b := newBrowser(t, 1280, 800)
	b.do(wait, chromedp.Navigate(srv.base+"/#token="+token(t, "alice", ch)))
	b.waitPanel(ch, "the snapshot", wait, func(p panel) bool { return p.Snapshots == 1 })
	srv.send(t, user(ncs.AudienceJoin, ch, 41, time.Now().UnixMilli(), map[string]any{"account": "\u05e9\u05e8\u05d4"}),
		user(ncs.AudienceJoin, ch, 42, time.Now().UnixMilli()+1, map[string]any{"account": "\u202eevil"}))
	b.waitPanel(ch, "both joins in the feed", wait, func(p panel) bool { return len(p.Feed) == 2 })
	for _, uid := range []uint32{41, 42} {
		// x of the name, of the uid after it, and of the first and last letters of "joined".
		xs := eval[[]float64](b, fmt.Sprintf(`(() => {
			const li = document.querySelector('.feed li[data-uid="%d"]'), txt = li.querySelector(".txt");
			const x = (node, from, to) => { const r = document.createRange(); r.setStart(node, from); r.setEnd(node, to); return r.getBoundingClientRect().x; };
			const name = txt.querySelector("b"), uid = txt.querySelector("b + span");
			const said = [...txt.childNodes].find(n => n.nodeType === 3 && n.data.includes("joined"));
			const j = said.data.indexOf("joined");
			return [name.getBoundingClientRect().x, uid.getBoundingClientRect().x, x(said, j, j + 1), x(said, j + 5, j + 6)];
		})()`, uid))
		if !(xs[0] < xs[1] && xs[1] < xs[2] && xs[2] < xs[3]) {
			b.shot("rtl")
			t.Errorf("uid %d's feed entry: name at x %.0f, uid at %.0f, \"j\" and \"d\" of \"joined\" at %.0f and %.0f; want them in that order, left to right",
				uid, xs[0], xs[1], xs[2], xs[3])
		}
		row := eval[[]float64](b, fmt.Sprintf(`(() => {
			const r = document.querySelector('.row[data-uid="%d"]');
			return [r.querySelector(".acc").getBoundingClientRect().x, r.querySelector(".uid").getBoundingClientRect().x];
		})()`, uid))
		if !(row[0] < row[1]) {
			t.Errorf("uid %d's row: name at x %.0f, uid at %.0f; want the uid to the right", uid, row[0], row[1])
		}
	}
}
