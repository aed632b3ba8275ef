package presence_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"testing"

	"github.com/usher-presence/usher/gateway/presence"
)

// viewJoin is a stored join of uid as role in channel ch.
func viewJoin(seq uint64, ch string, u uint32, role presence.Role, since int64) presence.Event {
	return presence.Event{Seq: seq, Channel: ch, Event: presence.Join, Role: role, UID: u, Account: "a", Platform: ptr(1),
		ClientSeq: int64(seq), Ts: since, NoticeID: "n", Source: "ncs"}
}

func viewMember(u uint32, since int64) presence.Member {
	return presence.Member{UID: u, Account: "a", Platform: ptr(1), Since: since}
}

func TestViewApplyIgnoresOldSeq(t *testing.T) {
	t.Parallel()
	v := presence.NewView()
	if v.Apply(viewJoin(0, "show-1", 1, presence.Host, 100)) {
		t.Error("an event at seq 0 was applied to a new channel")
	}
	if !v.Apply(viewJoin(5, "show-1", 1, presence.Host, 100)) {
		t.Fatal("join at seq 5 not applied")
	}
	leave := presence.Event{Seq: 5, Channel: "show-1", Event: presence.Leave, Role: presence.Host, UID: 1, NoticeID: "n", Source: "ncs"}
	if v.Apply(leave) {
		t.Error("a leave at the channel's seq was applied")
	}
	leave.Seq = 3
	if v.Apply(leave) {
		t.Error("a leave below the channel's seq was applied")
	}
	// Another channel's seq is its own.
	if !v.Apply(viewJoin(2, "show.2", 1, presence.Audience, 100)) {
		t.Error("a join at seq 2 of another channel was not applied")
	}
	want := snapshot("show-1", ms(viewMember(1, 100)), nil, nil)
	want.Seq = 5
	equal(t, "show-1", v.Snapshot("show-1"), want)
	if v.Seq("show-1") != 5 || v.Seq("show.2") != 2 || v.Seq("nowhere") != 0 {
		t.Errorf("Seq: show-1 %d, show.2 %d, nowhere %d; want 5, 2, 0", v.Seq("show-1"), v.Seq("show.2"), v.Seq("nowhere"))
	}
	leave.Seq = 6
	if !v.Apply(leave) {
		t.Error("a leave above the channel's seq was not applied")
	}
	want = snapshot("show-1", nil, nil, nil)
	want.Seq = 6
	equal(t, "show-1 after the leave", v.Snapshot("show-1"), want)
}

