package hub

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/presence"
)

// BenchmarkPublishFanout measures what one event's fan-out costs the goroutine that calls Publish (the gateway's
// view, which every channel's events pass through): queueing the event to each of 2,000 watchers of one channel,
// over real loopback WebSockets, with their writers running. Every watcher reads each event before the next is
// published, as at a steady rate; only Publish is timed. Run:
//
//	go test -run '^$' -bench BenchmarkPublishFanout -benchtime 200x ./hub/
func BenchmarkPublishFanout(b *testing.B) {
	const watchers = 2000
	src := &viewSource{v: presence.NewView()}
	h, dial := serveHub(b, Config{}, src)
	var (
		got atomic.Int64 // presence frames read, by every watcher
		wg  sync.WaitGroup
	)
	clients := make([]*testClient, watchers)
	for i := range clients {
		c := dial(nil)
		c.subscribeForSnapshot(0, 0)
		clients[i] = c
		wg.Go(func() {
			for {
				if _, _, err := c.c.Read(context.Background()); err != nil {
					return // closed at the end
				}
				got.Add(1)
			}
		})
	}
	b.ResetTimer()
	for i := range b.N {
		e := join(uint64(i+1), uint32(i+1))
		src.apply(e)
		b.StartTimer()
		h.Publish(e, nil)
		b.StopTimer()
		want, deadline := int64(i+1)*watchers, time.Now().Add(10*time.Second)
		for got.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("event %d: %d of %d frames read after 10 s", i+1, got.Load(), want)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*watchers), "ns/watcher")
	for _, c := range clients {
		_ = c.c.CloseNow()
	}
	wg.Wait()
}
