package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/subject"
	"github.com/usher-presence/usher/test/testutil"
)

// Agora's published signature vector.
const (
	vectorBody   = `{"eventMs":1560408533119,"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e-53f411c2761f","notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}`
	vectorSecret = "secret"
	vectorSHA256 = "6d3320c60b11101395b7fc8f9068748808a0aa1bfa064438e39d1bc2c7d74d99"
	vectorSHA1   = "033c62f40f687675f17f0f41f91a40c71c0f134c"
)

func TestAgoraVector(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.NCSSecrets = []string{vectorSecret}
	g, base := startGateway(t, cfg)

	for _, h := range []http.Header{
		{ncs.HeaderSignatureV2: {vectorSHA256}},
		{ncs.HeaderSignature: {vectorSHA1}},
		{ncs.HeaderSignatureV2: {vectorSHA256}, ncs.HeaderSignature: {vectorSHA1}},
	} {
		if a := post(t, http.DefaultClient, base+"/v1/ncs", []byte(vectorBody), h); a.Status != http.StatusOK || !a.OK {
			t.Fatalf("Agora's vector with %v: got %d %s, want 200 {\"ok\":true}", h, a.Status, a.Raw)
		}
	}
	msgs := readStream(t, g.JetStream())
	if len(msgs) != 1 {
		t.Fatalf("stored %d messages, want the vector once:\n%s", len(msgs), describe(msgs))
	}
	// Event type 10 names no channel: it is stored under its product and type, byte for byte.
	if msgs[0].Subject != "usher.other.1.10" || string(msgs[0].Data) != vectorBody {
		t.Fatalf("stored %s %s, want usher.other.1.10 with the body unchanged", msgs[0].Subject, msgs[0].Data)
	}
	if got := msgs[0].Header.Get(jetstream.MsgIDHeader); got != "4eb720f0-8da7-11e9-a43e-53f411c2761f" {
		t.Fatalf("message id %q, want the noticeId", got)
	}
}

func TestSignatureHeaders(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.NCSSecrets = []string{"old-secret", "new-secret"}
	g, base := startGateway(t, cfg)

	cases := []struct {
		name   string
		header func(body []byte) http.Header
		status int
		code   string
	}{
		{"sha256 only", func(b []byte) http.Header {
			return http.Header{ncs.HeaderSignatureV2: {ncs.SignSHA256("old-secret", b)}}
		}, 200, ""},
		{"sha1 only", func(b []byte) http.Header {
			return http.Header{ncs.HeaderSignature: {ncs.SignSHA1("old-secret", b)}}
		}, 200, ""},
		{"rotation: second secret", func(b []byte) http.Header { return signed("new-secret", b) }, 200, ""},
		{"upper-case hex", func(b []byte) http.Header {
			return http.Header{ncs.HeaderSignatureV2: {strings.ToUpper(ncs.SignSHA256("new-secret", b))}}
		}, 200, ""},
		{"missing", func([]byte) http.Header { return http.Header{} }, 401, "missing_signature"},
		{"unknown secret", func(b []byte) http.Header { return signed("other-secret", b) }, 401, "bad_signature"},
		{"v2 decides over a good v1", func(b []byte) http.Header {
			return http.Header{ncs.HeaderSignature: {ncs.SignSHA1("old-secret", b)}, ncs.HeaderSignatureV2: {ncs.SignSHA256("wrong", b)}}
		}, 401, "bad_signature"},
		{"sha1 value in the v2 header", func(b []byte) http.Header {
			return http.Header{ncs.HeaderSignatureV2: {ncs.SignSHA1("old-secret", b)}}
		}, 401, "bad_signature"},
		{"not hex", func([]byte) http.Header { return http.Header{ncs.HeaderSignatureV2: {"zz"}} }, 401, "bad_signature"},
	}
	wantStored := 0
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := audienceJoin(fmt.Sprintf("sig-%d", i), "sig-test", 7, int64(i+1))
			a := post(t, http.DefaultClient, base+"/v1/ncs", body, tc.header(body))
			if a.Status != tc.status || a.Error != tc.code {
				t.Fatalf("got %d %s, want %d error %q", a.Status, a.Raw, tc.status, tc.code)
			}
			if tc.status != 200 && a.Message == "" {
				t.Fatalf("error answer has no message: %s", a.Raw)
			}
		})
		if tc.status == 200 {
			wantStored++
		}
	}
	if msgs := readStream(t, g.JetStream()); len(msgs) != wantStored {
		t.Fatalf("stored %d messages, want %d (only the accepted ones):\n%s", len(msgs), wantStored, describe(msgs))
	}
}

