package sim

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
)

// clock is a test clock that moves by step at every reading.
type clock struct {
	t    time.Time
	step time.Duration
}

func newClock(step time.Duration) *clock {
	return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), step: step}
}

func (c *clock) now() time.Time {
	c.t = c.t.Add(c.step)
	return c.t
}

func newGen(t testing.TB, cfg Config) *Generator {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g
}

// collect takes n deliveries from g, failing the test if g has none to give.
func collect(t testing.TB, g *Generator, c *clock, n int) []Delivery {
	t.Helper()
	out := make([]Delivery, 0, n)
	for len(out) < n {
		d, ok := g.Next(c.now())
		if !ok {
			continue // every channel cooling down; the clock moves on
		}
		out = append(out, d)
	}
	return out
}

// firsts returns the first deliveries of the originals, in generation order, failing the test unless every
// original from 1 up is there exactly once.
func firsts(t testing.TB, ds []Delivery) []Delivery {
	t.Helper()
	var out []Delivery
	for _, d := range ds {
		if d.Kind == Original || d.Kind == Delayed {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	for i, d := range out {
		if d.Seq != uint64(i+1) {
			t.Fatalf("first deliveries: position %d has Seq %d; every original must be delivered exactly once", i, d.Seq)
		}
	}
	return out
}

// refModel replays original events in generation order and checks that the history is one Agora could send.
type refModel struct {
	t        testing.TB
	channels map[string]*refChannel
	reasons  map[int]int
	types    map[ncs.EventType]int
}

type refChannel struct {
	alive, destroyed bool
	destroyedTs      int64
	comm, live       bool // which profile's events the channel has had
	mustJoin         bool // after a create, until its first join
	mustDestroy      bool // after the last leave, until the destroy
	lastLeaver       uint32
	members          map[uint32]Member
	seq              map[uint32]int64 // latest clientSeq of every uid ever seen
	// moving holds the old device's platform of a member who joined again from a new device, until the old
	// device's leave with reason 5.
	moving map[uint32]ncs.Platform
}

func newRefModel(t testing.TB) *refModel {
	return &refModel{t: t, channels: map[string]*refChannel{}, reasons: map[int]int{}, types: map[ncs.EventType]int{}}
}

func (m *refModel) apply(typ ncs.EventType, ev *ncs.ChannelEvent) {
	t := m.t
	t.Helper()
	m.types[typ]++
	ch := m.channels[ev.ChannelName]
	if ch == nil {
		ch = &refChannel{members: map[uint32]Member{}, seq: map[uint32]int64{}, moving: map[uint32]ncs.Platform{}}
		m.channels[ev.ChannelName] = ch
	}
	where := func() string { return typ.String() + " in " + ev.ChannelName }
	if ch.mustJoin && !typ.IsJoin() {
		t.Errorf("%s: a create must be followed by a join", where())
	}
	if ch.mustDestroy && typ != ncs.ChannelDestroy {
		t.Errorf("%s: the last leave must be followed by a destroy", where())
	}
	ch.mustJoin, ch.mustDestroy = false, false
	if typ.IsUserEvent() {
		if last, ok := ch.seq[ev.UID]; ok && ev.ClientSeq <= last {
			t.Errorf("%s: uid %d clientSeq %d after %d", where(), ev.UID, ev.ClientSeq, last)
		}
		ch.seq[ev.UID] = ev.ClientSeq
		if ev.Account == "" {
			t.Errorf("%s: no account", where())
		}
	}
	if typ == ncs.CommunicationJoin || typ == ncs.CommunicationLeave {
		ch.comm = true
	} else if typ.IsUserEvent() {
		ch.live = true
	}
	if ch.comm && ch.live {
		t.Errorf("%s: a channel has both communication and live-broadcast events", where())
	}
	member, present := ch.members[ev.UID]
	if _, moving := ch.moving[ev.UID]; moving && !(typ.IsLeave() && ev.Reason != nil && *ev.Reason == ncs.ReasonNewDevice) {
		t.Errorf("%s: uid %d moved to a new device, and its old device's leave did not come next", where(), ev.UID)
	}
	switch {
	case typ == ncs.ChannelCreate:
		if ch.alive {
			t.Errorf("%s: channel already exists", where())
		}
		if ch.destroyed && ev.Ts < ch.destroyedTs+1 {
			t.Errorf("%s: ts %d, destroyed at %d", where(), ev.Ts, ch.destroyedTs)
		}
		ch.alive, ch.mustJoin = true, true
	case typ == ncs.ChannelDestroy:
		if !ch.alive || len(ch.members) > 0 {
			t.Errorf("%s: channel alive %v with %d members", where(), ch.alive, len(ch.members))
		}
		if ev.LastUID != nil && *ev.LastUID != ch.lastLeaver {
			t.Errorf("%s: lastUid %d, the last to leave was %d", where(), *ev.LastUID, ch.lastLeaver)
		}
		ch.alive, ch.destroyed, ch.destroyedTs = false, true, ev.Ts
	case typ.IsJoin() && present:
		// A move to a new device: the old device's leave, with reason 5, must come next.
		want := map[Role]ncs.EventType{RoleHost: ncs.BroadcasterJoin, RoleAudience: ncs.AudienceJoin, RoleUser: ncs.CommunicationJoin}[member.Role]
		if typ != want {
			t.Errorf("%s: uid %d, present as %v, joins again with %d", where(), ev.UID, member.Role, typ)
		}
		ch.moving[ev.UID] = member.Platform
		member.Platform, member.ClientType = *ev.Platform, 0
		if ev.ClientType != nil {
			member.ClientType = *ev.ClientType
		}
		ch.members[ev.UID] = member
	case typ.IsLeave() && ev.Reason != nil && *ev.Reason == ncs.ReasonNewDevice:
		old, moving := ch.moving[ev.UID]
		if !present || !moving || old != *ev.Platform {
			t.Errorf("%s: uid %d leaves with reason 5 from platform %d, present %v, moving from %d (%v)", where(), ev.UID,
				*ev.Platform, present, old, moving)
		}
		delete(ch.moving, ev.UID)
		m.reasons[*ev.Reason]++
		member.ClientSeq = ev.ClientSeq
		ch.members[ev.UID] = member
	case typ.IsJoin():
		if !ch.alive || present {
			t.Errorf("%s: uid %d joins, channel alive %v, already present %v", where(), ev.UID, ch.alive, present)
		}
		if ch.destroyed && ev.Ts < ch.destroyedTs+1 {
			t.Errorf("%s: ts %d, destroyed at %d", where(), ev.Ts, ch.destroyedTs)
		}
		member = Member{UID: ev.UID, Account: ev.Account, Platform: *ev.Platform, ClientSeq: ev.ClientSeq}
		if ev.ClientType != nil {
			member.ClientType = *ev.ClientType
		}
		member.Role = map[ncs.EventType]Role{ncs.BroadcasterJoin: RoleHost, ncs.AudienceJoin: RoleAudience,
			ncs.CommunicationJoin: RoleUser}[typ]
		ch.members[ev.UID] = member
	case typ.IsLeave():
		want := map[ncs.EventType]Role{ncs.BroadcasterLeave: RoleHost, ncs.AudienceLeave: RoleAudience,
			ncs.CommunicationLeave: RoleUser}[typ]
		if !present || member.Role != want {
			t.Errorf("%s: uid %d leaves, present %v as %v", where(), ev.UID, present, member.Role)
		}
		if ev.Reason == nil || ev.Duration == nil || *ev.Duration < 0 {
			t.Errorf("%s: reason %v, duration %v", where(), ev.Reason, ev.Duration)
		} else {
			m.reasons[*ev.Reason]++
			if !slices.Contains(ncs.LeaveReasons, *ev.Reason) {
				t.Errorf("%s: undocumented reason %d", where(), *ev.Reason)
			}
		}
		if member.Platform != *ev.Platform {
			t.Errorf("%s: platform %d, joined with %d", where(), *ev.Platform, member.Platform)
		}
		delete(ch.members, ev.UID)
		ch.lastLeaver, ch.mustDestroy = ev.UID, len(ch.members) == 0
	case typ == ncs.RoleToBroadcaster, typ == ncs.RoleToAudience:
		from, to := RoleAudience, RoleHost
		if typ == ncs.RoleToAudience {
			from, to = RoleHost, RoleAudience
		}
		if !present || member.Role != from {
			t.Errorf("%s: uid %d, present %v as %v", where(), ev.UID, present, member.Role)
		}
		member.Role = to
		ch.members[ev.UID] = member
	default:
		t.Errorf("unexpected event type %d", typ)
	}
	if present && typ.IsUserEvent() && !typ.IsLeave() {
		member.ClientSeq = ev.ClientSeq
		ch.members[ev.UID] = member
	}
}

func (m *refModel) truth() map[string][]Member {
	out := map[string][]Member{}
	for name, ch := range m.channels {
		for uid := range ch.moving {
			m.t.Errorf("channel %q: uid %d moved to a new device, and its old device's leave never came", name, uid)
		}
		if len(ch.members) == 0 {
			continue
		}
		ms := slices.Collect(maps.Values(ch.members))
		sort.Slice(ms, func(i, j int) bool { return ms[i].UID < ms[j].UID })
		out[name] = ms
	}
	return out
}

// checkWire checks a delivery's body against the seeds: it decodes with ncs.Decode, the envelope is complete, and
// the payload has exactly the fields Agora sends with its event type.
func checkWire(t testing.TB, d Delivery) {
	t.Helper()
	dec, err := ncs.Decode(d.Body)
	if err != nil {
		t.Fatalf("Decode(%s): %v", d.Body, err)
	}
	if dec.ProductID != ncs.ProductRTC || dec.Sid == "" || dec.NotifyMs == 0 || dec.NoticeID != d.Notification.NoticeID {
		t.Errorf("envelope %s", d.Body)
	}
	if !bytes.Contains(d.Body, []byte(`"channelName":"`+dec.Event.ChannelName+`"`)) {
		t.Errorf("channel name escaped in %s", d.Body)
	}
	if !reflect.DeepEqual(*dec.Event, d.Event) {
		t.Errorf("body payload %+v, Delivery.Event %+v", *dec.Event, d.Event)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(dec.Payload, &fields); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(maps.Keys(fields))
	var want []string
	typ := dec.EventType
	switch {
	case typ == ncs.ChannelCreate:
		want = []string{"channelName", "ts"}
	case typ == ncs.ChannelDestroy:
		want = []string{"channelName", "ts"}
		if _, ok := fields["lastUid"]; ok {
			want = append(want, "lastUid")
		}
	case typ.IsRoleChange():
		want = []string{"account", "channelName", "clientSeq", "ts", "uid"}
	case typ.IsJoin(), typ.IsLeave():
		want = []string{"account", "channelName", "clientSeq", "platform", "ts", "uid"}
		if typ.IsLeave() {
			want = append(want, "duration", "reason")
		}
		switch p := *dec.Event.Platform; p {
		case ncs.PlatformLinux:
			want = append(want, "clientType")
			if ct := *dec.Event.ClientType; ct != 3 && ct != 8 && ct != 10 {
				t.Errorf("clientType %d", ct)
			}
		case ncs.PlatformOther, ncs.PlatformAndroid, ncs.PlatformIOS, ncs.PlatformWindows, ncs.PlatformWeb, ncs.PlatformMacOS:
		default:
			t.Errorf("platform %d", p)
		}
	default:
		t.Fatalf("event type %d", typ)
	}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("%v payload fields %v, want %v: %s", typ, keys, want, dec.Payload)
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	g := newGen(t, Config{Seed: 1, Faults: &Faults{}})
	c := newClock(150 * time.Millisecond)
	ds := collect(t, g, c, 20000)
	ds = append(ds, g.Flush(c.now())...)

	m := newRefModel(t)
	ids := map[string]bool{}
	for _, d := range ds {
		if d.Kind != Original {
			t.Fatalf("delivery kind %v with no faults", d.Kind)
		}
		checkWire(t, d)
		if ids[d.Notification.NoticeID] {
			t.Fatalf("noticeId %s repeated", d.Notification.NoticeID)
		}
		ids[d.Notification.NoticeID] = true
		m.apply(d.Notification.EventType, &d.Event)
	}
	for _, r := range ncs.LeaveReasons {
		if m.reasons[r] == 0 {
			t.Errorf("leave reason %d never appeared; reasons %v", r, m.reasons)
		}
	}
	if m.reasons[ncs.ReasonQuit] < m.reasons[ncs.ReasonTimeout] || m.reasons[ncs.ReasonTimeout] < 3*m.reasons[ncs.ReasonAbnormalUser] {
		t.Errorf("reasons not weighted towards 1, then 2: %v", m.reasons)
	}
	for _, typ := range []ncs.EventType{ncs.ChannelCreate, ncs.ChannelDestroy, ncs.BroadcasterJoin, ncs.BroadcasterLeave,
		ncs.AudienceJoin, ncs.AudienceLeave, ncs.CommunicationJoin, ncs.CommunicationLeave, ncs.RoleToBroadcaster, ncs.RoleToAudience} {
		if m.types[typ] == 0 {
			t.Errorf("event type %v never appeared; types %v", typ, m.types)
		}
	}
	if m.types[ncs.ChannelDestroy] < 20 {
		t.Errorf("only %d destroys in a long run", m.types[ncs.ChannelDestroy])
	}
	if got, want := g.Truth(), m.truth(); !reflect.DeepEqual(got, want) {
		t.Errorf("Truth() = %v, replay gives %v", got, want)
	}
}

func TestHistoryHighRate(t *testing.T) {
	t.Parallel()
	// Small channels on a clock of 1 ms a reading: destroys are frequent and most readings fall in the second of a
	// destroy, so the cooling-down rule is exercised hard.
	g := newGen(t, Config{Channels: 3, Hosts: 1, Audience: 1, Seed: 2, Faults: &Faults{}})
	c := newClock(time.Millisecond)
	m := newRefModel(t)
	for _, d := range collect(t, g, c, 5000) {
		m.apply(d.Notification.EventType, &d.Event)
	}
	if m.types[ncs.ChannelDestroy] < 10 {
		t.Errorf("only %d destroys", m.types[ncs.ChannelDestroy])
	}
}

func TestCoolingDown(t *testing.T) {
	g := newGen(t, Config{Channels: 1, Hosts: 1, Audience: 1, Seed: 3, Faults: &Faults{}})
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var destroy *ncs.ChannelEvent
	for range 10000 {
		d, ok := g.Next(now) // the clock stands still
		if !ok {
			break
		}
		if d.Notification.EventType == ncs.ChannelDestroy {
			destroy = &d.Event
		}
	}
	if destroy == nil {
		t.Fatal("the only channel was never destroyed")
	}
	if _, ok := g.Next(now.Add(999 * time.Millisecond)); ok {
		t.Fatal("Next delivered in the second of the destroy, with the only channel destroyed")
	}
	d, ok := g.Next(now.Add(time.Second))
	if !ok || d.Notification.EventType != ncs.ChannelCreate || d.Event.Ts != destroy.Ts+1 {
		t.Fatalf("a second after the destroy: ok %v, %v at ts %d; want a create at %d", ok, d.Notification.EventType, d.Event.Ts, destroy.Ts+1)
	}
}

func TestTruthMatchesReplay(t *testing.T) {
	t.Parallel()
	g := newGen(t, Config{Channels: 8, Seed: 4, Faults: &Faults{Duplicate: 0.1, Resend: 0.1, ResendNewID: 0.1, Reorder: 0.2}})
	c := newClock(100 * time.Millisecond)
	m := newRefModel(t)
	var all []Delivery
	applied := 0
	for round := range 10 {
		all = append(all, collect(t, g, c, 2000)...)
		all = append(all, g.Flush(c.now())...)
		if g.Pending() != 0 {
			t.Fatalf("round %d: Pending() = %d after Flush", round, g.Pending())
		}
		// Replay the originals not yet replayed, in generation order.
		fs := firsts(t, all)
		for _, d := range fs[applied:] {
			m.apply(d.Notification.EventType, &d.Event)
		}
		applied = len(fs)
		if got, want := g.Truth(), m.truth(); !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: Truth() = %v, replay gives %v", round, got, want)
		}
	}
}
