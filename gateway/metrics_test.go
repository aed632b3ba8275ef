package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/subject"
	"github.com/usher-presence/usher/test/testutil"
)

// scrape GETs /metrics with the given bearer token ("" for none) and returns the samples by their full name with
// labels as the exposition prints them, e.g. `usher_ncs_rejected_total{reason="bad_signature"}`.
func scrape(t testing.TB, base, tok string) map[string]float64 {
	t.Helper()
	status, body := getMetrics(t, base, tok)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

func getMetrics(t testing.TB, base, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// delta is how much each named sample moved between two scrapes.
func delta(before, after map[string]float64, name string) float64 { return after[name] - before[name] }

func TestMetricsCountTraffic(t *testing.T) {
	t.Parallel()
	const metricsToken = "scrape-me-0123456789"
	cfg := testConfig(t, t.TempDir())
	cfg.MetricsToken = metricsToken
	cfg.MaxBodyBytes = 2048
	_, base := startGateway(t, cfg)

	for _, tok := range []string{"", "wrong-token"} {
		if status, body := getMetrics(t, base, tok); status != http.StatusUnauthorized || !strings.Contains(body, `"error":"unauthorized"`) {
			t.Fatalf("GET /metrics with token %q: %d %s, want 401 unauthorized", tok, status, body)
		}
	}
	before := scrape(t, base, metricsToken)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "usher_nats_connected",
		`usher_ncs_rejected_total{reason="forbidden_source"}`, `usher_presence_notices_total{outcome="stale"}`} {
		if _, ok := before[name]; !ok {
			t.Errorf("the first scrape has no %s", name)
		}
	}
	if before["usher_nats_connected"] != 1 {
		t.Errorf("usher_nats_connected = %v, want 1", before["usher_nats_connected"])
	}

	// A watcher, so that live frames are written and their latency observed.
	const ch = "metered"
	w := mustDial(t, base, token(t, ch))
	w.subscribe(ch)
	w.expect("subscribed", ch)
	w.expect("snapshot", ch)

	// Three joins accepted, one resent (a duplicate), one sent again under a new noticeId (stale for the roster).
	for i, uid := range []uint32{1, 2, 3} {
		if a := postSigned(t, base, audienceJoin("m-"+strconv.Itoa(i), ch, uid, 1)); a.Status != 200 {
			t.Fatalf("join %d: %d %s", uid, a.Status, a.Raw)
		}
	}
	resend := audienceJoin("m-dup", ch, 4, 1)
	for range 2 {
		if a := postSigned(t, base, resend); a.Status != 200 {
			t.Fatalf("resend: %d %s", a.Status, a.Raw)
		}
	}
	if a := postSigned(t, base, audienceJoin("m-again", ch, 4, 1)); a.Status != 200 {
		t.Fatalf("join under a new noticeId: %d %s", a.Status, a.Raw)
	}
	w.expectEvents(ch, 4, 0)

	// One notification refused for each reason this gateway can meet.
	valid := audienceJoin("m-bad", ch, 9, 1)
	badSig := signed(testSecret, valid)
	badSig.Set(ncs.HeaderSignatureV2, strings.Repeat("0", 64))
	bigBody := audienceJoin("m-big", ch, 9, 1)
	bigBody = append(bigBody[:len(bigBody)-1], []byte(`,"pad":"`+strings.Repeat("x", 3000)+`"}`)...)
	rejects := []struct {
		reason string
		body   []byte
		header http.Header
	}{
		{"missing_signature", valid, http.Header{}},
		{"bad_signature", valid, badSig},
		{"body_too_large", bigBody, signed(testSecret, bigBody)},
		{"invalid_json", []byte("not json"), signed(testSecret, []byte("not json"))},
		{"missing_field", []byte(`{"productId":1}`), signed(testSecret, []byte(`{"productId":1}`))},
		{"invalid_channel", audienceJoin("m-ch", "a/b", 1, 1), nil},
		{"invalid_payload", notification("m-pl", ncs.AudienceJoin, map[string]any{"channelName": ch, "uid": "one", "clientSeq": 1}), nil},
	}
	for _, r := range rejects {
		h := r.header
		if h == nil {
			h = signed(testSecret, r.body)
		}
		if a := post(t, http.DefaultClient, base+"/v1/ncs", r.body, h); a.Error != r.reason {
			t.Fatalf("%s: got %d %s", r.reason, a.Status, a.Raw)
		}
	}

	// Counters move as they should: eventually, since the applier and the hub work after the answers.
	var after map[string]float64
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		after = scrape(t, base, metricsToken)
		// The applier counts its events as their acknowledgements come in, when it is next idle.
		return delta(before, after, "usher_delivery_seconds_count") >= 4 && delta(before, after, "usher_presence_events_total") >= 4,
			"no end-to-end latency observed, or events counted, for the 4 events"
	})
	want := map[string]float64{
		"usher_ncs_received_total":                              6 + float64(len(rejects)),
		"usher_ncs_accepted_total":                              6,
		"usher_ncs_duplicates_total":                            1,
		"usher_ncs_ingest_seconds_count":                        6,
		`usher_presence_notices_total{outcome="applied"}`:       4,
		`usher_presence_notices_total{outcome="stale"}`:         1,
		"usher_presence_events_total":                           4,
		"usher_ws_connections":                                  1,
		"usher_ws_subscriptions":                                1,
		"usher_delivery_seconds_count":                          4,
		`usher_http_requests_total{code="200",route="/v1/ncs"}`: 6,
	}
	for _, r := range rejects {
		want[`usher_ncs_rejected_total{reason="`+r.reason+`"}`] = 1
	}
	for name, n := range want {
		if d := delta(before, after, name); d != n {
			t.Errorf("%s moved by %v, want %v", name, d, n)
		}
	}
	// subscribed, snapshot and 4 events at least.
	if d := delta(before, after, "usher_ws_frames_sent_total"); d < 6 {
		t.Errorf("usher_ws_frames_sent_total moved by %v, want at least 6", d)
	}
	// The latency of a frame written within seconds of notifyMs lands in the low buckets.
	if d := delta(before, after, `usher_delivery_seconds_bucket{le="5"}`); d != 4 {
		t.Errorf("%v of 4 deliveries within 5 s", d)
	}

	// Refused upgrades are counted by reason.
	if _, resp, err := dial(t, base, "not-a-token", false); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("dial with a bad token: %v", err)
	}
	expired := expiredToken(t)
	if _, _, err := dial(t, base, expired, false); err == nil {
		t.Fatal("dial with an expired token succeeded")
	}
	last := scrape(t, base, metricsToken)
	if d := delta(after, last, `usher_ws_upgrades_refused_total{reason="token"}`); d != 2 {
		t.Errorf("usher_ws_upgrades_refused_total{reason=token} moved by %v, want 2", d)
	}
}