func TestRejections(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))

	huge := audienceJoin("huge", "big", 1, 1)
	huge = append(huge[:len(huge)-1], []byte(`,"padding":"`+strings.Repeat("x", gateway.DefaultMaxBodyBytes)+`"}`)...)
	long := strings.Repeat("c", ncs.MaxChannelNameLength+1)
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"body over 64 KiB", huge, 413, "body_too_large"},
		{"not JSON", []byte(`{"noticeId":`), 400, "invalid_json"},
		{"JSON array", []byte(`[1,2]`), 400, "invalid_json"},
		{"no noticeId", []byte(`{"productId":1,"eventType":105,"payload":{"channelName":"x","uid":1}}`), 400, "missing_field"},
		{"empty noticeId", []byte(`{"noticeId":"","productId":1,"eventType":105,"payload":{"channelName":"x","uid":1}}`), 400, "missing_field"},
		{"no eventType", []byte(`{"noticeId":"n1","productId":1,"payload":{"channelName":"x","uid":1}}`), 400, "missing_field"},
		{"channel event without payload", []byte(`{"noticeId":"n2","productId":1,"eventType":103}`), 400, "invalid_channel"},
		{"channel event without channelName", []byte(`{"noticeId":"n3","productId":1,"eventType":106,"payload":{"uid":1}}`), 400, "invalid_channel"},
		{"channelName too long", audienceJoin("n4", long, 1, 1), 400, "invalid_channel"},
		{"channelName with a slash", audienceJoin("n5", "a/b", 1, 1), 400, "invalid_channel"},
		{"channelName not ASCII", audienceJoin("n6", "caf\u00e9", 1, 1), 400, "invalid_channel"},
		{"uid not a number", []byte(`{"noticeId":"n7","productId":1,"eventType":105,"payload":{"channelName":"x","uid":"abc"}}`), 400, "invalid_payload"},
		// A noticeId is stored as the message's Nats-Msg-Id, which NATS trims and in which it turns line breaks into
		// spaces: "n-8 " and "n-8" would be one id, and the second notification would be dropped as a duplicate.
		{"noticeId ending with a space", audienceJoin("n-8 ", "x", 1, 1), 400, "invalid_payload"},
		{"noticeId starting with a tab", audienceJoin("\tn-9", "x", 1, 1), 400, "invalid_payload"},
		{"noticeId with a line break", audienceJoin("n-10\nx", "x", 1, 1), 400, "invalid_payload"},
		{"noticeId of spaces", audienceJoin("   ", "x", 1, 1), 400, "invalid_payload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := postSigned(t, base, tc.body)
			if a.Status != tc.status || a.Error != tc.code || a.Message == "" {
				t.Fatalf("got %d %s, want %d with error %q and a message", a.Status, a.Raw, tc.status, tc.code)
			}
		})
	}
	if msgs := readStream(t, g.JetStream()); len(msgs) != 0 {
		t.Fatalf("rejected notifications were stored:\n%s", describe(msgs))
	}
	// Other paths and methods answer JSON errors too.
	for _, r := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/v1/ncs", 405}, {http.MethodGet, "/nope", 404},
		// A callback URL with a trailing slash gets the same JSON 404, with a request id (so it is logged), not a
		// bare 307 that no log line or metric shows.
		{http.MethodPost, "/v1/ncs/", 404}, {http.MethodGet, "/v1/channels/", 404},
	} {
		body := audienceJoin("slash-1", "show-1", 1, 1)
		req, _ := http.NewRequest(r.method, base+r.path, bytes.NewReader(body))
		ncs.Sign(req.Header, testSecret, body)
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != r.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
			resp.Header.Get(gateway.HeaderRequestID) == "" {
			t.Errorf("%s %s: got %d %s, want %d JSON with a request id", r.method, r.path, resp.StatusCode, resp.Header.Get("Content-Type"), r.status)
		}
	}
	if msgs := readStream(t, g.JetStream()); len(msgs) != 0 {
		t.Fatalf("a notification posted to another path was stored:\n%s", describe(msgs))
	}
}

