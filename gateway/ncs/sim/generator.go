package sim

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
)

// Kind tells what a Delivery is.
type Kind int

// Delivery kinds. Original and Delayed are first deliveries of an original event; the others are extra copies of
// one that was already delivered.
const (
	// Original is the first delivery of an original event, after every earlier original was delivered.
	Original Kind = iota
	// Delayed is the first delivery of an original event that was held back: a later original went out before it.
	Delayed
	// Duplicate is a byte-identical copy of an original's first delivery.
	Duplicate
	// Resend is an original again under its noticeId, with a newer notifyMs.
	Resend
	// ResendNewID is an original's payload again under a new noticeId, with a newer notifyMs.
	ResendNewID
)

func (k Kind) String() string {
	switch k {
	case Original:
		return "original"
	case Delayed:
		return "delayed"
	case Duplicate:
		return "duplicate"
	case Resend:
		return "resend"
	case ResendNewID:
		return "resend-new-id"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Delivery is one notification to post.
type Delivery struct {
	// Kind says whether this is the first delivery of an original event or an extra copy, and which.
	Kind Kind
	// Seq is the position, from 1, of the original event this delivery carries, in generation order.
	Seq uint64
	// Notification is the envelope as sent, its Payload included.
	Notification ncs.Notification
	// Event is the payload, parsed. Its pointer fields are shared with other deliveries of the same original.
	Event ncs.ChannelEvent
	// Body is the exact JSON to post. It is shared with other deliveries of the same original: do not modify it.
	Body []byte
}

// Role is a member's role in a channel.
type Role int

// Roles. Live-broadcast channels have hosts and audience; communication-profile channels have users.
const (
	RoleHost     Role = iota + 1 // a host (broadcaster) of a live-broadcast channel
	RoleAudience                 // an audience member of a live-broadcast channel
	RoleUser                     // a user of a communication-profile channel
)

// absent is the role of a user who is not in the channel; roles run from absent to numRoles-1.
const (
	absent   Role = 0
	numRoles      = RoleUser + 1
)

func (r Role) String() string {
	switch r {
	case RoleHost:
		return "host"
	case RoleAudience:
		return "audience"
	case RoleUser:
		return "user"
	}
	return "role(" + strconv.Itoa(int(r)) + ")"
}

// Member is a user present in a channel, as the ground truth knows them.
type Member struct {
	UID      uint32
	Account  string
	Role     Role
	Platform ncs.Platform
	// ClientType is 3, 8 or 10 when Platform is 6 (Linux), and 0 otherwise.
	ClientType int
	// ClientSeq is the clientSeq of the user's latest event.
	ClientSeq int64
}

// Generator makes a stream of NCS deliveries and keeps its ground truth.
//
// All methods may be called concurrently; they are serialised by a mutex. The output is deterministic for a given
// Config and sequence of clock readings, so for reproducible runs call Next and Flush from one goroutine (Run does).
// Memory grows with Channels times (Hosts+Audience), not with the length of the run.
type Generator struct {
	mu      sync.Mutex
	cfg     Config
	faults  Faults
	history *rand.Rand // decides the events
	fault   *rand.Rand // decides the faults, apart from the events
	now     time.Time  // the latest clock reading; it never goes back

	channels []*channel
	script   []step // the planned originals not yet generated (a create before its join, a destroy after its leave)
	head     int    // the next step in script

	pending   []*pending
	held      int    // originals held back in pending
	seq       uint64 // originals generated
	maxFirst  uint64 // the highest Seq delivered for the first time
	delivered uint64 // deliveries made
	order     uint64 // insertions into pending, for a stable order
	ids       uint64 // noticeIds issued
	idSalt    [2]uint64
}

type channel struct {
	name    string
	comm    bool
	byRole  [numRoles][]*user // byRole[absent] holds the users not in the channel
	closing bool              // its members are leaving, one by one, until the channel is destroyed
	budget  int               // changes left before the channel starts closing
	// createdTs is the ts of the latest create. A channel does not start closing before it is minLife seconds
	// old, so that at high rates with few channels they do not spend most of their time cooling down.
	createdTs int64

	destroyed   bool
	destroyedTs int64 // ts of the latest destroy
}

type user struct {
	uid        uint32
	account    string
	platform   ncs.Platform
	clientType int
	role       Role
	slot       int   // index in its channel's byRole[role]
	seq        int64 // the latest clientSeq
	joinTs     int64
}

// step is a planned original event.
type step struct {
	ch  *channel
	u   *user // nil for create and destroy
	typ ncs.EventType
	ev  ncs.ChannelEvent
}

// original is a generated original event.
type original struct {
	seq        uint64
	n          ncs.Notification
	ev         ncs.ChannelEvent
	body       []byte
	lastNotify int64 // the latest notifyMs any delivery of it carried
}

// pending is a held original (kind Delayed) or an extra copy waiting to be delivered.
type pending struct {
	kind  Kind
	o     *original
	due   uint64 // deliverable once this many deliveries were made
	order uint64
}

const (
	// maxHeld bounds the originals held back at once.
	maxHeld = 64
	// minLife is the least age, in seconds, at which a channel starts closing; it may still empty earlier.
	minLife = 2
)

// New returns a Generator, or an error wrapping ErrConfig that names the bad setting.
func New(cfg Config) (*Generator, error) {
	cfg, faults, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	g := &Generator{
		cfg:     cfg,
		faults:  faults,
		history: rand.New(rand.NewPCG(cfg.Seed, 0x5eed0001)),
		fault:   rand.New(rand.NewPCG(cfg.Seed, 0x5eed0002)),
	}
	g.idSalt = [2]uint64{g.history.Uint64(), g.history.Uint64()}
	poolSize := 2*(cfg.Hosts+cfg.Audience) + 2
	for i := range cfg.Channels {
		ch := &channel{
			name: channelName(cfg.Prefix, i),
			// Spread the communication channels evenly: channel i is one when the running share crosses a whole.
			comm: int(float64(i+1)*cfg.Communication) > int(float64(i)*cfg.Communication),
		}
		uids := make(map[uint32]bool, poolSize)
		for range poolSize {
			u := g.newUser(uids)
			u.slot = len(ch.byRole[absent])
			ch.byRole[absent] = append(ch.byRole[absent], u)
		}
		g.channels = append(g.channels, ch)
	}
	return g, nil
}

func (g *Generator) newUser(taken map[uint32]bool) *user {
	var uid uint32
	for uid == 0 || taken[uid] {
		uid = g.history.Uint32()
	}
	taken[uid] = true
	u := &user{uid: uid, account: strconv.FormatUint(uint64(uid), 10)}
	if g.history.IntN(10) < 4 {
		u.account = "user-" + strconv.FormatUint(uint64(g.history.Uint32()), 36)
	}
	u.platform, u.clientType = g.device()
	return u
}

// platformWeights are Agora's platform codes with how often the generator picks them.
var platformWeights = []struct {
	p ncs.Platform
	w int
}{
	{ncs.PlatformAndroid, 35}, {ncs.PlatformIOS, 30}, {ncs.PlatformWeb, 15}, {ncs.PlatformWindows, 7},
	{ncs.PlatformMacOS, 5}, {ncs.PlatformLinux, 5}, {ncs.PlatformOther, 3},
}

// linuxClientTypes are the clientType values sent with platform 6: local recording, applet, cloud recording.
var linuxClientTypes = []int{3, 8, 10}

func (g *Generator) device() (ncs.Platform, int) {
	n := g.history.IntN(100)
	for _, pw := range platformWeights {
		if n -= pw.w; n < 0 {
			if pw.p == ncs.PlatformLinux {
				return pw.p, linuxClientTypes[g.history.IntN(len(linuxClientTypes))]
			}
			return pw.p, 0
		}
	}
	return ncs.PlatformOther, 0
}

// Channels returns the channel names, in the order of their numbers.
func (g *Generator) Channels() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, len(g.channels))
	for i, ch := range g.channels {
		names[i] = ch.name
	}
	return names
}

