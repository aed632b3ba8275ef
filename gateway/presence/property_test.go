package presence_test

import (
	"cmp"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/gateway/presence"
)

const propertySeed = 20250601

// checkShuffled delivers history h in order and shuffled with duplicates and resends under new noticeIds, then
// checks everything the issue asks of the presence stream. With strict, the shuffled delivery's members must equal
// the in-order ones field for field; without, a member whose entry was made by another event than in order (a role
// change that overtook its join) is compared on uid, role and account only, and counted in exempt.
func checkShuffled(p errorf, r *rand.Rand, h history, strict bool) (exempt, members int) {
	a := deliver(h.notices, presence.Rules{}, r0)
	b := deliver(shuffled(r, h.notices, 0.2, 0.2, r0), presence.Rules{}, r0)
	checkStream(p, a)
	checkStream(p, b)

	av, bv := a.state.View(), b.state.View()
	truth := func(name string) presence.Snapshot { return truthSnapshot(name, h.truth[name]) }
	// In order, the rosters are the history's, field for field.
	compareRosters(p, "in order", h.names, av.Snapshot, truth, nil, nil, true)
	// Shuffled, with duplicates, they are the same.
	truthEntries := map[string]map[uint32]int64{}
	for name, members := range h.truth {
		truthEntries[name] = map[uint32]int64{}
		for uid, m := range members {
			truthEntries[name][uid] = m.joinSeq
		}
	}
	exempt = compareRosters(p, "shuffled", h.names, bv.Snapshot, av.Snapshot, entrySeqs(b.stream), truthEntries, strict)
	for _, m := range h.truth {
		members += len(m)
	}

	// The stream, folded by a reader, gives the applier's rosters. A channel with no member is forgotten by both, and
	// then has the seq of its view's floor, which depends on when other channels emptied: it must only be at or past
	// the channel's last event.
	for _, d := range []*delivery{a, b} {
		sv, fv := d.state.View(), fold(d.stream)
		last := map[string]uint64{}
		for _, e := range d.stream {
			last[e.Channel] = e.Seq
		}
		for _, name := range h.names {
			got, want := fv.Snapshot(name), sv.Snapshot(name)
			if want.Counts == (presence.Counts{}) && got.Counts == (presence.Counts{}) {
				if got.Seq < last[name] || want.Seq < last[name] {
					p.Errorf("channel %q, empty: seq %d folded, %d from State.View, before its last event %d", name, got.Seq, want.Seq, last[name])
				}
				continue
			}
			if !reflect.DeepEqual(got, want) {
				p.Errorf("channel %q: the folded stream gives\n %s\nState.View gives\n %s", name, js(got), js(want))
			}
		}
		if got, want := fv.Channels(), sv.Channels(); !reflect.DeepEqual(got, want) {
			p.Errorf("channels: the folded stream gives\n %s\nState.View gives\n %s", js(got), js(want))
		}
	}
	return exempt, members
}

// compareRosters compares got's snapshots with want's for every channel named. Strict compares whole snapshots
// (but seq); otherwise membership (uid, role, account) must be equal and whole members are compared only where
// gotEntry and wantEntry agree on the event that made the member's entry; the others are counted.
func compareRosters(p errorf, what string, names []string, got, want func(string) presence.Snapshot,
	gotEntry, wantEntry map[string]map[uint32]int64, strict bool) (exempt int) {
	for _, name := range names {
		g, w := withoutSeq(got(name)), withoutSeq(want(name))
		if strict {
			if !reflect.DeepEqual(g, w) {
				p.Errorf("%s: channel %q:\n got  %s\n want %s", what, name, js(g), js(w))
			}
			continue
		}
		if gr, wr := rosterOf(g), rosterOf(w); !reflect.DeepEqual(gr, wr) {
			p.Errorf("%s: channel %q roster (uid, role, account):\n got  %v\n want %v", what, name, gr, wr)
			continue
		}
		wm := membersOf(w)
		for uid, m := range membersOf(g) {
			if gotEntry[name][uid] != wantEntry[name][uid] {
				exempt++
				continue
			}
			if !reflect.DeepEqual(m, wm[uid]) {
				p.Errorf("%s: channel %q member %d:\n got  %s\n want %s", what, name, uid, js(m), js(wm[uid]))
			}
		}
	}
	return exempt
}