func TestUnknownEventsAreStored(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	bodies := map[string]string{
		// An RTC event type Usher does not parse, naming a channel: filed under the channel.
		"usher.ncs.show-1": `{"noticeId":"u1","productId":1,"eventType":109,"notifyMs":1,"payload":{"channelName":"show-1","x":true}}`,
		// Another product's notification (cloud recording uses cname): filed under product and type.
		"usher.other.3.40": `{"noticeId":"u2","productId":3,"eventType":40,"notifyMs":1,"payload":{"cname":"show-1"}}`,
		// A channel event type of another product is not parsed as RTC, and an invalid name is no channel.
		"usher.other.5.103": `{"noticeId":"u3","productId":5,"eventType":103,"notifyMs":1,"payload":{"channelName":"bad/name"}}`,
	}
	for _, body := range bodies {
		if a := postSigned(t, base, []byte(body)); a.Status != 200 {
			t.Fatalf("%s: got %d %s, want 200", body, a.Status, a.Raw)
		}
	}
	msgs := readStream(t, g.JetStream())
	if len(msgs) != len(bodies) {
		t.Fatalf("stored %d, want %d:\n%s", len(msgs), len(bodies), describe(msgs))
	}
	for _, m := range msgs {
		if bodies[m.Subject] != string(m.Data) {
			t.Errorf("stored on %s: %s; want there: %s", m.Subject, m.Data, bodies[m.Subject])
		}
	}
}

func TestResendStoredOnce(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	first := []byte(`{"noticeId":"resend-1","productId":1,"eventType":105,"notifyMs":1000,"sid":"s","payload":{"channelName":"show-1","uid":5,"platform":1,"clientSeq":10,"ts":1}}`)
	// Agora updates notifyMs on a resend; the body, and so the signature, differ.
	again := bytes.Replace(first, []byte(`"notifyMs":1000`), []byte(`"notifyMs":4000`), 1)
	for _, b := range [][]byte{first, again, first} {
		if a := postSigned(t, base, b); a.Status != 200 || !a.OK {
			t.Fatalf("got %d %s, want 200", a.Status, a.Raw)
		}
	}
	msgs := readStream(t, g.JetStream())
	if len(msgs) != 1 || !bytes.Equal(msgs[0].Data, first) || msgs[0].Subject != "usher.ncs.show-1" {
		t.Fatalf("want the first delivery stored once on usher.ncs.show-1, got:\n%s", describe(msgs))
	}
	if got := msgs[0].Header.Get(gateway.HeaderEventType); got != "105" {
		t.Fatalf("%s header %q, want 105", gateway.HeaderEventType, got)
	}
}