// Truth returns who is in each channel after every original event generated so far, applied in generation order;
// delivery faults do not change it. Only channels with members are keys; members are sorted by UID. The result is
// the caller's.
//
// Originals held back are included, so compare with a receiver's rosters after Flush, once everything went out.
func (g *Generator) Truth() map[string][]Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	truth := make(map[string][]Member)
	for _, ch := range g.channels {
		var ms []Member
		for r := RoleHost; r < numRoles; r++ {
			for _, u := range ch.byRole[r] {
				ms = append(ms, Member{UID: u.uid, Account: u.account, Role: r, Platform: u.platform,
					ClientType: u.clientType, ClientSeq: u.seq})
			}
		}
		if len(ms) > 0 {
			slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.UID, b.UID) })
			truth[ch.name] = ms
		}
	}
	return truth
}

// Pending returns how many deliveries the generator owes: originals held back or planned, and extra copies.
func (g *Generator) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.script) - g.head + len(g.pending)
}

// Next returns the next delivery at clock reading now, which stamps the events it makes (ts, clientSeq, notifyMs).
// The clock should not go back; an earlier reading counts as the latest one.
//
// A destroyed channel sees no new create or join until their ts is at least one more than the destroy's, so that
// a receiver that ignores joins not newer than a destroy has one right answer. Next skips channels cooling down in
// favour of others; when every channel is cooling down it delivers early what it owes, and when it owes nothing it
// returns false: call again with a later clock.
func (g *Generator) Next(now time.Time) (Delivery, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tick(now)
	if p := g.popPending(true); p != nil {
		return g.deliverPending(p, true), true
	}
	for {
		o, ok := g.generate()
		if !ok {
			break
		}
		if g.held < maxHeld && g.roll(g.faults.Reorder) {
			g.held++
			g.push(Delayed, o, g.delivered+1+uint64(g.fault.IntN(g.faults.MaxHold)))
			continue
		}
		return g.deliverFirst(o, true), true
	}
	// Nothing new can happen now: rather than wait, deliver what is owed early.
	if p := g.popPending(false); p != nil {
		return g.deliverPending(p, true), true
	}
	return Delivery{}, false
}

