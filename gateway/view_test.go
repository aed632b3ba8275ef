package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/presence"
)

// TestViewWaitEndsAtCheckpoint: after a clean shutdown the checkpoint holds every presence event, and no event may
// follow it for a long time. A wait for the last event that began before the view loaded that checkpoint must end
// when it is loaded, not at the next event (it used to: start-up then waited its whole 30 s catch-up bound).
func TestViewWaitEndsAtCheckpoint(t *testing.T) {
	t.Parallel()
	js, ctx := testJetStream(t, 20*time.Second)
	buckets, err := bus.EnsureStreams(ctx, js, bus.StreamConfig{Dedup: time.Minute, PresenceMaxAge: time.Hour, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The stream holds the checkpoint's 7 events (a view goes on from the stream when it is behind the checkpoint).
	for i := range 7 {
		if _, err := js.Publish(ctx, "usher.presence.other", fmt.Appendf(nil, `{"seq":%d,"channel":"other"}`, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	rules := presence.Rules{}
	b, _ := json.Marshal(checkpoint{NCSSeq: 9, PresenceSeq: 7, State: presence.NewState(rules)})
	if _, err := buckets.Checkpoints.PutBytes(ctx, checkpointObject, b); err != nil {
		t.Fatal(err)
	}

	lv := newLiveView(js, buckets.Checkpoints, rules, slog.New(slog.DiscardHandler), func(presence.Event, []byte) {})
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		waited <- lv.waitSeq(wctx, 7)
	}()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); lv.run(rctx) }()
	defer func() { stop(); <-done }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("wait for the checkpoint's last event: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitSeq did not return")
	}
}
