package gateway_test

import (
	"bytes"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
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
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			ncs.Sign(req.Header, testSecret, body)
			resp, err := client.Do(req)
			if err != nil {
				failed.Add(1)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
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