// TestMetricsOpenWithoutToken checks that /metrics needs no token when USHER_METRICS_TOKEN is unset.
func TestMetricsOpenWithoutToken(t *testing.T) {
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	if s := scrape(t, base, ""); s["usher_ncs_received_total"] != 0 || s["usher_nats_connected"] != 1 {
		t.Fatalf("fresh gateway: received %v, nats connected %v", s["usher_ncs_received_total"], s["usher_nats_connected"])
	}
}

// TestMetricsViewNotServing: a view that finds presence events gone that no checkpoint covers serves no roster
// until the applier saves one past them; usher_presence_view_ready says so while it lasts, and again once it
// serves.
func TestMetricsViewNotServing(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	cfg := testConfig(t, "")
	cfg.NATSURL = ns.ClientURL()
	first, base := startGateway(t, cfg)
	if m := scrape(t, base, ""); m["usher_presence_view_ready"] != 1 {
		t.Fatalf("usher_presence_view_ready = %v on a gateway serving, want 1", m["usher_presence_view_ready"])
	}
	if err := first.Shutdown(context.Background()); err != nil { // its final checkpoint is at presence event 0
		t.Fatal(err)
	}

	// Two events stored and deleted by hand: no checkpoint covers them.
	js := testutil.JetStreamAt(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		if _, err := js.Publish(ctx, subject.Presence("gone"), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Purge(ctx); err != nil {
		t.Fatal(err)
	}

	cfg = testConfig(t, "")
	cfg.NATSURL, cfg.ViewCatchUp, cfg.CheckpointInterval = ns.ClientURL(), 500*time.Millisecond, 100*time.Millisecond
	_, base = startGateway(t, cfg)
	if m := scrape(t, base, ""); m["usher_presence_view_ready"] != 0 {
		t.Fatalf("usher_presence_view_ready = %v while the view misses events, want 0", m["usher_presence_view_ready"])
	}
	if status := getStatus(t, base+"/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz: %d, want 503", status)
	}
	// Notifications make the applier save a checkpoint past the missing events; the view loads it.
	joinAudience(t, base, "back", 1, 2, 3)
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		v := scrape(t, base, "")["usher_presence_view_ready"]
		return v == 1, fmt.Sprintf("usher_presence_view_ready = %v", v)
	})
}

