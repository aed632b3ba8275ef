package presence

import (
	"bytes"
	"cmp"
	"math"
	"slices"
	"strings"
)

// Counts are the sizes of a channel's roster.
type Counts struct {
	Hosts    int `json:"hosts"`
	Audience int `json:"audience"`
	Users    int `json:"users"`
}

// Snapshot is a channel's roster as of Seq, the last event it includes. Lists are never nil, and are ordered by
// Since, then UID.
type Snapshot struct {
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	// Epoch names the stream whose seqs Seq and later events count (see the gateway's presence view): a seq is
	// meaningful only with its epoch. Empty when the source has none.
	Epoch    string   `json:"epoch,omitempty"`
	Hosts    []Member `json:"hosts"`
	Audience []Member `json:"audience"`
	Users    []Member `json:"users"`
	Counts   Counts   `json:"counts"`
}

// Summary is a channel in the channel list.
type Summary struct {
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	Counts  Counts `json:"counts"`
}

// View folds stored Events, in stream order, into rosters. Every instance keeps one, fed from USHER_PRESENCE.
//
// A channel is forgotten as soon as its last member leaves, so that a view's memory follows the live channels, not
// every channel it ever saw (Agora channels made per call or per session would otherwise pile up until a restart).
// floor, the last event of any forgotten channel, then stands for the channel's last event: every later event of
// it has a higher seq, and an event at or below floor of a channel the view does not hold is one it has applied.
//
// A View is not safe for concurrent use; its owner guards it.
type View struct {
	channels map[string]*viewChannel
	floor    uint64
}

// viewChannel keeps its members side by side in a slice, in no order, with an index by uid: copying a large
// roster (what a snapshot does under its reader's lock) is then a walk over contiguous memory, not over a map.
type viewChannel struct {
	seq     uint64
	members []viewMember
	index   map[uint32]int32 // uid -> position in members
	counts  Counts
}

type viewMember struct {
	Member
	role roleCode
}

// NewView returns an empty View.
func NewView() *View { return &View{channels: map[string]*viewChannel{}} }

func (v *View) channel(name string) *viewChannel {
	c := v.channels[name]
	if c == nil {
		c = &viewChannel{index: map[uint32]int32{}}
		v.channels[name] = c
	}
	return c
}

// Apply folds one stored event into the view. An event whose Seq is not above its channel's is one the view
// already holds: Apply ignores it and returns false.
func (v *View) Apply(e Event) bool {
	if v.channels[e.Channel] == nil && e.Seq <= v.floor {
		return false // the channel's events up to its last leave were applied, and it was forgotten
	}
	c := v.channel(e.Channel)
	if e.Seq <= c.seq {
		return false
	}
	c.seq = e.Seq
	switch e.Event {
	case Join:
		c.put(e.UID, e.Role, Member{UID: e.UID, Account: e.Account, Platform: e.Platform, ClientType: e.Client, Since: e.Ts})
	case RoleChange:
		if i, ok := c.index[e.UID]; ok {
			m := c.members[i].Member
			if e.Account != "" {
				m.Account = e.Account
			}
			c.put(e.UID, e.Role, m)
		} else {
			c.put(e.UID, e.Role, Member{UID: e.UID, Account: e.Account, Platform: e.Platform, ClientType: e.Client, Since: e.Ts})
		}
	case Leave:
		c.remove(e.UID)
	}
	if len(c.members) == 0 { // a last leave, a channel's create or destroy, any event that leaves it empty
		v.forget(e.Channel, c)
	}
	return true
}

// forget drops an empty channel.
func (v *View) forget(name string, c *viewChannel) {
	delete(v.channels, name)
	v.floor = max(v.floor, c.seq)
}

// Len is the number of channels the view holds: those with members.
func (v *View) Len() int { return len(v.channels) }

// RaiseFloor raises the view's floor to seq: a view made from a checkpoint holds every event up to the
// checkpoint's last, so a channel it does not hold had its last event at or before it.
func (v *View) RaiseFloor(seq uint64) { v.floor = max(v.floor, seq) }

func (c *viewChannel) put(uid uint32, role Role, m Member) {
	vm := viewMember{Member: m, role: codeOf(role)}
	if i, ok := c.index[uid]; ok {
		*c.count(c.members[i].role.Role())--
		c.members[i] = vm
	} else {
		c.index[uid] = int32(len(c.members))
		c.members = append(c.members, vm)
	}
	*c.count(role)++
}

func (c *viewChannel) remove(uid uint32) {
	i, ok := c.index[uid]
	if !ok {
		return
	}
	*c.count(c.members[i].role.Role())--
	delete(c.index, uid)
	last := int32(len(c.members) - 1)
	if i != last { // the last one fills the gap
		c.members[i] = c.members[last]
		c.index[c.members[i].UID] = i
	}
	c.members[last] = viewMember{} // no pointers kept alive past the end
	c.members = c.members[:last]
	if cap(c.members) > 64 && len(c.members) < cap(c.members)/4 { // a roster that emptied gives its room back
		c.members = append(make([]viewMember, 0, 2*len(c.members)), c.members...)
	}
}

func (c *viewChannel) count(r Role) *int {
	switch r {
	case Host:
		return &c.counts.Hosts
	case Audience:
		return &c.counts.Audience
	}
	return &c.counts.Users
}

// Seq is the last event of channel the view holds, 0 if none.
func (v *View) Seq(channel string) uint64 {
	if c := v.channels[channel]; c != nil {
		return c.seq
	}
	return v.floor
}

