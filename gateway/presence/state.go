package presence

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
)

// Defaults of Rules' zero values.
const (
	DefaultRetention = 10 * time.Minute
	DefaultClockSkew = time.Minute
)

// Rules are the tunables of State. Zero values mean the defaults.
type Rules struct {
	// Retention is how long a notification may be late (the replay guard's window, with ClockSkew) and about how
	// long a leave's tombstone (and a destroyed channel's record) is kept, so that a late, older join cannot bring
	// the member back: tombstones are kept Retention plus twice ClockSkew plus ResendSpan, to outlast the guard.
	// Agora advises at least a minute.
	Retention time.Duration
	// ClockSkew is allowed between Agora's clock (notifyMs) and Usher's (the time a notification was received) in
	// the replay guard.
	ClockSkew time.Duration
}

// keep is how long tombstones and the records of empty channels are kept (see Prune).
func (r Rules) keep() time.Duration { return r.Retention + 2*r.ClockSkew + ResendSpan }

// WithDefaults is r with the defaults in place of its zero values: the rules a State made with r applies.
func (r Rules) WithDefaults() Rules {
	if r.Retention <= 0 {
		r.Retention = DefaultRetention
	}
	if r.ClockSkew <= 0 {
		r.ClockSkew = DefaultClockSkew
	}
	return r
}

// Notice is a stored notification as the applier sees it.
type Notice struct {
	NoticeID string
	Type     ncs.EventType
	// Event is the parsed payload; nil for a notification that is not an RTC channel event.
	Event *ncs.ChannelEvent
	// NotifyMs is Agora's send time (updated on each resend).
	NotifyMs int64
	// ReceivedMs is when Usher accepted the notification. It is the applier's clock: tombstones expire by it.
	ReceivedMs int64
}

// Outcome says what Apply did with a notice.
type Outcome int

// Outcomes.
const (
	// Applied: the notice changed the state (it may still have no visible Event, such as the leave of a member
	// whose join has not arrived yet, which only leaves a tombstone).
	Applied Outcome = iota
	// Stale: a duplicate, or older than what the state already holds for that user or channel.
	Stale
	// Replayed: notifyMs is older than the retention window allows; stored, but it never changes a roster.
	Replayed
	// Ignored: not an RTC channel event, one without the uid and clientSeq a user event needs, or a leave with
	// reason 5 (the user moved to a new device and is still in the channel).
	Ignored
)

func (o Outcome) String() string {
	if o < 0 || int(o) >= len(outcomeNames) {
		return "outcome(" + strconv.Itoa(int(o)) + ")"
	}
	return outcomeNames[o]
}

var outcomeNames = [...]string{"applied", "stale", "replayed", "ignored"}

// State is the applier's fold of notifications into rosters. It applies Agora's rules: per (channel, uid) an event
// counts only if its clientSeq is greater than the last one applied; a leave keeps a tombstone; 101/102 order by ts
// and a destroy ignores older joins.
//
// A State is not safe for concurrent use: one applier owns it.
type State struct {
	rules    Rules
	channels map[string]*channelState
	// gen counts the Freezes; a channel whose gen is older may be read by a held Frozen.
	gen  uint64
	held []*Frozen
	// expiries holds an entry for every tombstone set (and some since replaced), soonest first.
	expiries expiries
}

type channelState struct {
	name        string // the key it is stored under, shared by the expiry entries of its tombstones
	members     map[uint32]*entry
	tombs       map[uint32]tomb
	createdTs   int64 // ts of the newest 101 applied
	destroyedTs int64 // ts of the newest 102 applied
	touchedMs   int64 // ReceivedMs of the newest notice applied
	seq         uint64
	gen         uint64 // State.gen when this copy was made: snapshots taken before may read it
}

type entry struct {
	Member
	clientSeq int64
	lastTs    int64  // ts of the newest event applied to the entry
	gen       uint64 // the gen of the channel copy it was made for: an older one may be shared with a Frozen
	role      roleCode
}

// roleCode is a Role in one byte, as entries keep it (with gen, an entry still fits 80 bytes).
type roleCode uint8

const (
	codeHost roleCode = iota + 1
	codeAudience
	codeUser
)

func codeOf(r Role) roleCode {
	switch r {
	case Host:
		return codeHost
	case Audience:
		return codeAudience
	}
	return codeUser
}

// Role is the Role c stands for.
func (c roleCode) Role() Role {
	switch c {
	case codeHost:
		return Host
	case codeAudience:
		return Audience
	}
	return User
}

type tomb struct {
	clientSeq int64
	atMs      int64
}

// NewState returns an empty State.
func NewState(r Rules) *State {
	return &State{rules: r.WithDefaults(), channels: map[string]*channelState{}}
}

