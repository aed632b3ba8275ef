package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

func token(t testing.TB, channels ...string) string {
	t.Helper()
	tok, err := auth.Issue(testJWTSecret, channels, time.Hour, "tester")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// getJSON GETs base+path with a bearer token and decodes the answer into v; it returns the status and raw body.
func getJSON(t testing.TB, base, path, tok string, v any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

func presencePath(channel string) string {
	return "/v1/channels/" + url.PathEscape(channel) + "/presence"
}

// waitSnapshot waits until the channel's snapshot satisfies want.
func waitSnapshot(t testing.TB, base, channel string, want func(presence.Snapshot) bool) presence.Snapshot {
	t.Helper()
	tok := token(t, channel)
	var s presence.Snapshot
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
		s = presence.Snapshot{}
		code, raw := getJSON(t, base, presencePath(channel), tok, &s)
		return code == 200 && want(s), fmt.Sprintf("%d %s", code, raw)
	})
	return s
}

func userEvent(noticeID string, typ ncs.EventType, channel string, uid uint32, clientSeq int64, ts int64, extra map[string]any) []byte {
	p := map[string]any{"channelName": channel, "uid": uid, "clientSeq": clientSeq, "ts": ts, "account": fmt.Sprint("acc-", uid)}
	if typ.IsJoin() || typ.IsLeave() {
		p["platform"] = 1
	}
	for k, v := range extra {
		p[k] = v
	}
	return notification(noticeID, typ, p)
}

func TestPresenceThroughNCS(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	const ch = "show #1.>"
	now := time.Now().Unix()
	send := func(body []byte) {
		t.Helper()
		if a := postSigned(t, base, body); a.Status != 200 {
			t.Fatalf("post: %d %s", a.Status, a.Raw)
		}
	}
	send(notification("c1", ncs.ChannelCreate, map[string]any{"channelName": ch, "ts": now}))
	send(userEvent("h1", ncs.BroadcasterJoin, ch, 1, 100, now, nil))
	send(userEvent("a2", ncs.AudienceJoin, ch, 2, 200, now, nil))
	send(userEvent("a3", ncs.AudienceJoin, ch, 3, 300, now+1, map[string]any{"platform": 6, "clientType": 10}))
	// Out of order: user 4 leaves (seq 402) before its join (seq 401) arrives; the late join must not add it.
	send(userEvent("l4", ncs.AudienceLeave, ch, 4, 402, now+2, map[string]any{"reason": 2, "duration": 5}))
	send(userEvent("j4", ncs.AudienceJoin, ch, 4, 401, now+1, nil))
	// A resend of a2 under a new noticeId changes nothing.
	send(userEvent("a2-again", ncs.AudienceJoin, ch, 2, 200, now, nil))
	// User 2 goes on stage, then user 3 leaves with reason 2 (timed out).
	send(userEvent("r2", ncs.RoleToBroadcaster, ch, 2, 201, now+3, nil))
	send(userEvent("l3", ncs.AudienceLeave, ch, 3, 301, now+4, map[string]any{"reason": 2, "duration": 3}))

	s := waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Hosts == 2 && s.Counts.Audience == 0 })
	if got := uids(s.Hosts); !slices.Equal(got, []uint32{1, 2}) || len(s.Audience) != 0 || len(s.Users) != 0 {
		t.Fatalf("snapshot %+v: want hosts 1, 2 and nobody else", s)
	}
	if s.Hosts[0].Account != "acc-1" || *s.Hosts[0].Platform != 1 || s.Hosts[0].Since != now {
		t.Fatalf("host 1 = %+v", s.Hosts[0])
	}

	var page struct{ Events []presence.Event }
	code, raw := getJSON(t, base, "/v1/channels/"+url.PathEscape(ch)+"/events", token(t, ch), &page)
	if code != 200 {
		t.Fatalf("events: %d %s", code, raw)
	}
	var kinds []string
	for i, e := range page.Events {
		if i > 0 && e.Seq <= page.Events[i-1].Seq {
			t.Fatalf("seq not increasing: %s", raw)
		}
		if e.Channel != ch || e.Source != "ncs" || e.NoticeID == "" {
			t.Fatalf("event %+v", e)
		}
		kinds = append(kinds, fmt.Sprintf("%s:%s:%d", e.Event, e.Role, e.UID))
	}
	want := []string{"channel.create::0", "join:host:1", "join:audience:2", "join:audience:3", "role.change:host:2", "leave:audience:3"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	leave := page.Events[len(page.Events)-1]
	if leave.Reason == nil || *leave.Reason != 2 || leave.Duration == nil || *leave.Duration != 3 || leave.Client == nil || *leave.Client != 10 {
		t.Fatalf("leave event %+v: want reason 2, duration 3, clientType 10", leave)
	}
	if s.Seq != leave.Seq {
		t.Fatalf("snapshot seq %d, want the last event's %d", s.Seq, leave.Seq)
	}
	// since and limit page through the same events.
	var tail struct{ Events []presence.Event }
	getJSON(t, base, fmt.Sprintf("/v1/channels/%s/events?since=%d&limit=2", url.PathEscape(ch), page.Events[2].Seq), token(t, ch), &tail)
	if len(tail.Events) != 2 || tail.Events[0].Seq != page.Events[3].Seq || tail.Events[1].Seq != page.Events[4].Seq {
		t.Fatalf("since/limit page: %+v", tail.Events)
	}

	var list struct{ Channels []presence.Summary }
	if code, raw := getJSON(t, base, "/v1/channels", token(t, "*"), &list); code != 200 || len(list.Channels) != 1 ||
		list.Channels[0].Channel != ch || list.Channels[0].Counts.Hosts != 2 || list.Channels[0].Seq != s.Seq {
		t.Fatalf("channel list: %d %s", code, raw)
	}
}

