package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/subject"
)

const (
	testSecret    = "ncs-secret-one"
	testJWTSecret = "jwt-secret-for-tests-0123456789"
)

// tlog routes a logger to t.Logf, and stops when the test ends so late lines do not panic.
type tlog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tlog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &tlog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testConfig is a gateway on a free loopback port with in-process embedded NATS storing under dir.
func testConfig(t testing.TB, dir string) gateway.Config {
	return gateway.Config{
		Addr:       "127.0.0.1:0",
		NCSSecrets: []string{testSecret},
		JWTSecret:  testJWTSecret,
		DataDir:    dir,
		NATSListen: bus.ListenOff,
		Logger:     testLogger(t),
	}
}

// startGateway starts a gateway and stops it when the test ends.
func startGateway(t testing.TB, cfg gateway.Config) (*gateway.Gateway, string) {
	t.Helper()
	g, base := startGatewayToStop(t, cfg)
	t.Cleanup(func() {
		if err := g.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return g, base
}

// startGatewayToStop starts a gateway that the test stops itself, and returns it with its base URL.
func startGatewayToStop(t testing.TB, cfg gateway.Config) (*gateway.Gateway, string) {
	t.Helper()
	g, err := gateway.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	return g, "http://" + g.Addr().String()
}

// notification returns the body of a channel event.
func notification(noticeID string, eventType ncs.EventType, payload map[string]any) []byte {
	b, err := json.Marshal(map[string]any{
		"noticeId":  noticeID,
		"productId": 1,
		"eventType": int(eventType),
		"notifyMs":  time.Now().UnixMilli(),
		"sid":       "SID-" + noticeID,
		"payload":   payload,
	})
	if err != nil {
		panic(err)
	}
	return b
}

func audienceJoin(noticeID, channel string, uid uint32, clientSeq int64) []byte {
	return notification(noticeID, ncs.AudienceJoin, map[string]any{
		"channelName": channel, "uid": uid, "platform": 1, "clientSeq": clientSeq, "ts": time.Now().Unix(), "account": "test",
	})
}

// answer is a decoded HTTP answer.
type answer struct {
	Status  int
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Message string `json:"message"`
	Raw     string
}

// post sends body to url with the given headers, and decodes the JSON answer.
func post(t testing.TB, client *http.Client, url string, body []byte, header http.Header) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("post: %v", err)
		return answer{}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, Raw: string(raw)}
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return a
}

// signed returns both signature headers of body under secret.
func signed(secret string, body []byte) http.Header {
	h := http.Header{}
	ncs.Sign(h, secret, body)
	return h
}

func postSigned(t testing.TB, base string, body []byte) answer {
	t.Helper()
	return post(t, http.DefaultClient, base+"/v1/ncs", body, signed(testSecret, body))
}

// stored is one message of stream USHER_NCS.
type stored struct {
	Subject string
	Data    []byte
	Header  nats.Header
}

// readStream returns every message of stream USHER_NCS, oldest first.
func readStream(t testing.TB, js jetstream.JetStream) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, bus.NCSStream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		out = append(out, stored{Subject: m.Subject, Data: m.Data, Header: m.Header})
	}
	return out
}

// noticeIDs counts the stored messages per noticeId.
func noticeIDs(t testing.TB, msgs []stored) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, m := range msgs {
		var n ncs.Notification
		if err := json.Unmarshal(m.Data, &n); err != nil {
			t.Fatalf("stored message on %s is not a notification: %v", m.Subject, err)
		}
		ids[n.NoticeID]++
	}
	return ids
}

func describe(msgs []stored) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "%s %s\n", m.Subject, m.Data)
	}
	return b.String()
}

// expiredToken is a token for every channel, signed with the test secret, that expired a minute ago.
func expiredToken(t testing.TB) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, auth.Claims{Channels: []string{"*"},
		RegisteredClaims: jwt.RegisteredClaims{Subject: "tester", ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))}}).
		SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// storeJoins stores n audience joins of channel (uids 1..n, each with a long account) straight into USHER_NCS,
// faster than HTTP can, as if ingest had accepted them.
func storeJoins(t testing.TB, g *gateway.Gateway, channel string, n, accountLen int) {
	t.Helper()
	account := strings.Repeat("x", accountLen)
	now := time.Now().Unix()
	storeNotices(t, g, channel, n, func(i int) (ncs.EventType, map[string]any) {
		return ncs.AudienceJoin, map[string]any{"channelName": channel, "uid": i + 1, "clientSeq": 1, "ts": now, "account": account}
	})
}

// storeNotices stores n notifications of channel straight into USHER_NCS, as storeJoins does: the i-th (from 0)
// has noticeId "<channel>-<i>", and the type and payload that notice(i) gives.
func storeNotices(t testing.TB, g *gateway.Gateway, channel string, n int, notice func(i int) (ncs.EventType, map[string]any)) {
	t.Helper()
	nc := embeddedConn(t, g)
	js, _ := jetstream.New(nc)
	now := time.Now()
	for i := range n {
		typ, payload := notice(i)
		m := nats.NewMsg(subject.NCS(channel))
		m.Data = notification(fmt.Sprint(channel, "-", i), typ, payload)
		m.Header.Set(gateway.HeaderReceivedMs, strconv.FormatInt(now.UnixMilli(), 10))
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		if i%2048 == 2047 {
			waitPublished(t, js)
		}
	}
	waitPublished(t, js)
}

func waitPublished(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("stored notifications not acknowledged within 30 s")
	}
}

// embeddedConn is a client connection to g's embedded NATS server, closed when the test ends.
func embeddedConn(t testing.TB, g *gateway.Gateway) *nats.Conn {
	t.Helper()
	nc, err := bus.ConnectEmbedded(g.NATSServer(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