// TestMetricsEventsCountedOnceStored: a presence event whose publish fails (fenced: another applier, here a foreign
// publisher, stored an event since) is not stored, and must not be counted; the next leader's events are. Counted
// at publish, every failed publish was counted, and again when the next leader published the same event.
func TestMetricsEventsCountedOnceStored(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	nc := embeddedConn(t, g)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	viewAt := func(seq float64) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
			m := scrape(t, base, "")
			return m["usher_presence_view_seq"] == seq && m["usher_applier_leading"] == 1,
				fmt.Sprintf("view at %v, leading %v; want %v, 1", m["usher_presence_view_seq"], m["usher_applier_leading"], seq)
		})
	}
	joinAudience(t, base, "fenced", 1) // stored at 1
	viewAt(1)
	if _, err := js.Publish(ctx, subject.Presence("elsewhere"), []byte(`{}`)); err != nil { // at 2
		t.Fatal(err)
	}
	// The applier's publish of this join's event expects the stream to end at 1, and fails; the next leader takes
	// the stream's event at 2 as the one it derives there.
	joinAudience(t, base, "fenced", 2)
	joinAudience(t, base, "fenced", 3) // stored at 3, by the next leader
	viewAt(3)
	ps, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	stored := 0 // by the applier: with the notification's USHER_NCS seq
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := ps.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("presence %d: %v", seq, err)
		}
		if m.Header.Get(gateway.HeaderNCSSeq) != "" {
			stored++
		}
	}
	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() (bool, string) {
		n := scrape(t, base, "")["usher_presence_events_total"]
		return n == float64(stored), fmt.Sprintf("usher_presence_events_total = %v, the applier stored %d", n, stored)
	})
}

// TestMetricsNoticesCountedOnceWhenTheApplierRestarts: an applier whose publish fails starts again from its last
// checkpoint and applies the notifications after it again; each outcome is counted once all the same. Counted
// again, a leader failing in a loop (here: USHER_PRESENCE refuses its event) went on counting the same
// notifications every second, which looked like work being done.
func TestMetricsNoticesCountedOnceWhenTheApplierRestarts(t *testing.T) {
	t.Parallel()
	var logs testutil.SyncBuffer
	cfg := testConfig(t, t.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, &tlog{t: t}), &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, base := startGateway(t, cfg)
	before := scrape(t, base, "")
	join := func(id string, uid uint32) {
		t.Helper()
		if a := postSigned(t, base, audienceJoin(id, "looping", uid, 5)); a.Status != 200 {
			t.Fatalf("join %s: %d %s", id, a.Status, a.Raw)
		}
	}
	join("first", 1)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return scrape(t, base, "")["usher_presence_view_seq"] == 1, "event 1 not in the view"
	})

	accept := refusePresenceEvents(t, g)
	join("again", 1) // the same join under a new noticeId: stale
	join("second", 2)
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		n := strings.Count(logs.String(), "applier stopped; retrying")
		return n >= 3, fmt.Sprintf("the applier failed %d times", n)
	})
	accept()
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		seq := scrape(t, base, "")["usher_presence_view_seq"]
		return seq == 2, fmt.Sprintf("view at %v, want 2", seq)
	})
	after := scrape(t, base, "")
	for outcome, n := range map[string]float64{"applied": 2, "stale": 1} {
		name := `usher_presence_notices_total{outcome="` + outcome + `"}`
		if d := delta(before, after, name); d != n {
			t.Errorf("%s moved by %v, want %v", name, d, n)
		}
	}
}

// usher_applier_backlog counts the notifications stored and not yet applied: here while USHER_PRESENCE refuses every
// event, so that the applier fails and retries, and it goes back to 0 once they are applied.
func TestMetricsApplierBacklog(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	if a := postSigned(t, base, audienceJoin("backlog-0", "backlog", 1, 5)); a.Status != 200 {
		t.Fatalf("join: %d %s", a.Status, a.Raw)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		m := scrape(t, base, "")
		return m["usher_presence_view_seq"] == 1 && m["usher_applier_backlog"] == 0,
			fmt.Sprintf("view at %v, backlog %v", m["usher_presence_view_seq"], m["usher_applier_backlog"])
	})
	accept := refusePresenceEvents(t, g)
	const n = 30
	for uid := uint32(2); uid < 2+n; uid++ {
		if a := postSigned(t, base, audienceJoin(fmt.Sprintf("backlog-%d", uid), "backlog", uid, 5)); a.Status != 200 {
			t.Fatalf("join %d: %d %s", uid, a.Status, a.Raw)
		}
	}
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		b := scrape(t, base, "")["usher_applier_backlog"]
		return b == n, fmt.Sprintf("backlog %v, want %d", b, n)
	})
	accept()
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		m := scrape(t, base, "")
		return m["usher_presence_view_seq"] == 1+n && m["usher_applier_backlog"] == 0,
			fmt.Sprintf("view at %v, backlog %v", m["usher_presence_view_seq"], m["usher_applier_backlog"])
	})
}

// refusePresenceEvents makes USHER_PRESENCE refuse every event (a message size limit below any event's), so that
// the applier fails and retries; accept lifts the limit.
func refusePresenceEvents(t *testing.T, g *gateway.Gateway) (accept func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	ps, err := g.JetStream().Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	setMaxMsgSize := func(n int32) {
		t.Helper()
		c := ps.CachedInfo().Config
		c.MaxMsgSize = n
		if _, err := g.JetStream().UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	setMaxMsgSize(16)
	return func() { setMaxMsgSize(-1) }
}
