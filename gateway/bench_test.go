package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/test/testutil"
)

// BenchmarkIngest measures signed notifications per second through the real HTTP server into JetStream (file
// storage, de-duplication on), each answered only after its PubAck. Run:
//
//	go test -run '^$' -bench BenchmarkIngest -benchtime 20000x ./gateway/
func BenchmarkIngest(b *testing.B) {
	cfg := testConfig(b, b.TempDir())
	cfg.PublishTimeout = 10 * time.Second
	_, base := startGateway(b, cfg)
	url := base + "/v1/ncs"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	var next, failed atomic.Int64
	b.SetParallelism(16) // many webhooks in flight, as when Agora calls for many channels at once
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			body := audienceJoin(fmt.Sprintf("bench-%d-%d", b.N, i), fmt.Sprintf("chan-%d", i%100), uint32(i), i)
			if !sendSigned(client, url, body) {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d notifications not acknowledged", f, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
}

// BenchmarkRetained measures the memory an instance keeps for each notification it has taken, once caches are warm:
// how much the heap, after a garbage collection, grows per notification. Joins and leaves alternate, so rosters do
// not grow; what stays is what the server remembers for a while: each noticeId twice (the de-duplication windows of
// USHER_NCS and USHER_PRESENCE, USHER_DEDUP_WINDOW) and each leave's tombstone (USHER_TOMBSTONE_RETENTION). Notice
// ids have Agora's 36-character form. Run:
//
//	go test -run '^$' -bench BenchmarkRetained -benchtime 20000x ./gateway/
func BenchmarkRetained(b *testing.B) {
	const channels = 100
	cfg := testConfig(b, b.TempDir())
	cfg.PublishTimeout = 10 * time.Second
	g, base := startGateway(b, cfg)
	url := base + "/v1/ncs"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	// send posts notifications [from, from+n): for each uid its join, then its leave, so both make an event.
	send := func(from, n int) {
		var next, failed atomic.Int64
		next.Store(int64(from))
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for {
					i := next.Add(2) - 2
					if i >= int64(from+n) {
						return
					}
					uid := uint32(i/2 + 1)
					for k, typ := range []ncs.EventType{ncs.AudienceJoin, ncs.AudienceLeave} {
						body := userEvent(fmt.Sprintf("4eb720f0-8da7-11e9-a43e-%012x", i+int64(k)), typ,
							fmt.Sprint("chan-", uid%channels), uid, int64(1+k), time.Now().Unix(), nil)
						if !sendSigned(client, url, body) {
							failed.Add(1)
						}
					}
				}
			})
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d of %d notifications not acknowledged", f, n)
		}
		// Every notification makes one presence event: wait until the applier has published them all.
		testutil.Eventually(b, 60*time.Second, 50*time.Millisecond, func() (bool, string) {
			s, err := g.JetStream().Stream(context.Background(), bus.PresenceStream)
			if err != nil {
				return false, err.Error()
			}
			got := s.CachedInfo().State.Msgs
			return got >= uint64(from+n), fmt.Sprintf("%d presence events, want %d", got, from+n)
		})
	}

	// The file store keeps the block it writes in memory until 10 s after its last use (a buffer of up to 16 MB a
	// stream): measure once those are released, so that only what lasts is counted.
	settled := func() uint64 {
		time.Sleep(12 * time.Second)
		return testutil.HeapInUse()
	}
	n := max(b.N, 2)
	n += n % 2 // whole join-leave pairs
	send(0, n) // warm-up: maps at their working size
	before := settled()
	b.ResetTimer()
	send(n, n)
	b.StopTimer()
	after := settled()
	b.ReportMetric((float64(after)-float64(before))/float64(n), "B/notification")
}

// sendSigned posts a signed notification to url and reports whether it was acknowledged (200).
func sendSigned(client *http.Client, url string, body []byte) bool {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	ncs.Sign(req.Header, testSecret, body)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
