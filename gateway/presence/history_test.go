package presence_test

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
)

// A history is a random valid sequence of notices for a few channels, as Agora would send them, in order, with the
// rosters it leaves.
type history struct {
	notices []presence.Notice
	truth   map[string]map[uint32]truthMember // channel -> uid -> member, after every notice, in order
	names   []string
}

type truthMember struct {
	role presence.Role
	presence.Member
	// joinSeq is the clientSeq of the join that made the member's entry.
	joinSeq int64
}

type histConfig struct {
	channels int // the last one is a communication-profile channel
	users    int // uids that may join each channel
	lives    int // at most this many lives (create ... destroy) per channel
	steps    int // at most this many changes per life
	// sameSecond lets a channel be created again in the second it was destroyed, which Agora's second-grained ts
	// allows.
	sameSecond bool
}

var channelPatterns = []string{"show-%d", "talk #%d", "[vip] %d", "q&a: %d", "call.%d"}

// genHistory makes a random valid history: per channel, lives of a create, joins, leaves and role changes with ts
// never going back and clientSeq strictly increasing per user, then (except maybe for the last life) everyone's
// leave and a destroy; the next life's create is a second or more after the destroy (or the same second with
// sameSecond).
func genHistory(r *rand.Rand, cfg histConfig) history {
	h := history{truth: map[string]map[uint32]truthMember{}}
	var perChannel [][]presence.Notice
	ids := 0
	for c := range cfg.channels {
		name := fmt.Sprintf(channelPatterns[c%len(channelPatterns)], c+1)
		comm := c == cfg.channels-1 && cfg.channels > 1
		h.names = append(h.names, name)
		present := map[uint32]truthMember{}
		seqs := map[uint32]int64{}
		var out []presence.Notice
		now := int64(1_560_000_000 + r.IntN(1000))
		emit := func(typ ncs.EventType, ev ncs.ChannelEvent) {
			ids++
			ev.ChannelName = name
			out = append(out, presence.Notice{NoticeID: fmt.Sprintf("n%d", ids), Type: typ, Event: &ev})
		}
		nextSeq := func(u uint32) int64 {
			if seqs[u] == 0 {
				seqs[u] = 1_625_051_030_000 + r.Int64N(100_000)
			}
			seqs[u] += 1 + r.Int64N(2000)
			return seqs[u]
		}
		lives := 1 + r.IntN(cfg.lives)
		for life := range lives {
			if life > 0 && cfg.sameSecond && r.IntN(2) == 0 {
				// same second as the destroy
			} else {
				now += 1 + r.Int64N(3)
			}
			emit(ncs.ChannelCreate, ncs.ChannelEvent{Ts: now})
			steps := 1 + r.IntN(cfg.steps)
			for range steps {
				now += r.Int64N(2)
				var absent, members []uint32
				for i := range cfg.users {
					u := uint32(1000 + i)
					if i == 0 {
						u = seedUID
					}
					if _, ok := present[u]; ok {
						members = append(members, u)
					} else {
						absent = append(absent, u)
					}
				}
				slices.Sort(members)
				x := r.IntN(100)
				switch {
				case len(absent) > 0 && (len(members) == 0 || x < 45):
					u := absent[r.IntN(len(absent))]
					typ := []ncs.EventType{ncs.BroadcasterJoin, ncs.AudienceJoin}[r.IntN(2)]
					if comm {
						typ = []ncs.EventType{ncs.CommunicationJoin, ncs.BroadcasterJoin}[r.IntN(2)]
					}
					p, ct := randomDevice(r)
					ev := ncs.ChannelEvent{UID: u, Platform: &p, ClientType: ct, ClientSeq: nextSeq(u), Ts: now,
						Account: fmt.Sprintf("acct-%d", u)}
					emit(typ, ev)
					role := map[ncs.EventType]presence.Role{ncs.BroadcasterJoin: presence.Host,
						ncs.AudienceJoin: presence.Audience, ncs.CommunicationJoin: presence.User}[typ]
					present[u] = truthMember{role: role, joinSeq: ev.ClientSeq, Member: presence.Member{UID: u,
						Account: ev.Account, Platform: ptr(int(p)), ClientType: ct, Since: now}}
				case len(members) > 0 && (comm || x < 75):
					u := members[r.IntN(len(members))]
					emitLeave(r, emit, present[u], nextSeq(u), now)
					delete(present, u)
				case len(members) > 0:
					u := members[r.IntN(len(members))]
					m := present[u]
					typ, role := ncs.RoleToBroadcaster, presence.Host
					if m.role == presence.Host {
						typ, role = ncs.RoleToAudience, presence.Audience
					}
					emit(typ, ncs.ChannelEvent{UID: u, ClientSeq: nextSeq(u), Ts: now, Account: m.Account})
					m.role = role
					present[u] = m
				}
			}
			if life == lives-1 && r.IntN(3) > 0 {
				break // the last life is still going on
			}
			for _, u := range slices.Sorted(maps.Keys(present)) {
				now += r.Int64N(2)
				emitLeave(r, emit, present[u], nextSeq(u), now)
				delete(present, u)
			}
			now += r.Int64N(2)
			ev := ncs.ChannelEvent{Ts: now}
			if r.IntN(2) == 0 {
				ev.LastUID = ptr(uint32(1000))
			}
			emit(ncs.ChannelDestroy, ev)
		}
		h.truth[name] = present
		perChannel = append(perChannel, out)
	}
	// Interleave the channels, each in its own order.
	for {
		var open []int
		for i, l := range perChannel {
			if len(l) > 0 {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			break
		}
		i := open[r.IntN(len(open))]
		h.notices = append(h.notices, perChannel[i][0])
		perChannel[i] = perChannel[i][1:]
	}
	return h
}

func randomDevice(r *rand.Rand) (ncs.Platform, *int) {
	p := []ncs.Platform{0, 1, 1, 1, 2, 2, 5, 6, 7, 7, 8}[r.IntN(11)]
	if p == ncs.PlatformLinux {
		return p, ptr([]int{3, 8, 10}[r.IntN(3)])
	}
	return p, nil
}

// leaveReasons are the reasons of a leave that ends a member's stay: all but 5, a move to a new device, which
// TestDeviceMove and the simulator's histories (TestMatchesSimulatorTruth) cover.
var leaveReasons = slices.DeleteFunc(slices.Clone(ncs.LeaveReasons), func(r int) bool { return r == ncs.ReasonNewDevice })

func emitLeave(r *rand.Rand, emit func(ncs.EventType, ncs.ChannelEvent), m truthMember, seq, now int64) {
	typ := map[presence.Role]ncs.EventType{presence.Host: ncs.BroadcasterLeave, presence.Audience: ncs.AudienceLeave,
		presence.User: ncs.CommunicationLeave}[m.role]
	ev := ncs.ChannelEvent{UID: m.UID, ClientSeq: seq, Ts: now, Reason: ptr(leaveReasons[r.IntN(len(leaveReasons))]),
		Duration: ptr(now - m.Since), Account: m.Account}
	if m.Platform != nil {
		ev.Platform = ptr(ncs.Platform(*m.Platform))
	}
	ev.ClientType = m.ClientType
	if r.IntN(3) == 0 {
		bare(&ev)
	}
	emit(typ, ev)
}

// errorf is where checks report: a testing.TB, or problems.
type errorf interface {
	Errorf(format string, args ...any)
}

// problems collects what checks report, to show only the first failing iteration of a property in full.
type problems []string

func (p *problems) Errorf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// delivery is what an applier saw: every notice with its outcome and events, each event numbered by its stored
// seq as the applier would (one sequence over all channels, as a stream's).
type delivery struct {
	notices  []presence.Notice
	outcomes []presence.Outcome
	events   [][]presence.Event
	stream   []presence.Event // every event, in order, with Seq
	state    *presence.State
}

// deliver applies notices in order to a new State, received 10 ms apart from receivedMs on (notifyMs is kept when
// set, else the receive time); a negative receivedMs means each notice is received at its notifyMs.
func deliver(notices []presence.Notice, rules presence.Rules, receivedMs int64) *delivery {
	d := &delivery{state: presence.NewState(rules)}
	d.continueWith(notices, receivedMs)
	return d
}

func (d *delivery) continueWith(notices []presence.Notice, receivedMs int64) {
	for i, n := range notices {
		n.ReceivedMs = receivedMs + int64(i)*10
		if receivedMs < 0 {
			n.ReceivedMs = n.NotifyMs
		}
		if n.NotifyMs == 0 {
			n.NotifyMs = n.ReceivedMs
		}
		evs, o := d.state.Apply(n)
		d.notices = append(d.notices, n)
		d.outcomes = append(d.outcomes, o)
		d.events = append(d.events, evs)
		for _, e := range evs {
			e.Seq = uint64(len(d.stream) + 1)
			d.stream = append(d.stream, e)
			d.state.Stored(e.Channel, e.Seq)
		}
	}
}

// shuffled returns the notices in random order, with about dup of them delivered twice (the same notice again)
// and about resend of them again under a new noticeId, with a newer notifyMs.
func shuffled(r *rand.Rand, notices []presence.Notice, dup, resend float64, baseMs int64) []presence.Notice {
	out := slices.Clone(notices)
	for i, n := range notices {
		if r.Float64() < dup {
			out = append(out, n)
		}
		if r.Float64() < resend {
			n.NoticeID += "-resent"
			n.NotifyMs = baseMs + int64(i)
			out = append(out, n)
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// fold folds a stream into a new View.
func fold(stream []presence.Event) *presence.View {
	v := presence.NewView()
	for _, e := range stream {
		v.Apply(e)
	}
	return v
}

// checkStream checks a delivery's outcomes and its stream: events only for applied notices; at most one applied
// notice per user event (channel, uid, clientSeq) or channel event (channel, type, ts); no event repeats a user's
// clientSeq or goes back; every leave and role change is an effective change of the roster the stream has built.
func checkStream(t errorf, d *delivery) {
	type userKey struct {
		ch  string
		uid uint32
	}
	type noticeKey struct {
		ch  string
		typ ncs.EventType
		uid uint32
		seq int64
		ts  int64
	}
	applied := map[noticeKey]string{}
	for i, n := range d.notices {
		o := d.outcomes[i]
		if o != presence.Applied && len(d.events[i]) > 0 {
			t.Errorf("notice %s (%d) is %v but has events %s", n.NoticeID, n.Type, o, jsEvents(d.events[i]))
		}
		if o != presence.Applied || n.Event == nil {
			continue
		}
		k := noticeKey{ch: n.Event.ChannelName, uid: n.Event.UID, seq: n.Event.ClientSeq}
		if !n.Type.IsUserEvent() {
			k.typ, k.ts = n.Type, n.Event.Ts
		}
		if first, ok := applied[k]; ok {
			t.Errorf("notice %s (%d) applied again: %+v was applied as %s", n.NoticeID, n.Type, k, first)
		}
		applied[k] = n.NoticeID
	}
	last := map[userKey]int64{}
	roles := map[userKey]presence.Role{}
	for _, e := range d.stream {
		k := userKey{e.Channel, e.UID}
		switch e.Event {
		case presence.Join, presence.Leave, presence.RoleChange:
			if e.ClientSeq != 0 {
				if e.ClientSeq <= last[k] {
					t.Errorf("stale or repeated effect at seq %d: %s after clientSeq %d", e.Seq, js(e), last[k])
				}
				last[k] = e.ClientSeq
			} else if e.Event != presence.Leave {
				t.Errorf("event without clientSeq at seq %d: %s", e.Seq, js(e))
			}
		}
		role, present := roles[k]
		switch e.Event {
		case presence.Join:
			roles[k] = e.Role
		case presence.RoleChange:
			if present && role == e.Role {
				t.Errorf("role.change that changes nothing at seq %d: %s", e.Seq, js(e))
			}
			roles[k] = e.Role
		case presence.Leave:
			if !present || role != e.Role {
				t.Errorf("leave at seq %d of a member not there as %s (present %v as %q): %s", e.Seq, e.Role, present, role, js(e))
			}
			delete(roles, k)
		}
	}
}

// rosterKey is what must be the same whatever the delivery order: who is there, in which role, under which account.
type rosterKey struct {
	UID     uint32
	Role    presence.Role
	Account string
}

func rosterOf(s presence.Snapshot) []rosterKey {
	var out []rosterKey
	for role, l := range map[presence.Role][]presence.Member{presence.Host: s.Hosts, presence.Audience: s.Audience, presence.User: s.Users} {
		for _, m := range l {
			out = append(out, rosterKey{m.UID, role, m.Account})
		}
	}
	slices.SortFunc(out, func(a, b rosterKey) int { return cmp.Compare(a.UID, b.UID) })
	return out
}

// truthSnapshot is the snapshot (at seq 0) of a channel's truth.
func truthSnapshot(name string, members map[uint32]truthMember) presence.Snapshot {
	var hosts, audience, users []presence.Member
	for _, m := range members {
		switch m.role {
		case presence.Host:
			hosts = append(hosts, m.Member)
		case presence.Audience:
			audience = append(audience, m.Member)
		default:
			users = append(users, m.Member)
		}
	}
	for _, l := range [][]presence.Member{hosts, audience, users} {
		slices.SortFunc(l, func(a, b presence.Member) int {
			return cmp.Or(cmp.Compare(a.Since, b.Since), cmp.Compare(a.UID, b.UID))
		})
	}
	return snapshot(name, hosts, audience, users)
}

func withoutSeq(s presence.Snapshot) presence.Snapshot {
	s.Seq = 0
	return s
}

// entrySeqs returns, for each member the stream leaves in each channel, the clientSeq of the event that made its
// entry (its join, or the role change that added it).
func entrySeqs(stream []presence.Event) map[string]map[uint32]int64 {
	out := map[string]map[uint32]int64{}
	for _, e := range stream {
		m := out[e.Channel]
		if m == nil {
			m = map[uint32]int64{}
			out[e.Channel] = m
		}
		switch e.Event {
		case presence.Join:
			m[e.UID] = e.ClientSeq
		case presence.RoleChange:
			if _, ok := m[e.UID]; !ok {
				m[e.UID] = e.ClientSeq
			}
		case presence.Leave:
			delete(m, e.UID)
		}
	}
	return out
}