// Apply applies one notice and returns the effective changes, in order, without their Seq.
func (s *State) Apply(n Notice) ([]Event, Outcome) {
	ev := n.Event
	if ev == nil || !n.Type.IsChannelEvent() {
		return nil, Ignored
	}
	// Replay guard: the signature has no timestamp, so a captured request could be sent again much later.
	if n.NotifyMs > 0 && n.ReceivedMs-n.NotifyMs > (s.rules.Retention+s.rules.ClockSkew).Milliseconds() {
		return nil, Replayed
	}
	if n.Type.IsUserEvent() && (ev.UID == 0 || ev.ClientSeq <= 0) {
		return nil, Ignored
	}
	// A leave with reason 5 is the old device of a user who joined again from a new one: Agora forced the old
	// device out because of that join. The user is still in the channel, on the new device, whatever order the two
	// notifications arrive in; the leave's clientSeq is the old device's and says nothing about the new one's.
	if n.Type.IsLeave() && ev.Reason != nil && *ev.Reason == ncs.ReasonNewDevice {
		return nil, Ignored
	}
	ch := s.channels[ev.ChannelName]
	if ch == nil {
		ch = &channelState{name: ev.ChannelName, members: map[uint32]*entry{}, tombs: map[uint32]tomb{}, gen: s.gen}
		s.channels[ev.ChannelName] = ch
	} else {
		ch = s.writable(ev.ChannelName, ch)
	}
	var out []Event
	outcome := Applied
	switch {
	case n.Type == ncs.ChannelCreate:
		out, outcome = ch.create(n)
	case n.Type == ncs.ChannelDestroy:
		out, outcome = ch.destroy(n)
	default:
		out, outcome = ch.user(n)
	}
	if outcome == Applied {
		ch.touchedMs = max(ch.touchedMs, n.ReceivedMs)
		// The tombstones this notice set: the leaver's (even one never seen to join), or every member a destroy
		// removed.
		switch {
		case n.Type == ncs.ChannelDestroy:
			for _, e := range out {
				if e.Event == Leave {
					s.tombstoned(ch.name, e.UID, n.ReceivedMs)
				}
			}
		case n.Type.IsLeave():
			s.tombstoned(ch.name, ev.UID, n.ReceivedMs)
		}
	}
	for i := range out {
		out[i].NotifyMs = n.NotifyMs
	}
	return out, outcome
}

func (ch *channelState) create(n Notice) ([]Event, Outcome) {
	ts := n.Event.Ts
	if ts <= ch.createdTs || ts < ch.destroyedTs {
		return nil, Stale
	}
	ch.createdTs = ts
	return []Event{{Channel: n.Event.ChannelName, Event: ChannelCreate, Ts: ts, NoticeID: n.NoticeID, Source: SourceNCS}}, Applied
}

// destroy empties the channel of every member whose newest event is older than the destroy; members with a newer
// (or same-second) event belong to the channel's next life, delivered early, and stay. Each removed member gets a
// leave event, then the destroy.
func (ch *channelState) destroy(n Notice) ([]Event, Outcome) {
	ev := n.Event
	if ev.Ts <= ch.destroyedTs {
		return nil, Stale
	}
	ch.destroyedTs = ev.Ts
	var out []Event
	for _, uid := range sortedUIDs(ch.members) {
		m := ch.members[uid]
		if max(m.Since, m.lastTs) >= ev.Ts {
			continue
		}
		delete(ch.members, uid)
		ch.tombs[uid] = tomb{clientSeq: m.clientSeq, atMs: n.ReceivedMs}
		out = append(out, Event{
			Channel: ev.ChannelName, Event: Leave, Role: m.role.Role(), UID: uid, Account: m.Account,
			Platform: m.Platform, Client: m.ClientType, Ts: ev.Ts, NoticeID: n.NoticeID, Source: SourceNCS,
		})
	}
	// A destroy older than the newest create belongs to an earlier life of the channel: it removes that life's
	// stragglers but does not announce the channel's end. So does one of the same second: ts has a second's
	// precision, so which came first cannot be told, and the create is taken as the later (a channel ended and born
	// again in one second, its new members staying). Otherwise the stream would end with channel.destroy, for a
	// channel with members, when the 101 overtook the 102.
	if ev.Ts > ch.createdTs {
		out = append(out, Event{Channel: ev.ChannelName, Event: ChannelDestroy, Ts: ev.Ts, NoticeID: n.NoticeID, Source: SourceNCS})
	}
	return out, Applied
}