func TestViewFold(t *testing.T) {
	t.Parallel()
	const ch = "show-1"
	e := func(seq uint64, kind presence.Kind, role presence.Role, u uint32, account string, platform *int, since int64) presence.Event {
		return presence.Event{Seq: seq, Channel: ch, Event: kind, Role: role, UID: u, Account: account, Platform: platform,
			ClientSeq: int64(seq), Ts: since, NoticeID: "n", Source: "ncs"}
	}
	for _, tc := range []struct {
		name   string
		events []presence.Event
		want   presence.Snapshot
	}{
		{"members sorted by since, then uid",
			[]presence.Event{
				e(1, presence.Join, presence.Audience, 30, "a", ptr(1), 200),
				e(2, presence.Join, presence.Audience, 20, "a", ptr(1), 100),
				e(3, presence.Join, presence.Audience, 10, "a", ptr(1), 200),
				e(4, presence.Join, presence.Host, 40, "a", ptr(1), 50),
				e(5, presence.Join, presence.User, 50, "a", ptr(1), 50),
			},
			snapshot(ch, ms(viewMember(40, 50)), ms(viewMember(20, 100), viewMember(10, 200), viewMember(30, 200)),
				ms(viewMember(50, 50)))},
		{"a role change keeps since and platform and takes a new account",
			[]presence.Event{
				e(1, presence.Join, presence.Audience, 1, "a", ptr(1), 100),
				e(2, presence.RoleChange, presence.Host, 1, "b", nil, 300),
			},
			snapshot(ch, ms(presence.Member{UID: 1, Account: "b", Platform: ptr(1), Since: 100}), nil, nil)},
		{"a role change without account keeps the member's",
			[]presence.Event{
				e(1, presence.Join, presence.Host, 1, "a", ptr(1), 100),
				e(2, presence.RoleChange, presence.Audience, 1, "", nil, 300),
			},
			snapshot(ch, nil, ms(viewMember(1, 100)), nil)},
		{"a role change for a uid not there adds it",
			[]presence.Event{e(1, presence.RoleChange, presence.Host, 1, "a", nil, 300)},
			snapshot(ch, ms(presence.Member{UID: 1, Account: "a", Since: 300}), nil, nil)},
		{"a join of a member already there replaces its entry",
			[]presence.Event{
				e(1, presence.Join, presence.Host, 1, "a", ptr(1), 100),
				e(2, presence.Join, presence.Audience, 1, "a", ptr(2), 200),
			},
			snapshot(ch, nil, ms(presence.Member{UID: 1, Account: "a", Platform: ptr(2), Since: 200}), nil)},
		{"a leave of a uid not there changes nothing",
			[]presence.Event{
				e(1, presence.Join, presence.Host, 1, "a", ptr(1), 100),
				e(2, presence.Leave, presence.Audience, 2, "a", ptr(1), 200),
			},
			snapshot(ch, ms(viewMember(1, 100)), nil, nil)},
		{"create and destroy only move the seq",
			[]presence.Event{
				{Seq: 1, Channel: ch, Event: presence.ChannelCreate, Ts: 100, NoticeID: "n", Source: "ncs"},
				e(2, presence.Join, presence.Host, 1, "a", ptr(1), 100),
				{Seq: 3, Channel: ch, Event: presence.ChannelDestroy, Ts: 100, NoticeID: "n", Source: "ncs"},
			},
			snapshot(ch, ms(viewMember(1, 100)), nil, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := presence.NewView()
			for _, ev := range tc.events {
				if !v.Apply(ev) {
					t.Fatalf("not applied: %s", js(ev))
				}
			}
			tc.want.Seq = tc.events[len(tc.events)-1].Seq
			equal(t, "snapshot", v.Snapshot(ch), tc.want)
		})
	}
}

// Counts always match the lists, whatever the events.
func TestViewCountsMatchLists(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(propertySeed, 99))
	v := presence.NewView()
	names := []string{"show-1", "show.2"}
	roles := []presence.Role{presence.Host, presence.Audience, presence.User}
	kinds := []presence.Kind{presence.Join, presence.Join, presence.Leave, presence.RoleChange, presence.ChannelDestroy}
	for seq := uint64(1); seq <= 5000; seq++ {
		e := presence.Event{Seq: seq, Channel: names[r.IntN(2)], Event: kinds[r.IntN(len(kinds))],
			Role: roles[r.IntN(3)], UID: uint32(1 + r.IntN(20)), Ts: int64(seq), NoticeID: "n", Source: "ncs"}
		v.Apply(e)
		for _, name := range names {
			s := v.Snapshot(name)
			if got := (presence.Counts{Hosts: len(s.Hosts), Audience: len(s.Audience), Users: len(s.Users)}); got != s.Counts {
				t.Fatalf("after %s: counts %+v, lists %+v", js(e), s.Counts, got)
			}
		}
		for _, sum := range v.Channels() {
			if s := v.Snapshot(sum.Channel); sum.Counts != s.Counts || sum.Seq != s.Seq {
				t.Fatalf("after %s: summary %+v, snapshot counts %+v at %d", js(e), sum, s.Counts, s.Seq)
			}
		}
	}
}

func TestViewChannels(t *testing.T) {
	t.Parallel()
	v := presence.NewView()
	if got, _ := json.Marshal(v.Channels()); string(got) != "[]" {
		t.Errorf("no channels: %s, want []", got)
	}
	// Names use the punctuation Agora allows; they sort bytewise.
	v.Apply(viewJoin(1, "show-1", 1, presence.Host, 100))
	v.Apply(viewJoin(2, "[vip] 6", 1, presence.Audience, 100))
	v.Apply(viewJoin(3, "Show 3", 1, presence.User, 100))
	v.Apply(viewJoin(4, "empty", 1, presence.Host, 100))
	v.Apply(presence.Event{Seq: 5, Channel: "empty", Event: presence.Leave, Role: presence.Host, UID: 1, NoticeID: "n", Source: "ncs"})
	v.Apply(presence.Event{Seq: 6, Channel: "created", Event: presence.ChannelCreate, Ts: 1, NoticeID: "n", Source: "ncs"})
	v.Snapshot("asked-for") // asking does not create
	equal(t, "channels", v.Channels(), []presence.Summary{
		{Channel: "Show 3", Seq: 3, Counts: presence.Counts{Users: 1}},
		{Channel: "[vip] 6", Seq: 2, Counts: presence.Counts{Audience: 1}},
		{Channel: "show-1", Seq: 1, Counts: presence.Counts{Hosts: 1}},
	})
}