// Flush returns every delivery the generator owes at clock reading now: the held originals, the extra copies not
// yet sent, and the rest of a planned pair (a destroy after the last leave, a join after its create). It adds no new
// faults. Afterwards every original generated so far has been delivered at least once, and Truth matches what was
// delivered. The generator may be used again after Flush.
func (g *Generator) Flush(now time.Time) []Delivery {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tick(now)
	out := make([]Delivery, 0, len(g.pending)+len(g.script)-g.head)
	slices.SortFunc(g.pending, func(a, b *pending) int {
		return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.order, b.order))
	})
	for _, p := range g.pending {
		out = append(out, g.deliverPending(p, false))
	}
	clear(g.pending)
	g.pending = g.pending[:0]
	for g.head < len(g.script) {
		out = append(out, g.deliverFirst(g.emit(), false))
	}
	return out
}

func (g *Generator) tick(now time.Time) {
	if now.After(g.now) {
		g.now = now
	}
}

func (g *Generator) roll(p float64) bool { return p > 0 && g.fault.Float64() < p }

// generate makes the next original event, planning more when the script is done. It is false when no channel can
// change at the current clock.
func (g *Generator) generate() (*original, bool) {
	if g.head == len(g.script) {
		g.script, g.head = g.script[:0], 0
		if !g.plan() {
			return nil, false
		}
	}
	return g.emit(), true
}

// emit generates the next step of the script: it applies it to the ground truth and encodes it.
func (g *Generator) emit() *original {
	s := g.script[g.head]
	g.script[g.head] = step{}
	g.head++
	g.apply(s)
	g.seq++
	n := ncs.Notification{
		NoticeID:  g.noticeID(),
		ProductID: ncs.ProductRTC,
		EventType: s.typ,
		NotifyMs:  g.now.UnixMilli(),
		Sid:       g.sid(),
		Payload:   mustMarshal(s.ev),
	}
	return &original{seq: g.seq, n: n, ev: s.ev, body: mustMarshal(n), lastNotify: n.NotifyMs}
}