// TestEventsAfterExpiry: GET .../events?since=S when events after S are no longer kept answers 410 expired, not a
// page that looks complete (seqs are shared by all channels: a client cannot see the gap itself). The head of
// USHER_PRESENCE is purged, as its max age does.
func TestEventsAfterExpiry(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.RecentEvents = 1 // the view's memory holds only the last event: the others are read from the stream
	g, base := startGateway(t, cfg)
	joinAudience(t, base, "show-1", 1, 2, 3)
	s := waitSnapshot(t, base, "show-1", func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := g.JetStream().Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Purge(ctx, jetstream.WithPurgeSequence(s.Seq)); err != nil { // keeps only the last event
		t.Fatal(err)
	}
	tok := token(t, "show-1")
	for _, since := range []uint64{0, s.Seq - 2} {
		var e struct{ Error, Message string }
		code, raw := getJSON(t, base, fmt.Sprintf("/v1/channels/show-1/events?since=%d", since), tok, nil)
		if err := json.Unmarshal([]byte(raw), &e); err != nil || code != http.StatusGone || e.Error != "expired" ||
			!strings.Contains(e.Message, "snapshot") {
			t.Errorf("since=%d with the events up to %d gone: %d %s, want 410 expired", since, s.Seq-1, code, raw)
		}
	}
	// since S-1 misses nothing; no since at all claims nothing: both get the events kept.
	for _, q := range []string{fmt.Sprintf("?since=%d", s.Seq-1), ""} {
		var page struct{ Events []presence.Event }
		if code, raw := getJSON(t, base, "/v1/channels/show-1/events"+q, tok, &page); code != 200 ||
			len(page.Events) != 1 || page.Events[0].Seq != s.Seq {
			t.Errorf("%q, the oldest kept is %d: %d %s, want that event", q, s.Seq, code, raw)
		}
	}
}

// TestEventsFromMemory: GET .../events?since=S is answered from the view's memory of the latest events when it
// reaches back to S, page by page, with no read of the stream: here the stream was emptied, and the events are
// still given. A since of another epoch is 410 as from the stream.
func TestEventsFromMemory(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	joinAudience(t, base, "show-1", 1)
	joinAudience(t, base, "other", 9)
	joinAudience(t, base, "show-1", 2, 3)
	s := waitSnapshot(t, base, "show-1", func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	waitSnapshot(t, base, "other", func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := g.JetStream().Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Purge(ctx); err != nil { // every event gone from the stream
		t.Fatal(err)
	}
	tok := token(t, "show-1")
	var got []uint32
	for since, pages := uint64(0), 0; pages < 3; pages++ {
		var page struct {
			Events []presence.Event
			Epoch  string
		}
		code, raw := getJSON(t, base, fmt.Sprintf("/v1/channels/show-1/events?since=%d&limit=2", since), tok, &page)
		if code != 200 || page.Epoch != s.Epoch || page.Events == nil {
			t.Fatalf("since=%d: %d %s, want 200 and the events from memory", since, code, raw)
		}
		if len(page.Events) == 0 {
			break
		}
		for _, e := range page.Events {
			got = append(got, e.UID)
			since = e.Seq
		}
	}
	if !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("show-1's events from memory: uids %v, want 1, 2, 3", got)
	}
	code, raw := getJSON(t, base, fmt.Sprintf("/v1/channels/show-1/events?since=0&epoch=%d", 1), tok, nil)
	if code != http.StatusGone || !strings.Contains(raw, `"error":"expired"`) {
		t.Fatalf("since of another epoch: %d %s, want 410 expired", code, raw)
	}
}

func uids(ms []presence.Member) []uint32 {
	out := make([]uint32, len(ms))
	for i, m := range ms {
		out[i] = m.UID
	}
	return out
}

func TestRESTAuthorisation(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, auth.Claims{Channels: []string{"*"},
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Hour))}}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := auth.Issue("another-secret-0123456789", []string{"*"}, time.Hour, "")
	cases := []struct {
		name, path, tok string
		status          int
		code            string
	}{
		{"no token", presencePath("show-1"), "", 401, "unauthorized"},
		{"garbage token", presencePath("show-1"), "not.a.jwt", 401, "invalid_token"},
		{"wrong key", presencePath("show-1"), otherKey, 401, "invalid_token"},
		{"expired", presencePath("show-1"), expired, 401, "token_expired"},
		{"other channel", presencePath("show-2"), token(t, "show-1"), 403, "forbidden"},
		{"prefix does not match", presencePath("shows"), token(t, "show-*"), 403, "forbidden"},
		{"list needs *", "/v1/channels", token(t, "show-*"), 403, "forbidden"},
		{"events of other channel", "/v1/channels/show-2/events", token(t, "show-1"), 403, "forbidden"},
		{"bad limit", "/v1/channels/show-1/events?limit=1001", token(t, "show-1"), 400, "bad_request"},
		{"zero limit", "/v1/channels/show-1/events?limit=0", token(t, "show-1"), 400, "bad_request"},
		{"bad since", "/v1/channels/show-1/events?since=-1", token(t, "show-1"), 400, "bad_request"},
		{"list sorted otherwise", "/v1/channels?sort=members", token(t, "*"), 400, "bad_request"},
		{"list of none", "/v1/channels?limit=0", token(t, "*"), 400, "bad_request"},
		{"list of some", "/v1/channels?limit=some", token(t, "*"), 400, "bad_request"},
		{"list matching more than a name", "/v1/channels?q=" + strings.Repeat("a", 65), token(t, "*"), 400, "bad_request"},
		{"illegal channel name", "/v1/channels/" + url.PathEscape("a*b") + "/presence", token(t, "*"), 400, "invalid_channel"},
		{"prefix grant", presencePath("show-1"), token(t, "show-*"), 200, ""},
		{"exact grant, odd name", presencePath("a b.>"), token(t, "a b.>"), 200, ""},
		{"unknown channel", presencePath("nobody-here"), token(t, "*"), 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body struct {
				Error, Message string
			}
			code, raw := getJSON(t, base, tc.path, tc.tok, nil)
			_ = json.Unmarshal([]byte(raw), &body)
			if code != tc.status || body.Error != tc.code || (code != 200 && body.Message == "") {
				t.Fatalf("got %d %s, want %d %q", code, raw, tc.status, tc.code)
			}
			if strings.Contains(raw, tc.tok) && tc.tok != "" {
				t.Fatalf("the answer echoes the token")
			}
		})
	}
	// An unknown channel is an empty roster at seq 0, lists present.
	_, raw := getJSON(t, base, presencePath("nobody-here"), token(t, "*"), nil)
	if !regexp.MustCompile(`^\{"channel":"nobody-here","seq":0,"epoch":"[0-9]+","hosts":\[\],"audience":\[\],"users":\[\],"counts":\{"hosts":0,"audience":0,"users":0\}\}$`).MatchString(raw) {
		t.Fatalf("unknown channel: %s", raw)
	}
}