func TestViewUnknownChannel(t *testing.T) {
	t.Parallel()
	v := presence.NewView()
	s := v.Snapshot("nowhere")
	equal(t, "snapshot", s, snapshot("nowhere", nil, nil, nil))
	got, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"channel":"nowhere","seq":0,"hosts":[],"audience":[],"users":[],"counts":{"hosts":0,"audience":0,"users":0}}`
	if string(got) != want {
		t.Errorf("JSON:\n got  %s\n want %s", got, want)
	}
	// A channel that emptied has empty lists too, at its seq.
	v.Apply(viewJoin(1, "show-1", 1, presence.Host, 100))
	v.Apply(presence.Event{Seq: 2, Channel: "show-1", Event: presence.Leave, Role: presence.Host, UID: 1, NoticeID: "n", Source: "ncs"})
	got, _ = json.Marshal(v.Snapshot("show-1"))
	const emptied = `{"channel":"show-1","seq":2,"hosts":[],"audience":[],"users":[],"counts":{"hosts":0,"audience":0,"users":0}}`
	if string(got) != emptied {
		t.Errorf("JSON:\n got  %s\n want %s", got, emptied)
	}
}

// The JSON of events and snapshots is the contract's, the same on the stream, over REST and over WebSocket.
func TestJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"the issue's join",
			presence.Event{Seq: 42, Channel: "show-1", Event: presence.Join, Role: presence.Audience, UID: 12121212,
				Account: "test", Platform: ptr(1), ClientSeq: 1625051035346, Ts: 1560396843, NoticeID: "n1", Source: "ncs"},
			`{"seq":42,"channel":"show-1","event":"join","role":"audience","uid":12121212,"account":"test","platform":1,"clientSeq":1625051035346,"ts":1560396843,"noticeId":"n1","source":"ncs"}`},
		{"a leave with reason 0, platform 0 and clientType",
			presence.Event{Seq: 43, Channel: "show-1", Event: presence.Leave, Role: presence.Host, UID: 7,
				Platform: ptr(0), Client: ptr(10), ClientSeq: 5, Ts: 1560396943, Reason: ptr(0), Duration: ptr(int64(0)),
				NoticeID: "n2", Source: "ncs"},
			`{"seq":43,"channel":"show-1","event":"leave","role":"host","uid":7,"platform":0,"clientType":10,"clientSeq":5,"ts":1560396943,"reason":0,"duration":0,"noticeId":"n2","source":"ncs"}`},
		{"a channel.destroy",
			presence.Event{Seq: 44, Channel: "show-1", Event: presence.ChannelDestroy, Ts: 1560399999, NoticeID: "n3", Source: "ncs"},
			`{"seq":44,"channel":"show-1","event":"channel.destroy","ts":1560399999,"noticeId":"n3","source":"ncs"}`},
		{"a snapshot",
			presence.Snapshot{Channel: "show-1", Seq: 42,
				Hosts:    []presence.Member{{UID: 7, Platform: ptr(6), ClientType: ptr(3), Since: 1560396843}},
				Audience: []presence.Member{{UID: 12121212, Account: "test", Platform: ptr(1), Since: 1560396843}},
				Users:    []presence.Member{},
				Counts:   presence.Counts{Hosts: 1, Audience: 1}},
			`{"channel":"show-1","seq":42,"hosts":[{"uid":7,"platform":6,"clientType":3,"since":1560396843}],"audience":[{"uid":12121212,"account":"test","platform":1,"since":1560396843}],"users":[],"counts":{"hosts":1,"audience":1,"users":0}}`},
		{"a summary",
			presence.Summary{Channel: "show-1", Seq: 42, Counts: presence.Counts{Hosts: 1, Audience: 2}},
			`{"channel":"show-1","seq":42,"counts":{"hosts":1,"audience":2,"users":0}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("JSON:\n got  %s\n want %s", got, tc.want)
			}
		})
	}
	// An event read back from the stream is the event written.
	in := presence.Event{Seq: 43, Channel: "show-1", Event: presence.Leave, Role: presence.Host, UID: 7, Platform: ptr(0),
		Client: ptr(10), ClientSeq: 5, Ts: 1560396943, Reason: ptr(0), Duration: ptr(int64(600)), NoticeID: "n2", Source: "ncs"}
	b, _ := json.Marshal(in)
	var out presence.Event
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	equal(t, "event round trip", out, in)
}