// apply changes the ground truth by one original event.
func (g *Generator) apply(s step) {
	ch, u := s.ch, s.u
	switch {
	case s.typ == ncs.ChannelDestroy:
		ch.closing, ch.destroyed, ch.destroyedTs = false, true, s.ev.Ts
	case s.typ.IsJoin():
		ch.move(u, joinRole(s.typ))
		u.platform, u.clientType, u.joinTs = *s.ev.Platform, 0, s.ev.Ts
		if s.ev.ClientType != nil {
			u.clientType = *s.ev.ClientType
		}
	case s.typ.IsLeave() && *s.ev.Reason == ncs.ReasonNewDevice:
		// The old device of a move: u stays, on the new device.
	case s.typ.IsLeave():
		ch.move(u, absent)
	case s.typ == ncs.RoleToBroadcaster:
		ch.move(u, RoleHost)
	case s.typ == ncs.RoleToAudience:
		ch.move(u, RoleAudience)
	}
	if u != nil {
		u.seq = s.ev.ClientSeq
	}
}

func joinRole(t ncs.EventType) Role {
	switch t {
	case ncs.BroadcasterJoin:
		return RoleHost
	case ncs.AudienceJoin:
		return RoleAudience
	}
	return RoleUser
}

func joinType(r Role) ncs.EventType {
	switch r {
	case RoleHost:
		return ncs.BroadcasterJoin
	case RoleAudience:
		return ncs.AudienceJoin
	}
	return ncs.CommunicationJoin
}

func leaveType(r Role) ncs.EventType {
	switch r {
	case RoleHost:
		return ncs.BroadcasterLeave
	case RoleAudience:
		return ncs.AudienceLeave
	}
	return ncs.CommunicationLeave
}

// move puts u in role r of ch (absent to take it out).
func (ch *channel) move(u *user, r Role) {
	from := ch.byRole[u.role]
	last := from[len(from)-1]
	from[u.slot], last.slot = last, u.slot
	from[len(from)-1] = nil
	ch.byRole[u.role] = from[:len(from)-1]
	u.role, u.slot = r, len(ch.byRole[r])
	ch.byRole[r] = append(ch.byRole[r], u)
}

func (ch *channel) size() int {
	return len(ch.byRole[RoleHost]) + len(ch.byRole[RoleAudience]) + len(ch.byRole[RoleUser])
}

// cooling reports whether ch was destroyed too recently to be created again at Unix second sec.
func (ch *channel) cooling(sec int64) bool {
	return ch.size() == 0 && ch.destroyed && sec < ch.destroyedTs+1
}

// plan appends the next change of a channel to the script. It is false when every channel is cooling down.
func (g *Generator) plan() bool {
	ch := g.pickChannel(g.now.Unix())
	if ch == nil {
		return false
	}
	switch {
	case ch.size() == 0:
		g.planCreate(ch)
	case ch.closing:
		g.planLeave(ch, g.anyMember(ch))
	case ch.budget <= 0 && g.now.Unix() >= ch.createdTs+minLife:
		ch.closing = true
		g.planLeave(ch, g.anyMember(ch))
	default:
		ch.budget--
		g.planChange(ch)
	}
	return true
}

// pickChannel picks a channel that can change at Unix second sec, or nil when none can.
func (g *Generator) pickChannel(sec int64) *channel {
	// A few random tries find one almost always; scan only when most channels are cooling down.
	for range 4 {
		if ch := g.channels[g.history.IntN(len(g.channels))]; !ch.cooling(sec) {
			return ch
		}
	}
	var ready []*channel
	for _, ch := range g.channels {
		if !ch.cooling(sec) {
			ready = append(ready, ch)
		}
	}
	if len(ready) == 0 {
		return nil
	}
	return ready[g.history.IntN(len(ready))]
}

// planCreate starts a new life of an empty channel: 101, then the first join.
func (g *Generator) planCreate(ch *channel) {
	target := g.cfg.Hosts + g.cfg.Audience
	ch.closing, ch.budget, ch.createdTs = false, target*(3+g.history.IntN(10)), g.now.Unix()
	g.script = append(g.script, step{ch: ch, typ: ncs.ChannelCreate, ev: ncs.ChannelEvent{ChannelName: ch.name, Ts: g.now.Unix()}})
	switch {
	case ch.comm:
		g.planJoin(ch, ncs.CommunicationJoin)
	case g.history.IntN(10) < 8: // a show usually starts with its host
		g.planJoin(ch, ncs.BroadcasterJoin)
	default:
		g.planJoin(ch, ncs.AudienceJoin)
	}
}