func membersOf(s presence.Snapshot) map[uint32]presence.Member {
	out := map[uint32]presence.Member{}
	for _, l := range [][]presence.Member{s.Hosts, s.Audience, s.Users} {
		for _, m := range l {
			out[m.UID] = m
		}
	}
	return out
}

// runProperty runs check on iterations random histories and reports the first failing one in full.
func runProperty(t *testing.T, cfg histConfig, iterations int, strict bool) {
	t.Helper()
	failed, exempt, members := 0, 0, 0
	var first problems
	firstAt := -1
	for i := range iterations {
		r := rand.New(rand.NewPCG(propertySeed, uint64(i)))
		h := genHistory(r, cfg)
		var p problems
		e, m := checkShuffled(&p, r, h, strict)
		exempt, members = exempt+e, members+m
		if len(p) > 0 {
			failed++
			if firstAt < 0 {
				first, firstAt = p, i
			}
		}
	}
	if failed > 0 {
		if len(first) > 10 {
			first = append(first[:10], "...")
		}
		t.Errorf("%d of %d histories fail; the first, iteration %d (rand.NewPCG(%d, %d)):\n%s", failed, iterations,
			firstAt, propertySeed, firstAt, strings.Join(first, "\n"))
	}
	t.Logf("%d histories, %d members at the end; %d compared on uid, role and account only (their entry was made by another event than in order)",
		iterations, members, exempt)
}

func propertyIterations() int {
	if testing.Short() {
		return 60
	}
	return 400
}

// The acceptance property: a random valid history, delivered shuffled with duplicates and resends under new
// noticeIds, gives the rosters of the in-order delivery, and a stream without duplicates or stale effects that a
// reader folds into the same rosters.
func TestPropertyShuffledDelivery(t *testing.T) {
	t.Parallel()
	runProperty(t, histConfig{channels: 3, users: 12, lives: 3, steps: 40}, propertyIterations(), false)
}

// Fewer users and more lives: more rejoins and more destroys to overtake.
func TestPropertyShuffledDeliveryBusyUsers(t *testing.T) {
	t.Parallel()
	runProperty(t, histConfig{channels: 2, users: 4, lives: 5, steps: 20}, propertyIterations(), false)
}

// Channels created again in the second they were destroyed, as Agora's second-grained ts allows.
func TestPropertyShuffledDeliverySameSecondLives(t *testing.T) {
	t.Parallel()
	runProperty(t, histConfig{channels: 3, users: 8, lives: 5, steps: 20, sameSecond: true}, propertyIterations(), false)
}

