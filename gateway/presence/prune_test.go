package presence_test

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/presence"
)

// pruneByScan is Prune's meaning, on the checkpoint encoding: drop every tombstone set before cutoff, then every
// channel record with no member, no tombstone and nothing applied since cutoff.
func pruneByScan(t *testing.T, state []byte, cutoff int64) []byte {
	t.Helper()
	var in struct {
		Channels []map[string]json.RawMessage `json:"channels"`
	}
	if err := json.Unmarshal(state, &in); err != nil {
		t.Fatal(err)
	}
	out := in.Channels[:0]
	for _, c := range in.Channels {
		var tombs []struct {
			UID       uint32 `json:"uid"`
			ClientSeq int64  `json:"clientSeq"`
			AtMs      int64  `json:"atMs"`
		}
		if raw, ok := c["tombs"]; ok {
			if err := json.Unmarshal(raw, &tombs); err != nil {
				t.Fatal(err)
			}
		}
		kept := tombs[:0]
		for _, tb := range tombs {
			if tb.AtMs >= cutoff {
				kept = append(kept, tb)
			}
		}
		delete(c, "tombs")
		if len(kept) > 0 {
			c["tombs"], _ = json.Marshal(kept)
		}
		var touched int64
		if raw, ok := c["touchedMs"]; ok {
			_ = json.Unmarshal(raw, &touched)
		}
		if _, members := c["members"]; !members && len(kept) == 0 && touched < cutoff {
			continue
		}
		out = append(out, c)
	}
	in.Channels = out
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Prune drops exactly the tombstones set before the retention window (plus twice the skew and the resend span) and
// the channel records left empty, whatever the order tombstones were set in, replaced or removed, and also in a
// state restored from a checkpoint.
func TestPruneDropsExactlyWhatExpired(t *testing.T) {
	t.Parallel()
	rules := presence.Rules{Retention: 200 * time.Millisecond, ClockSkew: time.Hour}
	keep := (rules.Retention + 2*rules.ClockSkew + presence.ResendSpan).Milliseconds() // how long tombstones and empty records last
	for i := range 60 {
		r := rand.New(rand.NewPCG(propertySeed+3, uint64(i)))
		h := genHistory(r, histConfig{channels: 3, users: 10, lives: 3, steps: 30})
		ns := shuffled(r, h.notices, 0.2, 0.2, r0)
		d := &delivery{state: presence.NewState(rules)}
		for start := 0; start < len(ns); {
			end := min(len(ns), start+1+r.IntN(20))
			// Receive times jump about, as notifications from several instances may: tombstones are not set in
			// the order they expire.
			d.continueWith(ns[start:end], r0+int64(r.IntN(600)))
			if r.IntN(4) == 0 { // now and then, go on from the state's checkpoint
				d.state = restore(t, rules, marshal(t, d.state))
			}
			now := r0 + keep - 300 + int64(r.IntN(900))
			want := pruneByScan(t, marshal(t, d.state), now-keep)
			d.state.Prune(now)
			got := marshal(t, d.state)
			var a, b any
			if json.Unmarshal(got, &a) != nil || json.Unmarshal(want, &b) != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("iteration %d: Prune(%d) left\n%s\nwant\n%s", i, now, got, want)
			}
			start = end
		}
	}
}
