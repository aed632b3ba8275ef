package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/bus"
)

// Once the per-address upgrade limiter holds as many addresses as it may, a new address still gets a bucket of
// its own: a crowd of addresses making unauthenticated upgrades (here through a trusted proxy, as from many IPv6
// /64s) must not leave every other client sharing one bucket.
func TestUpgradeLimiterFullTableLocksNoOneOut(t *testing.T) {
	t.Parallel()
	g, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", NCSSecrets: []string{"s"}, JWTSecret: "jwt-secret-0123456789abcdef",
		DataDir: t.TempDir(), NATSListen: bus.ListenOff, Logger: slog.New(slog.DiscardHandler),
		TrustedProxies: []string{"127.0.0.1"}, UpgradeRate: 0.01, UpgradeBurst: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	const table = 200
	g.upgrades.mu.Lock()
	g.upgrades.maxAddrs = table
	g.upgrades.mu.Unlock()
	url := "http://" + g.Addr().String() + "/v1/ws"
	cl := &http.Client{Timeout: 5 * time.Second}
	upgrade := func(from string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range table {
		if code := upgrade(fmt.Sprintf("2001:db8:0:%x::1", i)); code != http.StatusUnauthorized {
			t.Fatalf("address %d of the flood: %d, want 401 (no token)", i, code)
		}
	}
	for i := range 20 {
		if code := upgrade(fmt.Sprintf("198.51.100.%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("new client %d after the table filled: %d, want 401 (its own bucket, burst 2, not spent)", i, code)
		}
	}
	// Each address is still limited on its own.
	for i := range 2 {
		if code := upgrade("203.0.113.9"); code != http.StatusUnauthorized {
			t.Fatalf("upgrade %d of an address within its burst: %d, want 401", i+1, code)
		}
	}
	if code := upgrade("203.0.113.9"); code != http.StatusTooManyRequests {
		t.Fatalf("upgrade past an address's burst: %d, want 429", code)
	}
}

// /readyz needs no token: a flood of it asks JetStream at most once a second, not once a call.
func TestReadyzFloodAsksJetStreamOnceASecond(t *testing.T) {
	t.Parallel()
	g, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", NCSSecrets: []string{"s"}, JWTSecret: "jwt-secret-0123456789abcdef",
		DataDir: t.TempDir(), NATSListen: bus.ListenOff, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	url := "http://" + g.Addr().String() + "/readyz"
	cl := &http.Client{Timeout: 5 * time.Second}
	start, before := time.Now(), g.ready.asks.Load()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				resp, err := cl.Get(url)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("/readyz: %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	asked, took := g.ready.asks.Load()-before, time.Since(start)
	if most := int64(took/readyCheckEvery) + 1; asked > most {
		t.Fatalf("400 calls in %s asked JetStream %d times, want at most %d", took.Round(time.Millisecond), asked, most)
	}
}