// A roster that grows large and then empties, in random order, keeps exactly the members still in it, with their
// roles and counts (members are kept side by side; a leave moves the last one into the gap, and a roster that
// emptied is given a smaller slice).
func TestViewLargeRosterEmpties(t *testing.T) {
	r := rand.New(rand.NewPCG(propertySeed, 7))
	v := presence.NewView()
	seq := uint64(0)
	want := map[uint32]presence.Role{}
	apply := func(e presence.Event) {
		seq++
		e.Seq, e.Channel = seq, "big"
		v.Apply(e)
	}
	for uid := uint32(1); uid <= 1000; uid++ {
		role := []presence.Role{presence.Host, presence.Audience, presence.User}[uid%3]
		apply(presence.Event{Event: presence.Join, Role: role, UID: uid, Ts: int64(uid)})
		want[uid] = role
	}
	for _, i := range r.Perm(1000)[:990] {
		uid := uint32(i + 1)
		if i%7 == 0 { // some change role before they go
			apply(presence.Event{Event: presence.RoleChange, Role: presence.Audience, UID: uid})
		}
		apply(presence.Event{Event: presence.Leave, UID: uid})
		delete(want, uid)
	}
	for uid := range want {
		if uid%2 == 0 {
			apply(presence.Event{Event: presence.RoleChange, Role: presence.Host, UID: uid})
			want[uid] = presence.Host
		}
	}
	s := v.Snapshot("big")
	got := map[uint32]presence.Role{}
	for role, ms := range map[presence.Role][]presence.Member{presence.Host: s.Hosts, presence.Audience: s.Audience, presence.User: s.Users} {
		for _, m := range ms {
			got[m.UID] = role
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("roster %v, want %v", got, want)
	}
	if c := s.Counts; c.Hosts != len(s.Hosts) || c.Audience != len(s.Audience) || c.Users != len(s.Users) || c.Hosts+c.Audience+c.Users != 10 {
		t.Fatalf("counts %+v for %d/%d/%d members", c, len(s.Hosts), len(s.Audience), len(s.Users))
	}
}

// A channel whose last member leaves is forgotten, so that a view holds the live channels, not every channel it
// ever saw. Its seq is then the view's floor: at or past its last event, so that resuming from it misses nothing;
// an event at or below the floor of a channel it does not hold is one it applied, and is ignored; a later join
// brings the channel back.
func TestViewForgetsEmptyChannels(t *testing.T) {
	t.Parallel()
	v := presence.NewView()
	const n = 10_000
	seq := uint64(0)
	for i := range n {
		// A call's channel as NCS reports it: created, joined, left, destroyed.
		ch := "call-" + string(rune('a'+i%26)) + "-" + strconv.Itoa(i)
		for _, e := range []presence.Event{
			{Channel: ch, Event: presence.ChannelCreate, Ts: 100, NoticeID: "c", Source: "ncs"},
			viewJoin(0, ch, 1, presence.Audience, 100),
			{Channel: ch, Event: presence.Leave, Role: presence.Audience, UID: 1, NoticeID: "l", Source: "ncs"},
			{Channel: ch, Event: presence.ChannelDestroy, Ts: 101, NoticeID: "d", Source: "ncs"},
		} {
			seq++
			e.Seq = seq
			if !v.Apply(e) {
				t.Fatalf("%s of %s at seq %d not applied", e.Event, ch, seq)
			}
		}
	}
	if got := v.Len(); got != 0 {
		t.Fatalf("the view holds %d channels after every one emptied, want 0", got)
	}
	first := "call-a-0"
	if got := v.Seq(first); got != seq {
		t.Fatalf("Seq of a forgotten channel is %d, want the floor %d", got, seq)
	}
	if v.Apply(viewJoin(2, first, 1, presence.Audience, 100)) { // its own join again, redelivered
		t.Fatal("an event below the floor brought a forgotten channel back")
	}
	v.RaiseFloor(seq + 10) // as loading a checkpoint at seq+10 does
	if v.Apply(viewJoin(seq+5, first, 1, presence.Audience, 100)) {
		t.Fatal("an event below the floor brought a forgotten channel back")
	}
	if !v.Apply(viewJoin(seq+11, first, 2, presence.Audience, 200)) {
		t.Fatal("a new join of a forgotten channel not applied")
	}
	want := snapshot(first, nil, ms(viewMember(2, 200)), nil)
	want.Seq = seq + 11
	equal(t, first, v.Snapshot(first), want)
	if v.Len() != 1 {
		t.Fatalf("%d channels, want 1", v.Len())
	}
}

// CopyChannels with first above 0 gives the channels a full sort gives first, in either order (by size, busiest
// first, then by name; or by name), for every first, matching or not, over views with many ties of size; total is
// how many matched.
func TestCopyChannelsFirst(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	size := func(x presence.Summary) int { return x.Counts.Hosts + x.Counts.Audience + x.Counts.Users }
	orders := map[string]struct {
		order func(a, b presence.Summary) int
		less  func(a, b presence.Summary) bool
	}{
		"size": {presence.BySize, func(a, b presence.Summary) bool {
			return size(a) > size(b) || size(a) == size(b) && a.Channel < b.Channel
		}},
		"name": {presence.ByName, func(a, b presence.Summary) bool { return a.Channel < b.Channel }},
	}
	for round := range 100 {
		v := presence.NewView()
		seq := uint64(0)
		for range rng.IntN(60) {
			ch := fmt.Sprintf("Ch-%03d", rng.IntN(1000))
			for range 1 + rng.IntN(4) {
				seq++
				role := []presence.Role{presence.Host, presence.Audience, presence.User}[rng.IntN(3)]
				v.Apply(viewJoin(seq, ch, uint32(seq), role, 1))
			}
		}
		for _, match := range []string{"", "ch-0", "5"} {
			all, total := v.CopyChannels(match, 0, presence.ByName)
			if len(all) != total {
				t.Fatalf("%d channels copied, total %d", len(all), total)
			}
			for name, o := range orders {
				want := slices.Clone(all)
				sort.Slice(want, func(i, j int) bool { return o.less(want[i], want[j]) })
				for _, first := range []int{1, 2, len(all) / 3, len(all) - 1, len(all), len(all) + 5} {
					if first <= 0 {
						continue
					}
					got, n := v.CopyChannels(match, first, o.order)
					slices.SortFunc(got, o.order)
					w := want[:min(first, len(want))]
					if !reflect.DeepEqual(got, w) && !(len(got) == 0 && len(w) == 0) || n != total {
						t.Fatalf("round %d, %q by %s, first %d of %d: got %v (total %d), want %v (total %d)",
							round, match, name, first, len(all), got, n, w, total)
					}
				}
			}
		}
	}
}

func TestContainsFold(t *testing.T) {
	for _, tc := range []struct {
		s, sub string
		want   bool
	}{
		{"Show-1", "show", true}, {"show-1", "SHOW-1", true}, {"lobby-Show", "y-s", true}, {"abc", "", true},
		{"", "", true}, {"ab", "abc", false}, {"talk", "show", false}, {"a.b>", "A.B>", true}, {"[x]", "[X", true},
		{"Z@", "z`", false}, // '@' and '`' sit next to 'A' and 'a', and are not letters
	} {
		if got := presence.ContainsFold(tc.s, tc.sub); got != tc.want {
			t.Errorf("ContainsFold(%q, %q) = %v, want %v", tc.s, tc.sub, got, tc.want)
		}
	}
}