func TestConcurrentDistinctStoredOnce(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	// This test is about exactly-once storage, not latency: allow for a loaded machine running -race.
	cfg.PublishTimeout = 20 * time.Second
	g, base := startGateway(t, cfg)
	const n = 1000
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			body := audienceJoin(fmt.Sprintf("c-%04d", i), fmt.Sprintf("chan-%d", i%17), uint32(i), int64(i+1))
			if a := post(t, client, base+"/v1/ncs", body, signed(testSecret, body)); a.Status != 200 {
				errs <- fmt.Sprintf("notice %d: %d %s", i, a.Status, a.Raw)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	ids := noticeIDs(t, readStream(t, g.JetStream()))
	if len(ids) != n {
		t.Fatalf("stored %d distinct notifications, want %d", len(ids), n)
	}
	for id, c := range ids {
		if c != 1 {
			t.Errorf("%s stored %d times", id, c)
		}
	}
}

// TestSubjectIsolation checks that channel names full of subject syntax stay inside their own subject.
func TestSubjectIsolation(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	nc := embeddedConn(t, g)

	subscribe := func(subj string) *nats.Subscription {
		s, err := nc.SubscribeSync(subj)
		if err != nil {
			t.Fatalf("subscribe %s: %v", subj, err)
		}
		return s
	}
	wild := subscribe("usher.ncs.a.>")
	plainA := subscribe("usher.ncs.a")
	dotGT := subscribe(subject.NCS("a.>"))
	space := subscribe(subject.NCS("a b"))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	for i, ch := range []string{"a.>", "a b"} {
		if a := postSigned(t, base, audienceJoin(fmt.Sprintf("iso-%d", i), ch, 1, 1)); a.Status != 200 {
			t.Fatalf("%q: %d %s", ch, a.Status, a.Raw)
		}
	}
	expectOnly := func(s *nats.Subscription, channel string) {
		t.Helper()
		m, err := s.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: no message: %v", s.Subject, err)
		}
		d, err := ncs.Decode(m.Data)
		if err != nil || d.Channel != channel {
			t.Fatalf("%s received %s, want channel %q", s.Subject, m.Data, channel)
		}
	}
	expectOnly(dotGT, "a.>")
	expectOnly(space, "a b")

	msgs := readStream(t, g.JetStream())
	for _, m := range msgs {
		if strings.HasPrefix(m.Subject, "usher.ncs.a.") || m.Subject == "usher.ncs.a" {
			t.Errorf("stored on %s", m.Subject)
		}
	}
	if len(msgs) != 2 || msgs[0].Subject != "usher.ncs.a%2E%3E" || msgs[1].Subject != "usher.ncs.a%20b" {
		t.Fatalf("stored subjects:\n%s", describe(msgs))
	}

	// The sentinels below are stored too, so the stream is checked first.
	// Both notifications were routed before their 200 came back. A sentinel published now arrives after anything
	// routed before it, so if the wildcard or plain subscriber had matched, the sentinel would not come first.
	for _, s := range []*nats.Subscription{wild, plainA, dotGT, space} {
		sentinel := s.Subject
		if sentinel == "usher.ncs.a.>" {
			sentinel = "usher.ncs.a.sentinel"
		}
		if err := nc.Publish(sentinel, []byte("sentinel")); err != nil {
			t.Fatal(err)
		}
		m, err := s.NextMsg(5 * time.Second)
		if err != nil || string(m.Data) != "sentinel" {
			t.Fatalf("%s: want only the sentinel next, got %v %v", s.Subject, m, err)
		}
	}
}

// TestChannelHeader: each stored notification names its channel in Usher-Channel, exactly; a name that starts or
// ends with a space (Agora allows it), which a NATS header cannot carry, gets no header rather than another
// channel's name. Its subject always has it.
func TestChannelHeader(t *testing.T) {
	t.Parallel()
	g, base := startGateway(t, testConfig(t, t.TempDir()))
	for i, ch := range []string{" lobby ", "lob by", "lobby"} {
		if a := postSigned(t, base, audienceJoin(fmt.Sprintf("ch-%d", i), ch, 1, 1)); a.Status != http.StatusOK {
			t.Fatalf("%q: %d %s", ch, a.Status, a.Raw)
		}
	}
	want := map[string][]string{ // subject: the header's values
		subject.NCS(" lobby "): nil, subject.NCS("lob by"): {"lob by"}, subject.NCS("lobby"): {"lobby"},
	}
	msgs := readStream(t, g.JetStream())
	if len(msgs) != 3 {
		t.Fatalf("stored %d, want 3:\n%s", len(msgs), describe(msgs))
	}
	for _, m := range msgs {
		if got, w := m.Header.Values(gateway.HeaderChannel), want[m.Subject]; !slices.Equal(got, w) {
			t.Errorf("%s: %s %q, want %q", m.Subject, gateway.HeaderChannel, got, w)
		}
	}
}

