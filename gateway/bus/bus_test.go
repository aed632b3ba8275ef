package bus_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/test/testutil"
)

// TestEnsureStreams declares the streams, declares them again unchanged (left alone), then with other limits
// (updated in place), then with replicas a single server cannot keep (ErrReplicas, naming what the server said).
func TestEnsureStreams(t *testing.T) {
	t.Parallel()
	nc, js := testutil.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Stream create and update requests to the JetStream API, as this test's connection sees them: each is queued
	// on the channel before the answer to a later Flush is read.
	requests := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe("$JS.API.STREAM.*.>", requests)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	round := func(cfg bus.StreamConfig) (bus.Buckets, int, error) {
		t.Helper()
		b, err := bus.EnsureStreams(ctx, js, cfg)
		if ferr := nc.Flush(); ferr != nil {
			t.Fatal(ferr)
		}
		n := 0
		for len(requests) > 0 {
			m := <-requests
			if strings.HasPrefix(m.Subject, "$JS.API.STREAM.CREATE.") || strings.HasPrefix(m.Subject, "$JS.API.STREAM.UPDATE.") {
				n++
			}
		}
		return b, n, err
	}

	cfg := bus.StreamConfig{Dedup: 10 * time.Minute, MaxAge: time.Hour, PresenceMaxAge: time.Hour, LeaseTTL: 6 * time.Second}
	check := func(maxAge, ttl time.Duration) {
		t.Helper()
		for name, want := range map[string]time.Duration{bus.NCSStream: maxAge, "KV_" + bus.LeaseBucket: ttl} {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config.MaxAge; got != want {
				t.Fatalf("%s max age %s, want %s", name, got, want)
			}
		}
		for name, want := range map[string]time.Duration{bus.NCSStream: cfg.Dedup, bus.PresenceStream: bus.PresenceDedup} {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config.Duplicates; got != want {
				t.Fatalf("%s de-duplication window %s, want %s", name, got, want)
			}
		}
	}
	for i := range 2 {
		b, n, err := round(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if b.Leases == nil || b.Checkpoints == nil {
			t.Fatal("buckets missing")
		}
		check(time.Hour, 6*time.Second)
		if i == 0 && n < 4 || i == 1 && n != 0 {
			t.Fatalf("round %d: %d stream creates or updates", i+1, n)
		}
	}

	cfg.MaxAge, cfg.LeaseTTL = 2*time.Hour, 3*time.Second
	b, n, err := round(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check(2*time.Hour, 3*time.Second)
	if n < 2 {
		t.Fatalf("%d stream updates for two changed streams", n)
	}
	if _, err := b.Leases.Create(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("the lease bucket does not work after an update: %v", err)
	}

	cfg.Replicas = 3
	_, _, err = round(cfg)
	if !errors.Is(err, bus.ErrReplicas) || !strings.Contains(err.Error(), "non-clustered") {
		t.Fatalf("got %v, want ErrReplicas with the server's reason", err)
	}
}

// TestRedactURLs hides user, password and token in every URL of a list, with or without a scheme (the NATS client
// takes both), and leaves URLs without credentials as they are.
func TestRedactURLs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://n1:4222":                     "nats://n1:4222",
		"nats://usher:s3cret@n1:4222":        "nats://***@n1:4222",
		"tls://t0ken@n1:4222,nats://n2:4222": "tls://***@n1:4222,nats://n2:4222",
		"usher:s3cret@n1:4222":               "***@n1:4222",
		"n1:4222":                            "n1:4222",
		// The NATS client splits the list at every comma, a password's too: a piece without '@' before one whose
		// user info has no scheme may be the start of that user info, so it is hidden too (a host with it, at
		// worst).
		"nats://alice:pa,ssw0rd@n1:4222":          "nats://***,***@n1:4222",
		"alice:pa,ss,w0rd@n1:4222":                "***,***,***@n1:4222",
		"nats://u:p@n1,nats://alice:pa,ssw0rd@n2": "nats://***@n1,nats://***,***@n2",
		"nats://n1:4222, usher:p@ss:w0rd@n2:4222": "nats://***,***@n2:4222",
		"nats://n1:4222,nats://usher:s3cret@n2:1": "nats://n1:4222,nats://***@n2:1",
	} {
		if got := bus.RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStartEmbeddedFailsFast: when JetStream cannot start in the store directory (here its jetstream directory is
// a file), the server never accepts connections; StartEmbedded must say so at once, not after its ready timeout.
func TestStartEmbeddedFailsFast(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jetstream"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: dir, Listen: bus.ListenOff, ReadyTimeout: 20 * time.Second})
	if err == nil {
		s.Shutdown()
		s.WaitForShutdown()
		t.Fatal("started without JetStream")
	}
	if took := time.Since(start); took > 5*time.Second || !strings.Contains(err.Error(), "JetStream") {
		t.Fatalf("after %s: %v; want an error about JetStream at once", took.Round(time.Millisecond), err)
	}
}

// Limits an operator set on a stream by hand (here max_bytes and max_msgs) are kept when Usher updates the stream
// to other settings of its own; the settings Usher relies on are set.
func TestEnsureStreamsKeepsLimitsSetByHand(t *testing.T) {
	t.Parallel()
	_, js := testutil.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := bus.StreamConfig{Dedup: 10 * time.Minute, MaxAge: time.Hour, PresenceMaxAge: time.Hour, LeaseTTL: 6 * time.Second}
	if _, err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{bus.NCSStream, bus.PresenceStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		c.MaxBytes, c.MaxMsgs = 64<<20, 100_000
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	cfg.MaxAge, cfg.PresenceMaxAge = 2*time.Hour, 3*time.Hour
	if _, err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	for name, maxAge := range map[string]time.Duration{bus.NCSStream: 2 * time.Hour, bus.PresenceStream: 3 * time.Hour} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.MaxAge != maxAge || c.MaxBytes != 64<<20 || c.MaxMsgs != 100_000 {
			t.Errorf("%s: max age %s, max bytes %d, max msgs %d; want %s, and the limits set by hand", name, c.MaxAge, c.MaxBytes, c.MaxMsgs, maxAge)
		}
	}
}

// Port 0 in the listen address picks a free port, as it does for the OS (and for PORT); the NATS server alone
// would take 0 for its default, 4222.
func TestStartEmbeddedOnPortZero(t *testing.T) {
	t.Parallel()
	s, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok || addr.Port == 0 || addr.Port == 4222 {
		t.Fatalf("listening on %v, want a free port", s.Addr())
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	nc.Close()
}