// planChange plans one change of a live channel, drawn with weights that pull each role towards its target size.
func (g *Generator) planChange(ch *channel) {
	var choices [6]struct {
		typ ncs.EventType
		w   float64
	}
	n := 0
	add := func(t ncs.EventType, w float64) {
		if w > 0 {
			choices[n].typ, choices[n].w = t, w
			n++
		}
	}
	free := len(ch.byRole[absent]) > 0
	if ch.comm {
		users, target := len(ch.byRole[RoleUser]), g.cfg.Hosts+g.cfg.Audience
		add(ncs.CommunicationJoin, joinWeight(free, users, target))
		add(ncs.CommunicationLeave, leaveWeight(users, target))
	} else {
		hosts, audience := len(ch.byRole[RoleHost]), len(ch.byRole[RoleAudience])
		add(ncs.BroadcasterJoin, joinWeight(free, hosts, g.cfg.Hosts))
		add(ncs.AudienceJoin, joinWeight(free, audience, g.cfg.Audience))
		add(ncs.BroadcasterLeave, leaveWeight(hosts, g.cfg.Hosts))
		add(ncs.AudienceLeave, leaveWeight(audience, g.cfg.Audience))
		if audience > 0 && hosts <= g.cfg.Hosts {
			add(ncs.RoleToBroadcaster, 0.12)
		}
		if hosts > 0 {
			add(ncs.RoleToAudience, 0.12)
		}
	}
	total := 0.0
	for _, c := range choices[:n] {
		total += c.w
	}
	x := g.history.Float64() * total
	typ := choices[n-1].typ
	for _, c := range choices[:n] {
		if x -= c.w; x < 0 {
			typ = c.typ
			break
		}
	}
	switch typ {
	case ncs.BroadcasterJoin, ncs.AudienceJoin, ncs.CommunicationJoin:
		g.planJoin(ch, typ)
	case ncs.BroadcasterLeave:
		g.planLeave(ch, g.member(ch, RoleHost))
	case ncs.AudienceLeave:
		g.planLeave(ch, g.member(ch, RoleAudience))
	case ncs.CommunicationLeave:
		g.planLeave(ch, g.member(ch, RoleUser))
	case ncs.RoleToBroadcaster:
		g.planRole(ch, g.member(ch, RoleAudience), typ)
	case ncs.RoleToAudience:
		g.planRole(ch, g.member(ch, RoleHost), typ)
	}
}

func joinWeight(free bool, n, target int) float64 {
	switch {
	case !free:
		return 0
	case n < target:
		return 1
	}
	return 0.15
}

func leaveWeight(n, target int) float64 {
	if n == 0 {
		return 0
	}
	return 0.7 * float64(n) / float64(max(target, 1))
}

func (g *Generator) member(ch *channel, r Role) *user {
	return ch.byRole[r][g.history.IntN(len(ch.byRole[r]))]
}

// anyMember returns a random member of a channel that has one.
func (g *Generator) anyMember(ch *channel) *user {
	i := g.history.IntN(ch.size())
	r := RoleHost
	for ; i >= len(ch.byRole[r]); r++ {
		i -= len(ch.byRole[r])
	}
	return ch.byRole[r][i]
}

// clientSeq returns the next clientSeq of u: the clock in milliseconds, or one more than u's last when that is
// not smaller, so it increases strictly over the user's whole life, rejoins included.
func (g *Generator) clientSeq(u *user) int64 {
	return max(g.now.UnixMilli(), u.seq+1)
}