func TestUnavailableJetStream(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.PublishTimeout = 500 * time.Millisecond
	g, base := startGateway(t, cfg)

	for _, path := range []string{"/healthz", "/readyz"} {
		if code := getStatus(t, base+path); code != 200 {
			t.Fatalf("%s: %d, want 200", path, code)
		}
	}
	if err := g.NATSServer().DisableJetStream(); err != nil {
		t.Fatalf("disable jetstream: %v", err)
	}
	a := postSigned(t, base, audienceJoin("while-down", "show-1", 1, 1))
	if a.Status != http.StatusServiceUnavailable || a.Error != "unavailable" || a.Message == "" {
		t.Fatalf("with JetStream off: got %d %s, want 503 unavailable", a.Status, a.Raw)
	}
	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() (bool, string) { // /readyz asks JetStream once a second
		code := getStatus(t, base+"/readyz")
		return code == http.StatusServiceUnavailable, fmt.Sprintf("/readyz with JetStream off: %d, want 503", code)
	})
	if m := scrape(t, base, ""); m[`usher_ncs_rejected_total{reason="unavailable"}`] != 1 || m["usher_ncs_accepted_total"] != 0 {
		t.Errorf("metrics: rejected{unavailable} %v, accepted %v; want 1 and 0",
			m[`usher_ncs_rejected_total{reason="unavailable"}`], m["usher_ncs_accepted_total"])
	}
	if code := getStatus(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz with JetStream off: %d, want 200 (the process is up)", code)
	}
}

func getStatus(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("get %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestShutdownLosesNothing posts while the gateway shuts down: everything answered 200 is in the stream after a
// restart on the same data directory.
func TestShutdownLosesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	g, err := gateway.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + g.Addr().String()
	client := &http.Client{Timeout: 10 * time.Second}

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	started := make(chan struct{})
	var once sync.Once
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("sd-%d-%d", w, i)
				body := audienceJoin(id, "show-1", uint32(w), int64(i+1))
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/ncs", bytes.NewReader(body))
				ncs.Sign(req.Header, testSecret, body)
				resp, err := client.Do(req)
				if err != nil {
					return // the server stopped accepting
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
					if i == 20 {
						once.Do(func() { close(started) })
					}
				}
			}
		})
	}
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("no sender had 21 notifications acknowledged within 30 s") // the senders end by themselves: 200 each, 10 s a request
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	wg.Wait()

	g2, _ := startGateway(t, testConfig(t, dir))
	ids := noticeIDs(t, readStream(t, g2.JetStream()))
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 21 {
		t.Fatalf("only %d acknowledged before shutdown", len(acked))
	}
	for _, id := range acked {
		if ids[id] != 1 {
			t.Errorf("acknowledged %s stored %d times after restart", id, ids[id])
		}
	}
	t.Logf("%d acknowledged, %d stored", len(acked), len(ids))
}

// TestExternalNATS runs the gateway against a NATS server reached by URL, as USHER_NATS_URL does.
func TestExternalNATS(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	cfg := testConfig(t, "")
	cfg.NATSURL = ns.ClientURL()
	g, base := startGateway(t, cfg)
	if g.NATSServer() != nil {
		t.Fatal("an embedded server was started although a URL was given")
	}
	if a := postSigned(t, base, audienceJoin("ext-1", "show-1", 1, 1)); a.Status != 200 {
		t.Fatalf("got %d %s", a.Status, a.Raw)
	}
	msgs := readStream(t, g.JetStream())
	if len(msgs) != 1 || msgs[0].Subject != "usher.ncs.show-1" {
		t.Fatalf("stored:\n%s", describe(msgs))
	}
}
