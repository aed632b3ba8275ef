package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/gateway/presence"
)

// storedCheckpoint is the applier's checkpoint as README describes it.
type storedCheckpoint struct {
	NCSSeq      uint64          `json:"ncsSeq"`
	PresenceSeq uint64          `json:"presenceSeq"`
	State       json.RawMessage `json:"state"`
}

// TestCheckpointsWhileApplying: the applier saves checkpoints in the background while notifications keep coming.
// Every checkpoint taken during a burst holds exactly the rosters its presence events up to presenceSeq make, not
// a roster that moved on while it was being written.
func TestCheckpointsWhileApplying(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.CheckpointInterval = 100 * time.Millisecond
	g, base := startGateway(t, cfg)
	gen, err := sim.New(sim.Config{Channels: 6, Hosts: 2, Audience: 60, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	store, err := g.JetStream().ObjectStore(context.Background(), bus.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}

	// Collect every distinct checkpoint while the burst runs.
	ctx, stop := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		seen = map[uint64]storedCheckpoint{}
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			b, err := store.GetBytes(rctx, "applier")
			cancel()
			if errors.Is(err, jetstream.ErrObjectNotFound) || ctx.Err() != nil {
				continue
			}
			if err != nil { // a read that timed out on a loaded machine: try again at the next tick
				t.Logf("read checkpoint: %v", err)
				continue
			}
			var cp storedCheckpoint
			if err := json.Unmarshal(b, &cp); err != nil {
				t.Errorf("decode checkpoint: %v", err)
				return
			}
			mu.Lock()
			seen[cp.NCSSeq] = cp
			mu.Unlock()
		}
	})
	// In rounds, so that checkpoints fall both inside a round and in the pauses; more rounds on a loaded machine.
	distinct := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	for round := 0; round < 10 || distinct() < 5 && round < 40; round++ {
		deliver(t, gen, []string{base}, 400)
		time.Sleep(3 * cfg.CheckpointInterval / 2)
	}
	waitTruth(t, gen, []string{base})
	stop()
	wg.Wait()

	events := readPresence(t, g.JetStream())
	if len(seen) < 5 {
		t.Fatalf("saw %d distinct checkpoints during the burst; want several (interval %s)", len(seen), cfg.CheckpointInterval)
	}
	for _, cp := range seen {
		if cp.PresenceSeq > uint64(len(events)) {
			t.Fatalf("checkpoint at notification %d claims presence event %d; the stream holds %d", cp.NCSSeq, cp.PresenceSeq, len(events))
		}
		st := presence.NewState(presence.Rules{})
		if err := json.Unmarshal(cp.State, st); err != nil {
			t.Fatalf("checkpoint at notification %d: %v", cp.NCSSeq, err)
		}
		folded := presence.NewView()
		last := map[string]uint64{}
		for _, e := range events[:cp.PresenceSeq] {
			folded.Apply(e)
			last[e.Channel] = e.Seq
		}
		got := st.View()
		got.RaiseFloor(cp.PresenceSeq) // as a view loading the checkpoint does
		for _, ch := range gen.Channels() {
			// A channel with no member is forgotten by a view, and gets the view's floor as its seq: one at or past
			// its last event, which differs between views that forgot different channels.
			if g, f := got.Snapshot(ch), folded.Snapshot(ch); g.Counts == (presence.Counts{}) && f.Counts == (presence.Counts{}) {
				if g.Seq < last[ch] || f.Seq < last[ch] {
					t.Fatalf("checkpoint at notification %d: empty channel %q at seq %d (checkpoint) and %d (folded), before its last event %d",
						cp.NCSSeq, ch, g.Seq, f.Seq, last[ch])
				}
				continue
			}
			if a, b := js(got.Snapshot(ch)), js(folded.Snapshot(ch)); a != b {
				t.Fatalf("checkpoint at notification %d, presence event %d: channel %q is\n%s\nits events up to there make\n%s",
					cp.NCSSeq, cp.PresenceSeq, ch, a, b)
			}
		}
	}
	t.Logf("%d checkpoints checked against %d presence events", len(seen), len(events))

	m := scrape(t, base, "")
	if n := m["usher_applier_checkpoint_seconds_count"]; n < float64(len(seen)) {
		t.Errorf("usher_applier_checkpoint_seconds counted %v checkpoints; %d were seen", n, len(seen))
	}
	if m["usher_applier_checkpoint_bytes"] < 1000 || m["usher_applier_checkpoint_failures_total"] != 0 {
		t.Errorf("usher_applier_checkpoint_bytes %v, usher_applier_checkpoint_failures_total %v", m["usher_applier_checkpoint_bytes"], m["usher_applier_checkpoint_failures_total"])
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