func (g *Generator) planJoin(ch *channel, typ ncs.EventType) {
	u := g.member(ch, absent)
	platform, clientType := u.platform, u.clientType
	ev := ncs.ChannelEvent{
		ChannelName: ch.name,
		UID:         u.uid,
		Platform:    &platform,
		ClientSeq:   g.clientSeq(u),
		Ts:          g.now.Unix(),
		Account:     u.account,
	}
	if platform == ncs.PlatformLinux {
		ev.ClientType = &clientType
	}
	g.script = append(g.script, step{ch: ch, u: u, typ: typ, ev: ev})
}

// planLeave plans u's leave and, when u is the last member, the channel's destroy. A leave with reason 5 is a move
// to a new device instead (planMove): u stays.
func (g *Generator) planLeave(ch *channel, u *user) {
	platform, reason, duration := u.platform, g.leaveReason(ch.closing), g.now.Unix()-u.joinTs
	if reason == ncs.ReasonNewDevice {
		g.planMove(ch, u)
		return
	}
	ev := ncs.ChannelEvent{
		ChannelName: ch.name,
		UID:         u.uid,
		Platform:    &platform,
		ClientSeq:   g.clientSeq(u),
		Reason:      &reason,
		Duration:    &duration,
		Ts:          g.now.Unix(),
		Account:     u.account,
	}
	if platform == ncs.PlatformLinux {
		clientType := u.clientType
		ev.ClientType = &clientType
	}
	g.script = append(g.script, step{ch: ch, u: u, typ: leaveType(u.role), ev: ev})
	if ch.size() > 1 {
		return
	}
	destroy := ncs.ChannelEvent{ChannelName: ch.name, Ts: g.now.Unix()}
	if g.history.IntN(2) == 0 {
		uid := u.uid
		destroy.LastUID = &uid
	}
	g.script = append(g.script, step{ch: ch, typ: ncs.ChannelDestroy, ev: destroy})
}

// planMove plans u's move to a new device, as Agora reports it: the new device's join, in u's role, then the old
// device's leave with reason 5 (the new join forced it out), which has a higher clientSeq than the join. u stays in
// the channel.
func (g *Generator) planMove(ch *channel, u *user) {
	platform, clientType := g.device()
	seq, ts := g.clientSeq(u), g.now.Unix()
	join := ncs.ChannelEvent{ChannelName: ch.name, UID: u.uid, Platform: &platform, ClientSeq: seq, Ts: ts, Account: u.account}
	if platform == ncs.PlatformLinux {
		join.ClientType = &clientType
	}
	oldPlatform, reason, duration := u.platform, ncs.ReasonNewDevice, ts-u.joinTs
	leave := ncs.ChannelEvent{ChannelName: ch.name, UID: u.uid, Platform: &oldPlatform, ClientSeq: seq + 1,
		Reason: &reason, Duration: &duration, Ts: ts, Account: u.account}
	if oldPlatform == ncs.PlatformLinux {
		oldType := u.clientType
		leave.ClientType = &oldType
	}
	g.script = append(g.script, step{ch: ch, u: u, typ: joinType(u.role), ev: join},
		step{ch: ch, u: u, typ: leaveType(u.role), ev: leave})
}

func (g *Generator) planRole(ch *channel, u *user, typ ncs.EventType) {
	ev := ncs.ChannelEvent{ChannelName: ch.name, UID: u.uid, ClientSeq: g.clientSeq(u), Ts: g.now.Unix(), Account: u.account}
	g.script = append(g.script, step{ch: ch, u: u, typ: typ, ev: ev})
}

// leaveReason draws a leave reason: mostly 1 (quit) and 2 (timeout), every other documented reason now and then.
// When a channel is closing, its users mostly quit.
func (g *Generator) leaveReason(closing bool) int {
	if closing && g.history.IntN(10) < 8 {
		return ncs.ReasonQuit
	}
	weight := func(r int) int {
		switch r {
		case ncs.ReasonQuit:
			return 200
		case ncs.ReasonTimeout:
			return 100
		}
		return 10
	}
	total := 0
	for _, r := range ncs.LeaveReasons {
		total += weight(r)
	}
	x := g.history.IntN(total)
	for _, r := range ncs.LeaveReasons {
		if x -= weight(r); x < 0 {
			return r
		}
	}
	return ncs.ReasonQuit
}