// simRun drives a simulator with every fault for n deliveries, then Flush, and applies each delivery as the applier
// would: decoded from its body, received at its notifyMs.
func simRun(t testing.TB, seed uint64, n int) (*sim.Generator, []sim.Delivery) {
	t.Helper()
	gen, err := sim.New(sim.Config{Channels: 6, Seed: seed,
		Faults: &sim.Faults{Duplicate: 0.05, Resend: 0.05, ResendNewID: 0.05, Reorder: 0.05}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var ds []sim.Delivery
	for len(ds) < n {
		now = now.Add(150 * time.Millisecond)
		if d, ok := gen.Next(now); ok {
			ds = append(ds, d)
		}
	}
	return gen, append(ds, gen.Flush(now)...)
}

func simNotices(t testing.TB, ds []sim.Delivery) []presence.Notice {
	t.Helper()
	out := make([]presence.Notice, 0, len(ds))
	for _, d := range ds {
		dec, err := ncs.Decode(d.Body)
		if err != nil {
			t.Fatalf("decode delivery %d (%v): %v", d.Seq, d.Kind, err)
		}
		out = append(out, noticeOf(dec))
	}
	return out
}

// simKey is a member as the simulator's Truth describes it.
type simKey struct {
	UID        uint32
	Role       presence.Role
	Account    string
	Platform   int // -1: none
	ClientType int // 0: none, as the simulator says it
}

func simKeysOfTruth(ms []sim.Member) []simKey {
	out := []simKey{}
	for _, m := range ms {
		role := map[sim.Role]presence.Role{sim.RoleHost: presence.Host, sim.RoleAudience: presence.Audience,
			sim.RoleUser: presence.User}[m.Role]
		out = append(out, simKey{m.UID, role, m.Account, int(m.Platform), m.ClientType})
	}
	return out
}

func simKeysOf(s presence.Snapshot) []simKey {
	out := []simKey{}
	for role, l := range map[presence.Role][]presence.Member{presence.Host: s.Hosts, presence.Audience: s.Audience, presence.User: s.Users} {
		for _, m := range l {
			k := simKey{UID: m.UID, Role: role, Account: m.Account, Platform: -1}
			if m.Platform != nil {
				k.Platform = *m.Platform
			}
			if m.ClientType != nil {
				k.ClientType = *m.ClientType
			}
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b simKey) int { return cmp.Compare(a.UID, b.UID) })
	return out
}

// checkSimulator applies a simulator's deliveries (every fault) and compares with its ground truth: the originals
// applied in generation order give Truth exactly; all deliveries, as they came, give the same members (uid, role,
// account), with platform and clientType too where the member's entry was made by the same event.
func checkSimulator(t *testing.T, seed uint64, n int) {
	gen, ds := simRun(t, seed, n)
	truth := gen.Truth()
	names := gen.Channels()

	var originals []sim.Delivery
	for _, d := range ds {
		if d.Kind == sim.Original || d.Kind == sim.Delayed {
			originals = append(originals, d)
		}
	}
	slices.SortFunc(originals, func(a, b sim.Delivery) int { return cmp.Compare(a.Seq, b.Seq) })
	inOrder := deliver(simNotices(t, originals), presence.Rules{}, -1)
	got := deliver(simNotices(t, ds), presence.Rules{}, -1)
	checkStream(t, got)
	checkStream(t, inOrder)

	iv, gv := inOrder.state.View(), got.state.View()
	exempt := 0
	for _, name := range names {
		want := simKeysOfTruth(truth[name])
		if g := simKeysOf(iv.Snapshot(name)); !reflect.DeepEqual(g, want) {
			t.Errorf("in order, channel %q:\n got  %v\n want %v", name, g, want)
		}
		g := simKeysOf(gv.Snapshot(name))
		gk, wk := make([]rosterKey, len(g)), make([]rosterKey, len(want))
		for i, k := range g {
			gk[i] = rosterKey{k.UID, k.Role, k.Account}
		}
		for i, k := range want {
			wk[i] = rosterKey{k.UID, k.Role, k.Account}
		}
		if !reflect.DeepEqual(gk, wk) {
			t.Errorf("as delivered, channel %q (uid, role, account):\n got  %v\n want %v", name, gk, wk)
			continue
		}
		ge, ie := entrySeqs(got.stream)[name], entrySeqs(inOrder.stream)[name]
		for i, k := range g {
			if ge[k.UID] != ie[k.UID] {
				exempt++
				continue
			}
			if k != want[i] {
				t.Errorf("as delivered, channel %q member %d:\n got  %v\n want %v", name, k.UID, k, want[i])
			}
		}
	}
	for _, name := range names {
		if g, w := fold(got.stream).Snapshot(name), gv.Snapshot(name); !reflect.DeepEqual(g, w) {
			t.Errorf("channel %q: the folded stream gives\n %s\nState.View gives\n %s", name, js(g), js(w))
		}
	}
	kinds := map[sim.Kind]int{}
	for _, d := range ds {
		kinds[d.Kind]++
	}
	t.Logf("seed %d: %d deliveries %v, %d events; %d members compared on uid, role and account only",
		seed, len(ds), kinds, len(got.stream), exempt)
}

// The simulator's deliveries, with duplicates, resends (same and new noticeId) and reordering, give its ground
// truth.
func TestMatchesSimulatorTruth(t *testing.T) {
	t.Parallel()
	n := 4000
	if testing.Short() {
		n = 1000
	}
	for seed := range uint64(4) {
		t.Run(string(rune('A'+seed)), func(t *testing.T) {
			t.Parallel()
			checkSimulator(t, seed+1, n)
		})
	}
}