// TestRestartKeepsRosters stops the gateway and starts another on the same data: rosters are the same, and the
// presence stream carries on without repeating or skipping an event.
func TestRestartKeepsRosters(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g1, err := gateway.Start(context.Background(), testConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + g1.Addr().String()
	now := time.Now().Unix()
	for i := range 50 {
		if a := postSigned(t, base, userEvent(fmt.Sprint("j", i), ncs.AudienceJoin, "show-1", uint32(i+1), 10, now, nil)); a.Status != 200 {
			t.Fatal(a.Raw)
		}
	}
	for i := range 20 {
		if a := postSigned(t, base, userEvent(fmt.Sprint("l", i), ncs.AudienceLeave, "show-1", uint32(i+1), 11, now, nil)); a.Status != 200 {
			t.Fatal(a.Raw)
		}
	}
	before := waitSnapshot(t, base, "show-1", func(s presence.Snapshot) bool { return s.Counts.Audience == 30 })
	if err := g1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	_, base2 := startGateway(t, testConfig(t, dir))
	after := waitSnapshot(t, base2, "show-1", func(s presence.Snapshot) bool { return s.Seq >= before.Seq })
	if !snapshotsEqual(before, after) {
		t.Fatalf("after restart\n%+v\nwant\n%+v", after, before)
	}
	// Old notifications delivered again change nothing; new ones continue the stream.
	postSigned(t, base2, userEvent("j0-again", ncs.AudienceJoin, "show-1", 1, 10, now, nil))
	postSigned(t, base2, userEvent("j100", ncs.AudienceJoin, "show-1", 100, 10, now, nil))
	final := waitSnapshot(t, base2, "show-1", func(s presence.Snapshot) bool { return s.Counts.Audience == 31 })
	var page struct{ Events []presence.Event }
	getJSON(t, base2, "/v1/channels/show-1/events?limit=1000", token(t, "show-1"), &page)
	if len(page.Events) != 71 || page.Events[70].UID != 100 || page.Events[70].Seq != final.Seq {
		t.Fatalf("%d events (want 50 joins, 20 leaves, 1 join), last %+v", len(page.Events), page.Events[len(page.Events)-1])
	}
}

func snapshotsEqual(a, b presence.Snapshot) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// quietAfterExpiry starts a gateway whose channel "quiet" had two joins (their snapshots returned), then "busy"
// three (the snapshot of the last returned), after which every event but busy's last expired: quiet has been quiet
// since before the oldest event kept.
func quietAfterExpiry(t *testing.T, edit ...func(*gateway.Config)) (base string, quiet, quiet2, busy presence.Snapshot) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	for _, e := range edit {
		e(&cfg)
	}
	g, base := startGateway(t, cfg)
	joinAudience(t, base, "quiet", 1)
	quiet = waitSnapshot(t, base, "quiet", func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })
	joinAudience(t, base, "quiet", 2)
	quiet2 = waitSnapshot(t, base, "quiet", func(s presence.Snapshot) bool { return s.Counts.Audience == 2 })
	joinAudience(t, base, "busy", 1, 2, 3)
	busy = waitSnapshot(t, base, "busy", func(s presence.Snapshot) bool { return s.Counts.Audience == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := g.JetStream().Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Purge(ctx, jetstream.WithPurgeSequence(busy.Seq)); err != nil { // keeps only busy's last event
		t.Fatal(err)
	}
	if quiet2.Seq+1 >= busy.Seq {
		t.Fatalf("quiet's last event %d is not older than the oldest kept, %d", quiet2.Seq, busy.Seq)
	}
	return base, quiet, quiet2, busy
}

// TestEventsOfAQuietChannelAfterExpiry: a channel with no event for longer than USHER_PRESENCE_MAX_AGE, while other
// channels' events expire, has a snapshot whose seq is older than the oldest event kept. The 410 answer says to read
// the snapshot, then the events after its seq: that must then be answered (nothing of the channel is missing), not
// 410 again, for ever. A since after which the channel did have events that are gone is still 410.
func TestEventsOfAQuietChannelAfterExpiry(t *testing.T) {
	t.Parallel()
	base, quiet, quiet2, busy := quietAfterExpiry(t, func(cfg *gateway.Config) { cfg.RecentEvents = 1 })
	tok := token(t, "quiet")
	s := waitSnapshot(t, base, "quiet", func(presence.Snapshot) bool { return true })
	if s.Seq != quiet2.Seq || s.Seq+1 >= busy.Seq {
		t.Fatalf("quiet's snapshot at seq %d, want its last event %d, before busy's last %d", s.Seq, quiet2.Seq, busy.Seq)
	}
	for _, q := range []string{fmt.Sprintf("?since=%d", s.Seq), fmt.Sprintf("?since=%d&epoch=%s", s.Seq, s.Epoch)} {
		var page struct{ Events []presence.Event }
		if code, raw := getJSON(t, base, "/v1/channels/quiet/events"+q, tok, &page); code != 200 || len(page.Events) != 0 {
			t.Errorf("%s, the snapshot's seq: %d %s, want 200 and no event", q, code, raw)
		}
	}
	// quiet's second join, after quiet.Seq, is gone.
	if code, raw := getJSON(t, base, fmt.Sprintf("/v1/channels/quiet/events?since=%d", quiet.Seq), tok, nil); code != http.StatusGone {
		t.Errorf("since=%d with quiet's event %d gone: %d %s, want 410", quiet.Seq, quiet2.Seq, code, raw)
	}
}

// GET /v1/channels with no query lists every channel with members, by name (the contract); q, sort=size and limit
// narrow it as a console showing the busiest channels wants, and total tells how many matched before the limit.
func TestChannelsListQueries(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	members := map[string]int{"Show-1": 3, "show-2": 1, "talk": 2, "lobby-show": 2, "quiet": 0}
	var bodies [][]byte
	for ch, m := range members {
		for uid := range m {
			bodies = append(bodies, audienceJoin(fmt.Sprint(ch, "-", uid), ch, uint32(uid+1), 1))
		}
	}
	// "quiet" had a member, who left: it is not listed.
	bodies = append(bodies, audienceJoin("quiet-join", "quiet", 7, 1), notification("quiet-leave", ncs.AudienceLeave,
		map[string]any{"channelName": "quiet", "uid": 7, "clientSeq": 2, "ts": time.Now().Unix(), "reason": 1, "duration": 1}))
	for _, b := range bodies {
		if a := postSigned(t, base, b); a.Status != 200 {
			t.Fatalf("notification: %d %s", a.Status, a.Raw)
		}
	}
	all := token(t, "*")
	for ch, m := range members {
		waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return len(s.Audience) == m && s.Seq > 0 })
	}
	type list struct {
		Channels []presence.Summary
		Total    int
	}
	for _, tc := range []struct {
		query string
		want  []string
		total int
	}{
		{"", []string{"Show-1", "lobby-show", "show-2", "talk"}, 4},
		{"?q=&sort=&limit=", []string{"Show-1", "lobby-show", "show-2", "talk"}, 4},
		{"?q=" + strings.Repeat("s", 64), []string{}, 0},
		{"?q=SHOW", []string{"Show-1", "lobby-show", "show-2"}, 3},
		{"?q=-", []string{"Show-1", "lobby-show", "show-2"}, 3},
		{"?q=nothing", []string{}, 0},
		{"?sort=size", []string{"Show-1", "lobby-show", "talk", "show-2"}, 4},
		{"?sort=size&limit=2", []string{"Show-1", "lobby-show"}, 4},
		{"?sort=size&limit=3", []string{"Show-1", "lobby-show", "talk"}, 4},
		{"?sort=name&limit=3", []string{"Show-1", "lobby-show", "show-2"}, 4},
		{"?q=show&sort=size&limit=1", []string{"Show-1"}, 3},
		{"?q=o&sort=size&limit=10", []string{"Show-1", "lobby-show", "show-2"}, 3},
	} {
		var got list
		code, raw := getJSON(t, base, "/v1/channels"+tc.query, all, &got)
		var names []string
		for _, c := range got.Channels {
			names = append(names, c.Channel)
			if c.Counts.Audience != members[c.Channel] {
				t.Errorf("%s: %s listed with %d audience, want %d", tc.query, c.Channel, c.Counts.Audience, members[c.Channel])
			}
		}
		if code != 200 || !slices.Equal(names, tc.want) || got.Total != tc.total || got.Channels == nil {
			t.Errorf("GET /v1/channels%s: %d, %q of %d (%s); want %q of %d", tc.query, code, names, got.Total, raw, tc.want, tc.total)
		}
	}
}