// user applies a join, leave or role change.
func (ch *channelState) user(n Notice) ([]Event, Outcome) {
	ev := n.Event
	if ev.Ts < ch.destroyedTs {
		return nil, Stale // from before the channel was destroyed
	}
	last := int64(0)
	if m := ch.members[ev.UID]; m != nil {
		last = m.clientSeq
	} else if t, ok := ch.tombs[ev.UID]; ok {
		last = t.clientSeq
	}
	if ev.ClientSeq <= last {
		return nil, Stale
	}
	base := Event{
		Channel: ev.ChannelName, UID: ev.UID, Account: ev.Account, Platform: platformPtr(ev.Platform),
		Client: copyPtr(ev.ClientType), ClientSeq: ev.ClientSeq, Ts: ev.Ts, NoticeID: n.NoticeID, Source: SourceNCS,
	}
	m := ch.members[ev.UID]
	switch {
	case n.Type.IsJoin():
		delete(ch.tombs, ev.UID)
		e := &entry{role: codeOf(roleOf(n.Type)), clientSeq: ev.ClientSeq, lastTs: ev.Ts, gen: ch.gen, Member: Member{
			UID: ev.UID, Account: ev.Account, Platform: base.Platform, ClientType: copyPtr(ev.ClientType), Since: ev.Ts,
		}}
		ch.members[ev.UID] = e
		base.Event, base.Role = Join, e.role.Role()
		return []Event{base}, Applied

	case n.Type.IsLeave():
		ch.tombs[ev.UID] = tomb{clientSeq: ev.ClientSeq, atMs: n.ReceivedMs}
		if m == nil {
			return nil, Applied // the join has not arrived (or never will): the tombstone keeps it out
		}
		delete(ch.members, ev.UID)
		base.Event, base.Role, base.Reason, base.Duration = Leave, m.role.Role(), ev.Reason, ev.Duration
		fillFrom(&base, m)
		return []Event{base}, Applied

	default: // role change
		role := roleOf(n.Type)
		if m == nil {
			delete(ch.tombs, ev.UID)
			ch.members[ev.UID] = &entry{role: codeOf(role), clientSeq: ev.ClientSeq, lastTs: ev.Ts, gen: ch.gen, Member: Member{
				UID: ev.UID, Account: ev.Account, Platform: base.Platform, ClientType: copyPtr(ev.ClientType), Since: ev.Ts,
			}}
			base.Event, base.Role = RoleChange, role
			return []Event{base}, Applied
		}
		if m.gen != ch.gen { // made before this copy of the channel: a Frozen may read it
			cp := *m
			cp.gen = ch.gen
			m = &cp
			ch.members[ev.UID] = m
		}
		m.clientSeq = ev.ClientSeq
		m.lastTs = max(m.lastTs, ev.Ts)
		if m.role.Role() == role {
			return nil, Applied // already in that role: nothing a client would see changes
		}
		if ev.Account != "" {
			m.Account = ev.Account
		}
		m.role = codeOf(role)
		base.Event, base.Role = RoleChange, role
		fillFrom(&base, m)
		return []Event{base}, Applied
	}
}

// fillFrom completes an event with what the roster knows of the member when the notification left it out.
func fillFrom(e *Event, m *entry) {
	if e.Account == "" {
		e.Account = m.Account
	}
	if e.Platform == nil {
		e.Platform = m.Platform
	}
	if e.Client == nil {
		e.Client = m.ClientType
	}
}

// Stored records that the channel's latest event was stored at seq.
func (s *State) Stored(channel string, seq uint64) {
	if ch := s.channels[channel]; ch != nil && ch.seq < seq {
		s.writable(channel, ch).seq = seq
	}
}

// ClampSeqs lowers to max the seq of every channel whose last event (as recorded with Stored) is past it. The applier
// calls it when it lines its replay up with the stream below events it had derived under other rules than the
// stream's: those were never stored, and a view built from this state must not take the stream's next events of
// such a channel for ones it holds.
func (s *State) ClampSeqs(max uint64) {
	for name, ch := range s.channels {
		if ch.seq > max {
			s.writable(name, ch).seq = max
		}
	}
}

// ResendSpan is how long after a notification's first delivery Agora may resend it (it resends within about a
// minute, and each resend carries a new notifyMs).
const ResendSpan = time.Minute

// Prune drops tombstones, and records of empty channels, older at nowMs than the retention plus twice the clock
// skew plus Agora's resend span. That outlasts the replay guard's window: a join made before a leave has a notifyMs
// at most one skew past the leave's receipt (Agora's clock ahead of ours), or a resend span more when Agora resent it
// after the leave, and the guard lets it in up to retention plus one skew after that; a captured join replayed that
// late must still find the leaver's tombstone. Its cost is the tombstones that expired plus one look at each
// channel, not a look at every tombstone.
func (s *State) Prune(nowMs int64) {
	cutoff := nowMs - s.rules.keep().Milliseconds()
	s.pruneTombs(cutoff)
	for name, ch := range s.channels {
		if len(ch.members) == 0 && len(ch.tombs) == 0 && ch.touchedMs < cutoff {
			delete(s.channels, name)
		}
	}
}

// Len returns the number of channels and of members the state holds.
func (s *State) Len() (channels, members int) {
	for _, ch := range s.channels {
		members += len(ch.members)
	}
	return len(s.channels), members
}

// View returns a View holding the state's members, each channel at the last seq recorded with Stored.
func (s *State) View() *View {
	v := NewView()
	for name, ch := range s.channels {
		if len(ch.members) == 0 {
			v.floor = max(v.floor, ch.seq) // the applier keeps it for its tombstones; the view forgets it
			continue
		}
		vc := v.channel(name)
		vc.seq = ch.seq
		for uid, m := range ch.members {
			vc.put(uid, m.role.Role(), m.Member)
		}
	}
	return v
}

func sortedUIDs[V any](m map[uint32]V) []uint32 {
	uids := make([]uint32, 0, len(m))
	for uid := range m {
		uids = append(uids, uid)
	}
	slices.SortFunc(uids, cmp.Compare)
	return uids
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
