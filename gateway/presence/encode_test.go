package presence_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
)

func marshal(t testing.TB, s *presence.State) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("marshal state: %v", err)
	}
	return b
}

func restore(t testing.TB, rules presence.Rules, b []byte) *presence.State {
	t.Helper()
	s := presence.NewState(rules)
	if err := json.Unmarshal(b, s); err != nil {
		t.Fatalf("unmarshal state: %v", err)
	}
	return s
}

// sameViews fails unless two views hold the same snapshots for every channel named, and the same channel list.
func sameViews(t testing.TB, what string, names []string, got, want *presence.View) {
	t.Helper()
	for _, name := range names {
		equal(t, what+": snapshot of "+name, got.Snapshot(name), want.Snapshot(name))
	}
	equal(t, what+": channels", got.Channels(), want.Channels())
}

// A state restored from its checkpoint decides as the original for the rest of a history, pruning included, and
// encodes to the same bytes; the encoding is deterministic.
func TestCheckpointRoundTrip(t *testing.T) {
	t.Parallel()
	// A short retention, so that pruning during the continuation drops some tombstones and keeps others.
	rules := presence.Rules{Retention: time.Second, ClockSkew: time.Minute}
	for i := range 60 {
		r := rand.New(rand.NewPCG(propertySeed+1, uint64(i)))
		h := genHistory(r, histConfig{channels: 3, users: 10, lives: 3, steps: 30})
		ns := shuffled(r, h.notices, 0.2, 0.2, r0)
		cut := r.IntN(len(ns) + 1)
		orig := deliver(ns[:cut], rules, r0)

		b := marshal(t, orig.state)
		if again := marshal(t, orig.state); !bytes.Equal(again, b) {
			t.Fatalf("iteration %d: two encodings differ:\n%s\n%s", i, b, again)
		}
		restored := &delivery{state: restore(t, rules, b), stream: slices.Clone(orig.stream)}
		if again := marshal(t, restored.state); !bytes.Equal(again, b) {
			t.Fatalf("iteration %d: the restored state encodes differently:\n%s\n%s", i, again, b)
		}
		sameViews(t, "restored", h.names, restored.state.View(), orig.state.View())

		rest := ns[cut:]
		half := len(rest) / 2
		startMs := r0 + int64(cut)*10
		pruneAt := startMs + int64(half)*10
		for _, d := range []*delivery{orig, restored} {
			d.continueWith(rest[:half], startMs)
			d.state.Prune(pruneAt)
			d.continueWith(rest[half:], pruneAt)
		}
		for j := range rest {
			k := cut + j
			if orig.outcomes[k] != restored.outcomes[j] || !reflect.DeepEqual(orig.events[k], restored.events[j]) {
				t.Fatalf("iteration %d, notice %d (%s, %d): original %v %s, restored %v %s", i, k, rest[j].NoticeID,
					rest[j].Type, orig.outcomes[k], jsEvents(orig.events[k]), restored.outcomes[j], jsEvents(restored.events[j]))
			}
		}
		sameViews(t, "after the continuation", h.names, restored.state.View(), orig.state.View())
		if a, b := marshal(t, orig.state), marshal(t, restored.state); !bytes.Equal(a, b) {
			t.Fatalf("iteration %d: after the continuation the encodings differ:\n%s\n%s", i, a, b)
		}
	}
}

// checkpointV1 is a checkpoint written by the first version of the format: the seeds' story, with a host recording
// on Linux (clientType 10), an audience member who left (a tombstone), a channel with only a create, a destroyed one.
// Every later version must read it; when the format changes, add a new file for TestCheckpointWrites and keep this
// one.
const checkpointV1 = "testdata/checkpoint-v1.json"

// checkpointV2 adds each member's lastTs (the ts of its newest event), which a destroy compares against.
const checkpointV2 = "testdata/checkpoint-v2.json"

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// The encoding is the documented one, byte for byte.
func TestCheckpointWrites(t *testing.T) {
	t.Parallel()
	s := presence.NewState(presence.Rules{})
	for _, n := range []presence.Notice{
		seed(t, ncs.ChannelCreate, "n1"),
		seed(t, ncs.BroadcasterJoin, "n2", withUID(7), withAccount("rec"), withPlatform(ncs.PlatformLinux, ptr(10))),
		seed(t, ncs.AudienceJoin, "n3"),
		seed(t, ncs.AudienceLeave, "n4"),
		seed(t, ncs.ChannelCreate, "n5", inChannel("show.2")),
		seed(t, ncs.ChannelDestroy, "n6", inChannel("[vip] 6")),
	} {
		if _, o := s.Apply(n); o != presence.Applied {
			t.Fatalf("%d %s: %v", n.Type, n.NoticeID, o)
		}
	}
	s.Stored(chanName, 4)
	s.Stored("show.2", 5)
	s.Stored("[vip] 6", 6)
	if got, want := marshal(t, s), readGolden(t, checkpointV2); !bytes.Equal(got, want) {
		t.Errorf("checkpoint:\n got  %s\n want %s", got, want)
	}
}