// push queues a held original or an extra copy.
func (g *Generator) push(k Kind, o *original, due uint64) {
	g.order++
	g.pending = append(g.pending, &pending{kind: k, o: o, due: due, order: g.order})
}

// popPending removes and returns the pending delivery that is due first, or nil. With dueOnly it considers only
// those already due.
func (g *Generator) popPending(dueOnly bool) *pending {
	best := -1
	for i, p := range g.pending {
		if dueOnly && p.due > g.delivered {
			continue
		}
		if best < 0 || p.due < g.pending[best].due || p.due == g.pending[best].due && p.order < g.pending[best].order {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	p := g.pending[best]
	last := len(g.pending) - 1
	g.pending[best], g.pending[last] = g.pending[last], nil
	g.pending = g.pending[:last]
	return p
}

func (g *Generator) deliverPending(p *pending, faults bool) Delivery {
	if p.kind == Delayed {
		g.held--
		return g.deliverFirst(p.o, faults)
	}
	g.delivered++
	o := p.o
	d := Delivery{Kind: p.kind, Seq: o.seq, Notification: o.n, Event: o.ev, Body: o.body}
	if p.kind == Duplicate {
		return d
	}
	// A resend carries a newer notifyMs than any earlier delivery of the original, even on a coarse clock.
	o.lastNotify = max(g.now.UnixMilli(), o.lastNotify+1)
	d.Notification.NotifyMs = o.lastNotify
	if p.kind == ResendNewID {
		d.Notification.NoticeID = g.noticeID()
	}
	d.Body = mustMarshal(d.Notification)
	return d
}

// deliverFirst delivers an original for the first time and, with faults, draws its extra copies.
func (g *Generator) deliverFirst(o *original, faults bool) Delivery {
	kind := Original
	if o.seq < g.maxFirst {
		kind = Delayed
	}
	g.maxFirst = max(g.maxFirst, o.seq)
	g.delivered++
	if faults {
		for _, f := range []struct {
			k Kind
			p float64
		}{{Duplicate, g.faults.Duplicate}, {Resend, g.faults.Resend}, {ResendNewID, g.faults.ResendNewID}} {
			if g.roll(f.p) {
				g.push(f.k, o, g.delivered+uint64(g.fault.IntN(g.faults.MaxHold)))
			}
		}
	}
	return Delivery{Kind: kind, Seq: o.seq, Notification: o.n, Event: o.ev, Body: o.body}
}

// noticeID returns a new UUID-shaped noticeId. The last 64 bits are a bijection of a counter, so the generator
// never repeats one; the rest depends on the seed, so that generators with different seeds do not collide.
func (g *Generator) noticeID() string {
	g.ids++
	hi := mix(g.ids ^ g.idSalt[0])
	lo := (g.ids + g.idSalt[1]) * 0x9e3779b97f4a7c15
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", hi>>32, hi>>16&0xffff, 0x4000|hi&0x0fff, lo>>48, lo&0xffffffffffff)
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

const sidAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// sid returns a session ID shaped like Agora's ("C866467GVJJ54687").
func (g *Generator) sid() string {
	var b [16]byte
	for i := range b {
		b[i] = sidAlphabet[g.history.IntN(len(sidAlphabet))]
	}
	return string(b[:])
}

// encode is json.Marshal without HTML escaping: a body carries '&', '<' and '>' of a channel name as they are.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// mustMarshal encodes the generator's own wire types, which cannot fail to encode.
func mustMarshal(v any) []byte {
	b, err := encode(v)
	if err != nil {
		panic(fmt.Sprintf("sim: encoding %T: %v", v, err))
	}
	return b
}

// Collect takes n deliveries, then everything the generator still owes (Flush), on a clock that starts at start
// and moves 10 ms a delivery (a second at a time while every channel cools down after a destroy).
func (g *Generator) Collect(n int, start time.Time) []Delivery {
	var ds []Delivery
	now := start
	for len(ds) < n {
		d, ok := g.Next(now)
		if !ok {
			now = now.Add(time.Second)
			continue
		}
		ds = append(ds, d)
		now = now.Add(10 * time.Millisecond)
	}
	return append(ds, g.Flush(now)...)
}
