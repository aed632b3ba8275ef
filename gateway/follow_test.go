package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/subject"
)

// deadIterator is an ordered consumer's iterator that has quietly stopped: every wait times out.
type deadIterator struct{}

func (deadIterator) Next(...jetstream.NextOpt) (jetstream.Msg, error) {
	time.Sleep(20 * time.Millisecond)
	return nil, context.DeadlineExceeded
}
func (deadIterator) Stop()  {}
func (deadIterator) Drain() {}

// TestFollowerReplacesAStalledConsumer stalls a follower's consumer while the stream moves on: the follower must
// notice within two stallChecks (plus a poll), make a new consumer after the last message it delivered, and deliver
// every message once and in order. A filtered follower whose subjects have nothing new is left alone.
func TestFollowerReplacesAStalledConsumer(t *testing.T) {
	t.Parallel()
	js, ctx := testJetStream(t, 30*time.Second)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>", "b.>"}}); err != nil {
		t.Fatal(err)
	}
	pub := func(subj string, n int) {
		for i := range n {
			if _, err := js.Publish(ctx, subj, fmt.Appendf(nil, "%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub("a.x", 5)
	log := slog.New(slog.DiscardHandler)
	all, err := follow(ctx, js, "S", "", 1, 16, log)
	if err != nil {
		t.Fatal(err)
	}
	defer all.close()
	onlyA, err := follow(ctx, js, "S", "a.>", 1, 16, log)
	if err != nil {
		t.Fatal(err)
	}
	defer onlyA.close()

	// read takes n messages from f, checking that they come in stream order from want.
	read := func(f *follower, want uint64, n int) {
		t.Helper()
		for got := 0; got < n; {
			_, seq, err := f.nextMsg(ctx, 200*time.Millisecond)
			if err == errIdle {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if seq != want {
				t.Fatalf("got seq %d, want %d", seq, want)
			}
			want++
			got++
		}
	}
	read(all, 1, 3)
	read(onlyA, 1, 5)

	// Both consumers die quietly; the stream moves on, but only on b.> subjects for onlyA.
	all.it.Stop()
	all.it = deadIterator{}
	onlyA.it.Stop()
	onlyA.it = deadIterator{}
	pub("b.y", 2)
	start := time.Now()
	read(all, 4, 4) // 4, 5 (a.x) and 6, 7 (b.y)
	if all.remakes != 1 {
		t.Fatalf("%d consumers made again, want 1", all.remakes)
	}
	t.Logf("stalled consumer replaced, and the stream read on, after %s", time.Since(start).Round(10*time.Millisecond))
	for time.Since(start) < stallCheck+time.Second {
		if _, _, err := onlyA.nextMsg(ctx, 200*time.Millisecond); err != errIdle {
			t.Fatalf("filtered follower: %v, want idle", err)
		}
	}
	if onlyA.remakes != 0 {
		t.Fatal("the filtered follower was made again although its subjects had nothing new")
	}
	pub("a.z", 1)
	read(onlyA, 8, 1)
	if onlyA.remakes != 1 {
		t.Fatalf("filtered follower made again %d times, want 1", onlyA.remakes)
	}
}

// A follower that is closed, or replaces its consumer, deletes the one it had: restarts of the applier or the view
// leave nothing behind on the server.
func TestFollowerLeavesNoConsumer(t *testing.T) {
	js, ctx := testJetStream(t, 30*time.Second)
	if _, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: 10 * time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		s, err := js.Stream(ctx, bus.NCSStream)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Consumers
	}
	for range 5 {
		f, err := follow(ctx, js, bus.NCSStream, subject.NCSPrefix+">", 1, 512, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := f.make(ctx); err != nil { // as a remake does
				t.Fatal(err)
			}
		}
		if n := consumers(); n != 1 {
			t.Fatalf("%d consumers while one follower runs, want 1", n)
		}
		f.close()
	}
	if n := consumers(); n != 0 {
		t.Fatalf("%d consumers left on %s after the followers closed", n, bus.NCSStream)
	}
}

// A stream deleted and made again while its follower is between two reads: the ordered consumer's own recovery (on
// "consumer deleted", or missing heartbeats) makes a consumer again on the stream of that name, now the new one,
// from the old stream's next seq. The follower must answer errStreamRemade, never pass the new stream's messages
// after that seq for the old one's next.
func TestFollowerNoticesAStreamMadeAnewBetweenReads(t *testing.T) {
	t.Parallel()
	js, ctx := testJetStream(t, 30*time.Second)
	cfg := jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>"}}
	pub := func(n int) {
		for i := range n {
			if _, err := js.Publish(ctx, "a.x", fmt.Appendf(nil, "%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	pub(3)
	f, err := follow(ctx, js, "S", "", 1, 16, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	for want := uint64(1); want <= 3; {
		_, seq, err := f.nextMsg(ctx, 200*time.Millisecond)
		if err == errIdle {
			continue
		}
		if err != nil || seq != want {
			t.Fatalf("seq %d, %v; want %d", seq, err, want)
		}
		want++
	}

	if err := js.DeleteStream(ctx, "S"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // the made-anew stream comes a moment later, as with "nats stream rm; nats stream add"
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	pub(6)
	time.Sleep(100 * time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, seq, err := f.nextMsg(ctx, 200*time.Millisecond)
		switch {
		case errors.Is(err, errStreamRemade):
			return
		case err == nil:
			t.Fatalf("message %d of the stream made anew passed for the old stream's next", seq)
		case err != errIdle:
			t.Fatal(err)
		}
	}
	t.Fatal("the stream made anew was not noticed within 10 s")
}