// A checkpoint of the first version restores its members, tombstones, creates and destroys.
func TestCheckpointReadsV1(t *testing.T) {
	t.Parallel()
	restored := restore(t, presence.Rules{}, readGolden(t, checkpointV1))
	v := restored.View()
	want := snapshot(chanName, ms(presence.Member{UID: 7, Account: "rec", Platform: ptr(6), ClientType: ptr(10), Since: tsJoin}), nil, nil)
	want.Seq = 4
	equal(t, "restored snapshot", v.Snapshot(chanName), want)
	equal(t, "restored channels", v.Channels(), []presence.Summary{{Channel: chanName, Seq: 4, Counts: presence.Counts{Hosts: 1}}})
	if _, o := restored.Apply(seed(t, ncs.AudienceJoin, "n7")); o != presence.Stale {
		t.Errorf("the join the tombstone covers: %v, want stale", o)
	}
	if _, o := restored.Apply(seed(t, ncs.AudienceJoin, "n8", inChannel("[vip] 6"))); o != presence.Stale {
		t.Errorf("a join older than the restored destroy: %v, want stale", o)
	}
	if _, o := restored.Apply(seed(t, ncs.ChannelCreate, "n9", inChannel("show.2"))); o != presence.Stale {
		t.Errorf("the restored create again: %v, want stale", o)
	}
	if _, o := restored.Apply(seed(t, ncs.BroadcasterJoin, "n10", withUID(7))); o != presence.Stale {
		t.Errorf("the restored member's join again: %v, want stale", o)
	}
	// Past the retention, twice the clock skew and the resend span from the tombstone's atMs, Prune drops it.
	restored.Prune(seedNotifyMs + (presence.DefaultRetention + 2*presence.DefaultClockSkew + presence.ResendSpan).Milliseconds() + 1)
	if _, o := restored.Apply(seed(t, ncs.AudienceJoin, "n11")); o != presence.Applied {
		t.Errorf("the join after the tombstone's retention: %v, want applied", o)
	}
}

func TestCheckpointBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, mention string
	}{
		{"not JSON", `not json`, ""},
		{"empty", ``, ""},
		{"an array", `[]`, ""},
		{"channels not a list", `{"channels":"show-1"}`, ""},
		{"a uid out of range", `{"channels":[{"name":"show-1","members":[{"uid":-1,"since":1,"role":"host","clientSeq":1}]}]}`, ""},
		{"an unknown role", `{"channels":[{"name":"show-1","members":[{"uid":1,"since":1,"role":"admin","clientSeq":1}]}]}`, `"admin"`},
		{"no role", `{"channels":[{"name":"show-1","members":[{"uid":1,"since":1,"clientSeq":1}]}]}`, `role ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := presence.NewState(presence.Rules{})
			err := s.UnmarshalJSON([]byte(tc.in))
			if err == nil {
				t.Fatalf("UnmarshalJSON(%q) = nil, want an error", tc.in)
			}
			if !strings.Contains(err.Error(), "decode presence state") || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("UnmarshalJSON(%q) = %q, want it to say decode presence state and %s", tc.in, err, tc.mention)
			}
		})
	}
}

// UnmarshalJSON keeps the state's rules, and gives a zero State the defaults.
func TestCheckpointKeepsRules(t *testing.T) {
	t.Parallel()
	src := presence.NewState(presence.Rules{})
	src.Apply(at(seed(t, ncs.AudienceLeave, "n1"), r0, r0))
	b := marshal(t, src)

	// A tombstone lasts the retention, twice the clock skew and the resend span: 122 s here.
	minute := restore(t, presence.Rules{Retention: time.Minute, ClockSkew: time.Second}, b)
	minute.Prune(r0 + 122_001)
	if _, o := minute.Apply(at(seed(t, ncs.AudienceJoin, "n2"), r0+122_001, r0+122_001)); o != presence.Applied {
		t.Errorf("with a minute's retention, the tombstone is pruned and the late join applied; got %v", o)
	}

	var zero presence.State
	if err := json.Unmarshal(b, &zero); err != nil {
		t.Fatal(err)
	}
	zero.Prune(r0 + 122_001) // the default retention, 10 minutes, keeps the tombstone
	if _, o := zero.Apply(at(seed(t, ncs.AudienceJoin, "n2"), r0+122_001, r0+122_001)); o != presence.Stale {
		t.Errorf("with the default retention the tombstone holds; got %v", o)
	}
	const window = int64(11 * 60_000)
	if _, o := zero.Apply(at(seed(t, ncs.BroadcasterJoin, "n3", withUID(9)), r0-window-1, r0)); o != presence.Replayed {
		t.Errorf("with the default rules the replay window is 11 minutes; got %v", o)
	}
}