// Snapshot returns a channel's roster. A channel the view does not hold (never seen, or empty and forgotten) has an
// empty roster at the view's floor (0 until a channel was forgotten).
func (v *View) Snapshot(channel string) Snapshot {
	s := v.Copy(channel)
	s.Sort()
	return s
}

// Copy is Snapshot with the members in no particular order: the part that reads the View. A caller that guards the
// View with a lock holds it for Copy only, and calls Sort on the result after releasing it.
func (v *View) Copy(channel string) Snapshot {
	s := Snapshot{Channel: channel, Seq: v.floor, Hosts: []Member{}, Audience: []Member{}, Users: []Member{}}
	c := v.channels[channel]
	if c == nil {
		return s
	}
	s.Seq, s.Counts = c.seq, c.counts
	s.Hosts = make([]Member, 0, c.counts.Hosts)
	s.Audience = make([]Member, 0, c.counts.Audience)
	s.Users = make([]Member, 0, c.counts.Users)
	for i := range c.members {
		m := &c.members[i]
		switch m.role {
		case codeHost:
			s.Hosts = append(s.Hosts, m.Member)
		case codeAudience:
			s.Audience = append(s.Audience, m.Member)
		default:
			s.Users = append(s.Users, m.Member)
		}
	}
	return s
}

// Sort puts each role's members in Snapshot's order: by Since, then uid.
func (s Snapshot) Sort() {
	for _, l := range [][]Member{s.Hosts, s.Audience, s.Users} {
		slices.SortFunc(l, func(a, b Member) int { return cmp.Or(cmp.Compare(a.Since, b.Since), cmp.Compare(a.UID, b.UID)) })
	}
}

// Channels lists the channels with at least one member, by name.
func (v *View) Channels() []Summary {
	out, _ := v.CopyChannels("", 0, ByName)
	slices.SortFunc(out, ByName)
	return out
}

// CopyChannels returns the channels with members whose name contains match, ASCII letters in either case ("" matches
// every one), and how many there are. With first above 0 it keeps only the first that many in order, and copies
// none of the others: the busiest 200 of 100,000 channels cost a pass with a heap of 200, not a copy of them all.
// The list is in no particular order either way: this is the part that reads the View (see Copy), under the lock
// that the view's writer waits for; the caller sorts it.
func (v *View) CopyChannels(match string, first int, order func(a, b Summary) int) ([]Summary, int) {
	f := firsts{n: first, order: order}
	if first <= 0 {
		f.n = math.MaxInt // every one: the heap never fills
	}
	f.s = make([]Summary, 0, min(f.n, len(v.channels)))
	total := 0
	for name, c := range v.channels {
		if len(c.members) > 0 && ContainsFold(name, match) {
			total++
			f.offer(Summary{Channel: name, Seq: c.seq, Counts: c.counts})
		}
	}
	return f.s, total
}

// firsts keeps the first n of the Summaries offered to it, in order. Once it holds n, s is a heap whose root is the
// last of them in order, which each one offered after that and coming before it replaces.
type firsts struct {
	s     []Summary
	n     int
	order func(a, b Summary) int
}

func (f *firsts) offer(x Summary) {
	if len(f.s) < f.n {
		f.s = append(f.s, x)
		if len(f.s) == f.n {
			for i := f.n/2 - 1; i >= 0; i-- {
				f.down(i)
			}
		}
		return
	}
	if f.order(x, f.s[0]) < 0 {
		f.s[0] = x
		f.down(0)
	}
}

// down moves s[i] down the heap to its place: below every element that comes after it in order.
func (f *firsts) down(i int) {
	later := func(a, b int) bool { return f.order(f.s[a], f.s[b]) > 0 }
	for {
		c := 2*i + 1
		if c >= f.n {
			return
		}
		if c+1 < f.n && later(c+1, c) {
			c++
		}
		if !later(c, i) {
			return
		}
		f.s[i], f.s[c] = f.s[c], f.s[i]
		i = c
	}
}

// ContainsFold reports whether s contains sub, ASCII letters matching in either case (channel names are ASCII).
// It runs under the view's lock, over every channel: it allocates nothing for a name of Agora's, and the search is
// bytes.Contains over lower-cased copies, about 25 ns for a typical name and 60-90 ns at worst (64 "a" searched for
// 31 "a" and a "b": a byte-by-byte search took 1.2 us there, and a list of 100,000 such names held the lock 120 ms;
// go test -run '^$' -bench BenchmarkContainsFold ./gateway/presence/).
func ContainsFold(s, sub string) bool {
	const most = 64 // Agora's names are at most 64 bytes
	switch {
	case sub == "":
		return true
	case len(sub) > len(s):
		return false
	case len(s) > most:
		return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
	}
	var ls, lsub [most]byte
	for i := 0; i < len(s); i++ {
		ls[i] = lowerASCII(s[i])
	}
	for i := 0; i < len(sub); i++ {
		lsub[i] = lowerASCII(sub[i])
	}
	return bytes.Contains(ls[:len(s)], lsub[:len(sub)])
}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// Size is how many members a channel has: hosts, audience and communication-profile users.
func (c Counts) Size() int { return c.Hosts + c.Audience + c.Users }

// ByName is the order of Channels: by name.
func ByName(a, b Summary) int { return cmp.Compare(a.Channel, b.Channel) }

// BySize is the order of a console's picker: the busiest first (by Counts.Size), then by name.
func BySize(a, b Summary) int {
	return cmp.Or(cmp.Compare(b.Counts.Size(), a.Counts.Size()), cmp.Compare(a.Channel, b.Channel))
}
