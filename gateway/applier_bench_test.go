package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/subject"
	"github.com/usher-presence/usher/test/testutil"
)

// seeded stores n audience joins spread over channels in USHER_NCS of a fresh NATS server, as the ingester would,
// then starts a gateway on that server and returns it with the time it took to apply them all.
func seeded(b *testing.B, n, channels int) (*gateway.Gateway, string, time.Duration) {
	b.Helper()
	ns := testutil.NATSServer(b, "127.0.0.1:-1")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: time.Minute, MaxAge: time.Hour, PresenceMaxAge: time.Hour, LeaseTTL: 2 * time.Second}); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		ch := fmt.Sprintf("chan-%d", i%channels)
		body := audienceJoin(fmt.Sprint("seed-", i), ch, uint32(i+1), int64(i+1))
		m := nats.NewMsg(subject.NCS(ch))
		m.Data = body
		m.Header.Set(gateway.HeaderReceivedMs, strconv.FormatInt(now.UnixMilli(), 10))
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
		if i%4096 == 4095 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("seeding timed out")
	}

	cfg := testConfig(b, "")
	cfg.NATSURL = ns.ClientURL()
	start := time.Now()
	g, base := startGateway(b, cfg)
	ps, _ := js.Stream(ctx, bus.PresenceStream)
	for {
		info, err := ps.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.State.LastSeq >= uint64(n) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	tok := token(b, "*")
	testutil.Eventually(b, time.Minute, 20*time.Millisecond, func() (bool, string) {
		code, raw := getJSON(b, base, "/readyz", tok, nil)
		return code == 200, raw
	})
	return g, base, took
}

// BenchmarkApplier measures notifications applied per second: a backlog in USHER_NCS folded by the applier into
// rosters and published, each event with its PubAck, to USHER_PRESENCE. Run:
//
//	go test -run '^$' -bench BenchmarkApplier -benchtime 50000x ./gateway/
func BenchmarkApplier(b *testing.B) {
	_, _, took := seeded(b, b.N, 100)
	b.ReportMetric(float64(b.N)/took.Seconds(), "notifications/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkSnapshot100k measures GET /v1/channels/{channel}/presence of a channel with 100,000 audience members
// through the real HTTP server. Run:
//
//	go test -run '^$' -bench BenchmarkSnapshot100k -benchtime 20x ./gateway/
func BenchmarkSnapshot100k(b *testing.B) {
	const members = 100_000
	_, base, _ := seeded(b, members, 1)
	tok := token(b, "chan-0")
	client := &http.Client{Timeout: 30 * time.Second}
	var size int
	b.ResetTimer()
	for b.Loop() {
		size = getSize(b, client, base+"/v1/channels/chan-0/presence", tok)
	}
	if size < members*20 {
		b.Fatalf("snapshot is %d bytes: not %d members", size, members)
	}
	b.ReportMetric(float64(size), "bytes/snapshot")
}

// BenchmarkChannels100k measures GET /v1/channels with 100,000 active channels (one member each) through the real
// HTTP server: the whole list, by name, and the busiest 200 (sort=size&limit=200, what the console polls). Run:
//
//	go test -run '^$' -bench BenchmarkChannels100k -benchtime 20x ./gateway/
func BenchmarkChannels100k(b *testing.B) {
	const channels = 100_000
	_, base, _ := seeded(b, channels, channels)
	tok := token(b, "*")
	client := &http.Client{Timeout: 30 * time.Second}
	for _, bc := range []struct {
		name, query string
		least       int // bytes the answer has at least
	}{{"all", "", channels * 20}, {"busiest200", "?sort=size&limit=200", 200 * 20}} {
		b.Run(bc.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				size = getSize(b, client, base+"/v1/channels"+bc.query, tok)
			}
			if size < bc.least {
				b.Fatalf("the list is %d bytes, less than %d", size, bc.least)
			}
			b.ReportMetric(float64(size), "bytes/list")
		})
	}
}

// getSize GETs url with tok, fails unless the answer is 200, and returns the size of its body.
func getSize(b *testing.B, client *http.Client, url, tok string) int {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return int(n)
}
