package presence_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
)

// step is one notice of a rule case and what Apply must return for it.
type step struct {
	// prune, when not zero, is a Prune(prune) call made before the notice is applied.
	prune   int64
	n       presence.Notice
	want    []presence.Event
	outcome presence.Outcome
}

type ruleCase struct {
	name  string
	rules presence.Rules
	steps []step
	// final is the expected snapshot of every channel named, from State.View after the last step; nil means
	// test_webhook empty.
	final []presence.Snapshot
	// channels, when set, is the expected number of channels the state holds at the end (State.Len).
	channels *int
}

// The seed user's events, as Apply returns them (Seq 0).
func joinEvent(role presence.Role, noticeID string, clientSeq, ts int64) presence.Event {
	return presence.Event{Channel: chanName, Event: presence.Join, Role: role, UID: seedUID, Account: seedAcct,
		Platform: ptr(1), ClientSeq: clientSeq, Ts: ts, NoticeID: noticeID, Source: "ncs"}
}

func leaveEvent(role presence.Role, noticeID string, clientSeq int64, reason int) presence.Event {
	return presence.Event{Channel: chanName, Event: presence.Leave, Role: role, UID: seedUID, Account: seedAcct,
		Platform: ptr(1), ClientSeq: clientSeq, Ts: tsLeave, Reason: ptr(reason), Duration: ptr(int64(600)),
		NoticeID: noticeID, Source: "ncs"}
}

// seedMember is the seed user as a roster holds it after a seed join.
func seedMember(since int64) presence.Member {
	return presence.Member{UID: seedUID, Account: seedAcct, Platform: ptr(1), Since: since}
}

func ms(m ...presence.Member) []presence.Member { return m }

func evs(e ...presence.Event) []presence.Event { return e }

// r0 is a receive time some way after the seeds' notifyMs, for the cases about retention.
const r0 = seedNotifyMs + 3_600_000

func runRuleCases(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := presence.NewState(tc.rules)
			for i, st := range tc.steps {
				if st.prune != 0 {
					s.Prune(st.prune)
				}
				got, outcome := s.Apply(st.n)
				if outcome != st.outcome {
					t.Errorf("step %d (%d %s): outcome %v, want %v", i, st.n.Type, st.n.NoticeID, outcome, st.outcome)
				}
				// Every event carries its notification's notifyMs, the start of end-to-end latency.
				want := slices.Clone(st.want)
				for j := range want {
					want[j].NotifyMs = st.n.NotifyMs
				}
				equal(t, fmt.Sprintf("step %d (%d %s): events", i, st.n.Type, st.n.NoticeID), got, want)
			}
			final := tc.final
			if final == nil {
				final = []presence.Snapshot{snapshot(chanName, nil, nil, nil)}
			}
			v := s.View()
			for _, want := range final {
				equal(t, "final snapshot of "+want.Channel, v.Snapshot(want.Channel), want)
			}
			if tc.channels != nil {
				if n, _ := s.Len(); n != *tc.channels {
					t.Errorf("state holds %d channels, want %d", n, *tc.channels)
				}
			}
		})
	}
}

func TestJoins(t *testing.T) {
	t.Parallel()
	linux := presence.Member{UID: seedUID, Account: seedAcct, Platform: ptr(6), ClientType: ptr(10), Since: tsJoin}
	runRuleCases(t, []ruleCase{
		{name: "103 puts a host in hosts",
			steps: []step{{n: seed(t, ncs.BroadcasterJoin, "n1"),
				want: evs(joinEvent(presence.Host, "n1", seqJoin103, tsJoin)), outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsJoin)), nil, nil)}},
		{name: "105 puts audience in audience",
			steps: []step{{n: seed(t, ncs.AudienceJoin, "n1"),
				want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)), outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "107 puts a communication user in users",
			steps: []step{{n: seed(t, ncs.CommunicationJoin, "n1"),
				want: evs(joinEvent(presence.User, "n1", seqJoin105, tsJoin)), outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, nil, nil, ms(seedMember(tsJoin)))}},
		{name: "103 from Linux cloud recording keeps platform 6 and clientType 10",
			steps: []step{{n: seed(t, ncs.BroadcasterJoin, "n1", withPlatform(ncs.PlatformLinux, ptr(10))),
				want: evs(presence.Event{Channel: chanName, Event: presence.Join, Role: presence.Host, UID: seedUID,
					Account: seedAcct, Platform: ptr(6), Client: ptr(10), ClientSeq: seqJoin103, Ts: tsJoin,
					NoticeID: "n1", Source: "ncs"}),
				outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, ms(linux), nil, nil)}},
		{name: "105 with platform 0 (other) keeps the zero",
			steps: []step{{n: seed(t, ncs.AudienceJoin, "n1", withPlatform(ncs.PlatformOther, nil)),
				want: evs(presence.Event{Channel: chanName, Event: presence.Join, Role: presence.Audience, UID: seedUID,
					Account: seedAcct, Platform: ptr(0), ClientSeq: seqJoin105, Ts: tsJoin, NoticeID: "n1", Source: "ncs"}),
				outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, nil,
				ms(presence.Member{UID: seedUID, Account: seedAcct, Platform: ptr(0), Since: tsJoin}), nil)}},
		{name: "105 without account or platform",
			steps: []step{{n: seed(t, ncs.AudienceJoin, "n1", bare),
				want: evs(presence.Event{Channel: chanName, Event: presence.Join, Role: presence.Audience, UID: seedUID,
					ClientSeq: seqJoin105, Ts: tsJoin, NoticeID: "n1", Source: "ncs"}),
				outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(presence.Member{UID: seedUID, Since: tsJoin}), nil)}},
		{name: "a newer join of a present member replaces its entry (its leave was lost)",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n2", withSeq(seqJoin105+1), withTs(tsJoin+1)),
					want: evs(joinEvent(presence.Host, "n2", seqJoin105+1, tsJoin+1)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsJoin+1)), nil, nil)}},
		{name: "the same uid in two channels is two members",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n2", inChannel("show.2")),
					want: evs(presence.Event{Channel: "show.2", Event: presence.Join, Role: presence.Audience,
						UID: seedUID, Account: seedAcct, Platform: ptr(1), ClientSeq: seqJoin105, Ts: tsJoin,
						NoticeID: "n2", Source: "ncs"}),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n3"), want: evs(leaveEvent(presence.Audience, "n3", seqLeave106, 1)),
					outcome: presence.Applied},
			},
			final: []presence.Snapshot{
				snapshot(chanName, nil, nil, nil),
				snapshot("show.2", nil, ms(seedMember(tsJoin)), nil),
			}},
	})
}

func TestClientSeqOrder(t *testing.T) {
	t.Parallel()
	runRuleCases(t, []ruleCase{
		{name: "the same join again is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n1"), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "the same join under a new noticeId with a newer notifyMs is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: at(seed(t, ncs.AudienceJoin, "n2"), seedNotifyMs+5000, seedNotifyMs+5000), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "a join with a smaller clientSeq is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n2"), outcome: presence.Stale}, // 1625051030746 < 1625051035346
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "an older leave after a newer join is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterLeave, "n2"), outcome: presence.Stale}, // 1625051030789 < 1625051035346
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "a leave with the join's clientSeq is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2", withSeq(seqJoin105)), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "an older join after a newer leave is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2"), want: evs(leaveEvent(presence.Audience, "n2", seqLeave106, 1)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n3", withSeq(seqLeave106-1)), outcome: presence.Stale},
			}},
		{name: "the same leave again, and under a new noticeId, is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2"), want: evs(leaveEvent(presence.Audience, "n2", seqLeave106, 1)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2"), outcome: presence.Stale},
				{n: seed(t, ncs.AudienceLeave, "n3"), outcome: presence.Stale},
			}},
		{name: "a role change older than the join is stale",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1", withSeq(seqRole111+1)),
					want: evs(joinEvent(presence.Audience, "n1", seqRole111+1, tsJoin)), outcome: presence.Applied},
				{n: seed(t, ncs.RoleToBroadcaster, "n2"), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
	})
}

func TestLeaves(t *testing.T) {
	t.Parallel()
	cases := []ruleCase{
		{name: "104 for an audience member leaves as audience",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterLeave, "n2", withSeq(seqLeave106)),
					want: evs(leaveEvent(presence.Audience, "n2", seqLeave106, 1)), outcome: presence.Applied},
			}},
		{name: "106 for a host leaves as host",
			steps: []step{
				{n: seed(t, ncs.BroadcasterJoin, "n1"), want: evs(joinEvent(presence.Host, "n1", seqJoin103, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2"), want: evs(leaveEvent(presence.Host, "n2", seqLeave106, 1)),
					outcome: presence.Applied},
			}},
		{name: "104 for a host who became audience leaves as audience",
			steps: []step{
				{n: seed(t, ncs.BroadcasterJoin, "n1"), want: evs(joinEvent(presence.Host, "n1", seqJoin103, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToAudience, "n2", withSeq(seqLeave104+1), withTs(tsJoin+50)),
					want: evs(presence.Event{Channel: chanName, Event: presence.RoleChange, Role: presence.Audience,
						UID: seedUID, Account: seedAcct, Platform: ptr(1), ClientSeq: seqLeave104 + 1, Ts: tsJoin + 50,
						NoticeID: "n2", Source: "ncs"}),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterLeave, "n3", withSeq(seqLeave104+2)),
					want: evs(leaveEvent(presence.Audience, "n3", seqLeave104+2, 1)), outcome: presence.Applied},
			}},
		{name: "108 of a communication user",
			steps: []step{
				{n: seed(t, ncs.CommunicationJoin, "n1"), want: evs(joinEvent(presence.User, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.CommunicationLeave, "n2"), want: evs(leaveEvent(presence.User, "n2", seqLeave106, 1)),
					outcome: presence.Applied},
			}},
		{name: "a leave without account, platform and clientType is filled from the roster",
			steps: []step{
				{n: seed(t, ncs.BroadcasterJoin, "n1", withPlatform(ncs.PlatformLinux, ptr(10))),
					want: evs(presence.Event{Channel: chanName, Event: presence.Join, Role: presence.Host, UID: seedUID,
						Account: seedAcct, Platform: ptr(6), Client: ptr(10), ClientSeq: seqJoin103, Ts: tsJoin,
						NoticeID: "n1", Source: "ncs"}),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterLeave, "n2", bare),
					want: evs(presence.Event{Channel: chanName, Event: presence.Leave, Role: presence.Host, UID: seedUID,
						Account: seedAcct, Platform: ptr(6), Client: ptr(10), ClientSeq: seqLeave104, Ts: tsLeave,
						Reason: ptr(1), Duration: ptr(int64(600)), NoticeID: "n2", Source: "ncs"}),
					outcome: presence.Applied},
			}},
		{name: "a leave without reason and duration has neither",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2", func(e *ncs.ChannelEvent) { e.Reason, e.Duration = nil, nil }),
					want: evs(presence.Event{Channel: chanName, Event: presence.Leave, Role: presence.Audience,
						UID: seedUID, Account: seedAcct, Platform: ptr(1), ClientSeq: seqLeave106, Ts: tsLeave,
						NoticeID: "n2", Source: "ncs"}),
					outcome: presence.Applied},
			}},
	}
	// Every documented reason is kept as sent, and so is one Agora may add later. (5 is a move to a new device,
	// not a leave: TestDeviceMove.)
	for _, r := range []int{0, 1, 2, 3, 4, 9, 10, 12, 99, 999, 7} {
		cases = append(cases, ruleCase{name: fmt.Sprintf("reason %d is kept", r),
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2", withReason(r)),
					want: evs(leaveEvent(presence.Audience, "n2", seqLeave106, r)), outcome: presence.Applied},
			}})
	}
	runRuleCases(t, cases)
}

// A user who joins from a new device forces the old one out: Agora sends the new device's join and the old
// device's leave with reason 5, in either order, and the leave's clientSeq (the old device's) may be higher or lower
// than the join's. The user stays in the channel, with the new device's platform.
func TestDeviceMove(t *testing.T) {
	t.Parallel()
	const newSeq = seqJoin103 + 20 // the new device's join
	moved := func(e *ncs.ChannelEvent) { e.Platform = ptr(ncs.PlatformIOS) }
	newJoin := func(id string) presence.Notice {
		return seed(t, ncs.BroadcasterJoin, id, withSeq(newSeq), withTs(tsJoin+30), moved)
	}
	newJoinEvent := func(id string) presence.Event {
		e := joinEvent(presence.Host, id, newSeq, tsJoin+30)
		e.Platform = ptr(2)
		return e
	}
	oldLeave := func(id string, seq int64) presence.Notice {
		return seed(t, ncs.BroadcasterLeave, id, withSeq(seq), withReason(ncs.ReasonNewDevice))
	}
	onNewDevice := []presence.Snapshot{snapshot(chanName,
		ms(presence.Member{UID: seedUID, Account: seedAcct, Platform: ptr(2), Since: tsJoin + 30}), nil, nil)}
	hostJoin := step{n: seed(t, ncs.BroadcasterJoin, "n1"), want: evs(joinEvent(presence.Host, "n1", seqJoin103, tsJoin)),
		outcome: presence.Applied}
	var cases []ruleCase
	for _, leaveSeq := range []int64{newSeq - 10, newSeq + 10} {
		cases = append(cases,
			ruleCase{name: fmt.Sprintf("join from the new device, then the old one's leave (clientSeq %+d)", leaveSeq-newSeq),
				steps: []step{hostJoin,
					{n: newJoin("n2"), want: evs(newJoinEvent("n2")), outcome: presence.Applied},
					{n: oldLeave("n3", leaveSeq), outcome: presence.Ignored},
				},
				final: onNewDevice},
			ruleCase{name: fmt.Sprintf("the old device's leave first (clientSeq %+d), then the join from the new one", leaveSeq-newSeq),
				steps: []step{hostJoin,
					{n: oldLeave("n3", leaveSeq), outcome: presence.Ignored},
					{n: newJoin("n2"), want: evs(newJoinEvent("n2")), outcome: presence.Applied},
				},
				final: onNewDevice},
			ruleCase{name: fmt.Sprintf("the old device's leave before any join (clientSeq %+d) leaves no tombstone", leaveSeq-newSeq),
				steps: []step{
					{n: oldLeave("n3", leaveSeq), outcome: presence.Ignored},
					{n: newJoin("n2"), want: evs(newJoinEvent("n2")), outcome: presence.Applied},
				},
				final: onNewDevice})
	}
	// Known limit (README): clientSeq is per user, and the new device's are compared with the old device's. When the
	// old device's ran ahead (its clock ahead, say), the new device's join is stale, the user stays listed as on the
	// old device, and so do they after a leave from the new device (stale too), until the channel ends.
	ahead := seqJoin103 + 100_000
	cases = append(cases, ruleCase{name: "the old device's clientSeq ahead of the new one's: listed after leaving (known limit)",
		steps: []step{
			{n: seed(t, ncs.BroadcasterJoin, "n1", withSeq(ahead)), want: evs(joinEvent(presence.Host, "n1", ahead, tsJoin)),
				outcome: presence.Applied},
			{n: newJoin("n2"), outcome: presence.Stale},
			{n: oldLeave("n3", ahead+1), outcome: presence.Ignored},
			{n: seed(t, ncs.BroadcasterLeave, "n4", withSeq(newSeq+10), withTs(tsJoin+60), withReason(ncs.ReasonQuit), moved),
				outcome: presence.Stale},
		},
		final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsJoin)), nil, nil)}})
	cases = append(cases, ruleCase{name: "an audience member's move: 106 with reason 5",
		steps: []step{
			{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
				outcome: presence.Applied},
			{n: seed(t, ncs.AudienceLeave, "n2", withReason(ncs.ReasonNewDevice)), outcome: presence.Ignored},
		},
		final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}})
	runRuleCases(t, cases)
}

func TestTombstones(t *testing.T) {
	t.Parallel()
	minute := presence.Rules{Retention: time.Minute, ClockSkew: time.Second} // a tombstone lasts 122 s
	one := 1
	runRuleCases(t, []ruleCase{
		{name: "a leave before its join leaves a tombstone that makes the late join stale",
			steps: []step{
				{n: seed(t, ncs.AudienceLeave, "n1"), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n2"), outcome: presence.Stale},
			}},
		{name: "a newer join after a leave brings the member back",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2"), want: evs(leaveEvent(presence.Audience, "n2", seqLeave106, 1)),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n3", withSeq(seqLeave106+1), withTs(tsLeave+5)),
					want: evs(joinEvent(presence.Host, "n3", seqLeave106+1, tsLeave+5)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsLeave+5)), nil, nil)}},
		{name: "a newer join after an early leave brings the member in",
			steps: []step{
				{n: seed(t, ncs.AudienceLeave, "n1"), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n2", withSeq(seqLeave106+1), withTs(tsLeave+5)),
					want: evs(joinEvent(presence.Audience, "n2", seqLeave106+1, tsLeave+5)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsLeave+5)), nil)}},
		{name: "a second, newer early leave moves the tombstone up",
			steps: []step{
				{n: seed(t, ncs.AudienceLeave, "n1"), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2", withSeq(seqLeave106+10)), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n3", withSeq(seqLeave106+5)), outcome: presence.Stale},
			}},
		{name: "the tombstone holds until the retention has passed",
			rules: minute,
			steps: []step{
				{n: at(seed(t, ncs.AudienceLeave, "n1"), r0, r0), outcome: presence.Applied},
				{prune: r0 + 122_000, n: at(seed(t, ncs.AudienceJoin, "n2"), r0+122_000, r0+122_000),
					outcome: presence.Stale},
			},
			channels: &one},
		// The accepted limit: once a tombstone is pruned, a join older than the leave is applied. Retention must
		// outlast Agora's retries (3 resends, within about a minute); the replay guard keeps older captures out (a
		// tombstone outlasts its window: see TestReplayedJoinFindsTheTombstone).
		{name: "after the retention the tombstone is gone and a late older join is applied",
			rules: minute,
			steps: []step{
				{n: at(seed(t, ncs.AudienceLeave, "n1"), r0, r0), outcome: presence.Applied},
				{prune: r0 + 122_001, n: at(seed(t, ncs.AudienceJoin, "n2"), r0+122_001, r0+122_001),
					want: evs(joinEvent(presence.Audience, "n2", seqJoin105, tsJoin)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "pruning keeps present members",
			rules: minute,
			steps: []step{
				{n: at(seed(t, ncs.AudienceJoin, "n1"), r0, r0),
					want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)), outcome: presence.Applied},
				{prune: r0 + 3_600_000, n: at(seed(t, ncs.AudienceJoin, "n1"), r0+3_600_000, r0+3_600_000),
					outcome: presence.Stale},
			},
			final:    []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)},
			channels: &one},
	})
}

// A signed join captured from a short visit and sent again as late as the replay guard lets it in (retention plus
// the clock skew after its notifyMs) still finds the leaver's tombstone: tombstones outlast the guard's window, also
// when Agora's clock runs ahead of Usher's, and when the captured join is a resend made after the leave (a resend
// carries a new notifyMs).
func TestReplayedJoinFindsTheTombstone(t *testing.T) {
	t.Parallel()
	const minute = int64(60_000)
	for _, c := range []struct{ skew, resent int64 }{{0, 0}, {minute, 0}, {0, minute}, {minute, minute}, {30_000, 45_000}} {
		skew := c.skew // Agora's clock ahead of Usher's
		join := at(seed(t, ncs.AudienceJoin, "join"), r0-5_000+skew, r0-5_000)
		leave := at(seed(t, ncs.AudienceLeave, "leave"), r0+skew, r0)
		if c.resent > 0 { // the join's first delivery failed; its resend, after the leave, is the one captured
			join = at(seed(t, ncs.AudienceJoin, "join"), r0+c.resent+skew, r0+c.resent)
		}
		// The captured join, byte for byte (same notifyMs), just inside the guard's 11 minutes.
		late := join.NotifyMs + 11*minute
		other := at(seed(t, ncs.AudienceJoin, "other", inChannel("other"), withUID(7)), late, late)
		replay := at(seed(t, ncs.AudienceJoin, "join"), join.NotifyMs, late)
		s := presence.NewState(presence.Rules{})
		steps := []presence.Notice{join, leave, other}
		if c.resent > 0 {
			steps = []presence.Notice{leave, join, other} // as received: the resent join finds the tombstone
		}
		for _, n := range steps {
			want := presence.Applied
			if n.NoticeID == "join" && c.resent > 0 {
				want = presence.Stale
			}
			if _, o := s.Apply(n); o != want {
				t.Fatalf("%s: %v, want %v", n.NoticeID, o, want)
			}
		}
		s.Prune(other.ReceivedMs) // as the applier does when the NCS sequence crosses a multiple of 1000
		if evs, o := s.Apply(replay); o == presence.Applied || len(evs) > 0 {
			t.Errorf("skew %d ms, resent %d ms after the leave: a captured join %d ms old was %v with events %s: the user who left is back",
				skew, c.resent, replay.ReceivedMs-replay.NotifyMs, o, jsEvents(evs))
		}
		equal(t, "roster", withoutSeq(s.View().Snapshot(chanName)), snapshot(chanName, nil, nil, nil))
	}
}

func TestPruneDropsEmptyChannels(t *testing.T) {
	t.Parallel()
	s := presence.NewState(presence.Rules{Retention: time.Minute, ClockSkew: time.Second}) // a record lasts 122 s
	if _, o := s.Apply(at(seed(t, ncs.ChannelCreate, "n1"), r0, r0)); o != presence.Applied {
		t.Fatalf("create: %v", o)
	}
	s.Prune(r0 + 122_000)
	if c, m := s.Len(); c != 1 || m != 0 {
		t.Fatalf("after Prune at the retention's end: %d channels, %d members; want 1, 0", c, m)
	}
	s.Prune(r0 + 122_001)
	if c, m := s.Len(); c != 0 || m != 0 {
		t.Fatalf("after Prune past the retention: %d channels, %d members; want 0, 0", c, m)
	}
}

func TestRoleChanges(t *testing.T) {
	t.Parallel()
	roleEvent := func(role presence.Role, noticeID string, clientSeq, ts int64, platform *int) presence.Event {
		return presence.Event{Channel: chanName, Event: presence.RoleChange, Role: role, UID: seedUID,
			Account: seedAcct, Platform: platform, ClientSeq: clientSeq, Ts: ts, NoticeID: noticeID, Source: "ncs"}
	}
	runRuleCases(t, []ruleCase{
		{name: "111 moves audience to hosts",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToBroadcaster, "n2"),
					want: evs(roleEvent(presence.Host, "n2", seqRole111, tsRole111, ptr(1))), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsJoin)), nil, nil)}},
		{name: "112 moves a host to audience",
			steps: []step{
				{n: seed(t, ncs.BroadcasterJoin, "n1"), want: evs(joinEvent(presence.Host, "n1", seqJoin103, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToAudience, "n2"),
					want: evs(roleEvent(presence.Audience, "n2", seqRole112, tsRole112, ptr(1))), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "111, 112, 111 back and forth",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToBroadcaster, "n2"),
					want: evs(roleEvent(presence.Host, "n2", seqRole111, tsRole111, ptr(1))), outcome: presence.Applied},
				{n: seed(t, ncs.RoleToAudience, "n3"),
					want: evs(roleEvent(presence.Audience, "n3", seqRole112, tsRole112, ptr(1))), outcome: presence.Applied},
				{n: seed(t, ncs.RoleToBroadcaster, "n4", withSeq(seqRole112+1)),
					want: evs(roleEvent(presence.Host, "n4", seqRole112+1, tsRole111, ptr(1))), outcome: presence.Applied},
				{n: seed(t, ncs.RoleToAudience, "n3"), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsJoin)), nil, nil)}},
		{name: "111 for a host is applied without an event, and moves the clientSeq on",
			steps: []step{
				{n: seed(t, ncs.BroadcasterJoin, "n1"), want: evs(joinEvent(presence.Host, "n1", seqJoin103, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToBroadcaster, "n2"), outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterLeave, "n3", withSeq(seqRole111-1)), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsJoin)), nil, nil)}},
		{name: "112 for audience is applied without an event",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToAudience, "n2"), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "111 for a uid not present adds it as host",
			steps: []step{{n: seed(t, ncs.RoleToBroadcaster, "n1"),
				want: evs(roleEvent(presence.Host, "n1", seqRole111, tsRole111, nil)), outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName,
				ms(presence.Member{UID: seedUID, Account: seedAcct, Since: tsRole111}), nil, nil)}},
		{name: "112 for a uid not present adds it to audience",
			steps: []step{{n: seed(t, ncs.RoleToAudience, "n1"),
				want: evs(roleEvent(presence.Audience, "n1", seqRole112, tsRole112, nil)), outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, nil,
				ms(presence.Member{UID: seedUID, Account: seedAcct, Since: tsRole112}), nil)}},
		{name: "a role change newer than a leave adds the member back (its rejoin is late)",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2"), want: evs(leaveEvent(presence.Audience, "n2", seqLeave106, 1)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToBroadcaster, "n3"),
					want: evs(roleEvent(presence.Host, "n3", seqRole111, tsRole111, nil)), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n4", withSeq(seqLeave106+1)), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName,
				ms(presence.Member{UID: seedUID, Account: seedAcct, Since: tsRole111}), nil, nil)}},
		{name: "a role change without account keeps the member's",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToBroadcaster, "n2", withAccount("")),
					want: evs(roleEvent(presence.Host, "n2", seqRole111, tsRole111, ptr(1))), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, ms(seedMember(tsJoin)), nil, nil)}},
	})
}

func TestChannelLifecycle(t *testing.T) {
	t.Parallel()
	create := func(noticeID string, ts int64) presence.Event {
		return presence.Event{Channel: chanName, Event: presence.ChannelCreate, Ts: ts, NoticeID: noticeID, Source: "ncs"}
	}
	destroy := func(noticeID string, ts int64) presence.Event {
		return presence.Event{Channel: chanName, Event: presence.ChannelDestroy, Ts: ts, NoticeID: noticeID, Source: "ncs"}
	}
	// destroyLeave is the leave a destroy implies: no clientSeq, no reason, no duration.
	destroyLeave := func(role presence.Role, u uint32, account string, platform, clientType *int, noticeID string, ts int64) presence.Event {
		return presence.Event{Channel: chanName, Event: presence.Leave, Role: role, UID: u, Account: account,
			Platform: platform, Client: clientType, Ts: ts, NoticeID: noticeID, Source: "ncs"}
	}
	lastUID, err := ncs.Decode([]byte(`{"noticeId":"n9","productId":1,"eventType":102,"notifyMs":1611566412672,` +
		`"payload":{"channelName":"test_webhook","ts":1560399999,"lastUid":12121212}}`))
	if err != nil {
		t.Fatalf("decode 102 with lastUid: %v", err)
	}
	minute := presence.Rules{Retention: time.Minute, ClockSkew: time.Second} // a tombstone lasts 122 s
	zero := 0
	runRuleCases(t, []ruleCase{
		{name: "101 emits channel.create once",
			steps: []step{
				{n: seed(t, ncs.ChannelCreate, "n1"), want: evs(create("n1", tsCreate)), outcome: presence.Applied},
				{n: seed(t, ncs.ChannelCreate, "n1"), outcome: presence.Stale},
				{n: seed(t, ncs.ChannelCreate, "n2"), outcome: presence.Stale},
				{n: seed(t, ncs.ChannelCreate, "n3", withTs(tsCreate-1)), outcome: presence.Stale},
				{n: seed(t, ncs.ChannelCreate, "n4", withTs(tsCreate+1)), want: evs(create("n4", tsCreate+1)),
					outcome: presence.Applied},
			}},
		{name: "102 makes everyone who joined before it leave, by uid, then destroys",
			steps: []step{
				{n: seed(t, ncs.ChannelCreate, "n1"), want: evs(create("n1", tsCreate)), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n2"), want: evs(joinEvent(presence.Audience, "n2", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n3", withUID(7), withAccount("host-7"),
					withPlatform(ncs.PlatformLinux, ptr(3)), withTs(tsDestroy-1)),
					want: evs(presence.Event{Channel: chanName, Event: presence.Join, Role: presence.Host, UID: 7,
						Account: "host-7", Platform: ptr(6), Client: ptr(3), ClientSeq: seqJoin103, Ts: tsDestroy - 1,
						NoticeID: "n3", Source: "ncs"}),
					outcome: presence.Applied},
				{n: seed(t, ncs.RoleToAudience, "n4", withUID(5), withAccount(""), withTs(tsDestroy-2)),
					want: evs(presence.Event{Channel: chanName, Event: presence.RoleChange, Role: presence.Audience,
						UID: 5, ClientSeq: seqRole112, Ts: tsDestroy - 2, NoticeID: "n4", Source: "ncs"}),
					outcome: presence.Applied},
				{n: seed(t, ncs.ChannelDestroy, "n5"),
					want: evs(
						destroyLeave(presence.Audience, 5, "", nil, nil, "n5", tsDestroy),
						destroyLeave(presence.Host, 7, "host-7", ptr(6), ptr(3), "n5", tsDestroy),
						destroyLeave(presence.Audience, seedUID, seedAcct, ptr(1), nil, "n5", tsDestroy),
						destroy("n5", tsDestroy),
					),
					outcome: presence.Applied},
			}},
		{name: "102 twice, or an older 102, is stale",
			steps: []step{
				{n: seed(t, ncs.ChannelDestroy, "n1"), want: evs(destroy("n1", tsDestroy)), outcome: presence.Applied},
				{n: seed(t, ncs.ChannelDestroy, "n1"), outcome: presence.Stale},
				{n: seed(t, ncs.ChannelDestroy, "n2"), outcome: presence.Stale},
				{n: seed(t, ncs.ChannelDestroy, "n3", withTs(tsDestroy-1)), outcome: presence.Stale},
			}},
		{name: "joins, leaves and role changes older than the destroy are stale after it",
			steps: []step{
				{n: seed(t, ncs.ChannelDestroy, "n1"), want: evs(destroy("n1", tsDestroy)), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n2", withTs(tsDestroy-1)), outcome: presence.Stale},
				{n: seed(t, ncs.BroadcasterJoin, "n3", withUID(7), withTs(tsDestroy-1)), outcome: presence.Stale},
				{n: seed(t, ncs.RoleToBroadcaster, "n4", withUID(8), withTs(tsDestroy-1)), outcome: presence.Stale},
				{n: seed(t, ncs.AudienceLeave, "n5", withUID(9), withTs(tsDestroy-1)), outcome: presence.Stale},
				{n: seed(t, ncs.ChannelCreate, "n6"), outcome: presence.Stale}, // the create of the life it ended
			}},
		{name: "a join newer than the destroy, after it, is applied",
			steps: []step{
				{n: seed(t, ncs.ChannelDestroy, "n1"), want: evs(destroy("n1", tsDestroy)), outcome: presence.Applied},
				{n: seed(t, ncs.ChannelCreate, "n2", withTs(tsDestroy+1)), want: evs(create("n2", tsDestroy+1)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n3", withTs(tsDestroy+1)),
					want: evs(joinEvent(presence.Audience, "n3", seqJoin105, tsDestroy+1)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsDestroy+1)), nil)}},
		{name: "a join newer than the destroy, delivered before it, survives it",
			steps: []step{
				{n: seed(t, ncs.ChannelCreate, "n1"), want: evs(create("n1", tsCreate)), outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n2", withUID(7), withAccount("host-7")),
					want: evs(presence.Event{Channel: chanName, Event: presence.Join, Role: presence.Host, UID: 7,
						Account: "host-7", Platform: ptr(1), ClientSeq: seqJoin103, Ts: tsJoin, NoticeID: "n2",
						Source: "ncs"}),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n3", withTs(tsDestroy+1)),
					want: evs(joinEvent(presence.Audience, "n3", seqJoin105, tsDestroy+1)), outcome: presence.Applied},
				{n: seed(t, ncs.ChannelDestroy, "n4"),
					want: evs(destroyLeave(presence.Host, 7, "host-7", ptr(1), nil, "n4", tsDestroy),
						destroy("n4", tsDestroy)),
					outcome: presence.Applied},
				// The leave of the member the destroy removed is older than the destroy.
				{n: seed(t, ncs.BroadcasterLeave, "n5", withUID(7), withTs(tsDestroy-1)), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsDestroy+1)), nil)}},
		{name: "a destroy older than the newest create removes stragglers but does not destroy",
			steps: []step{
				{n: seed(t, ncs.ChannelCreate, "n1"), want: evs(create("n1", tsCreate)), outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n2"), want: evs(joinEvent(presence.Audience, "n2", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.ChannelCreate, "n3", withTs(tsDestroy+100)), want: evs(create("n3", tsDestroy+100)),
					outcome: presence.Applied},
				{n: seed(t, ncs.ChannelDestroy, "n4"),
					want:    evs(destroyLeave(presence.Audience, seedUID, seedAcct, ptr(1), nil, "n4", tsDestroy)),
					outcome: presence.Applied},
				{n: seed(t, ncs.ChannelCreate, "n1"), outcome: presence.Stale},
			}},
		{name: "a destroy removes a member's entry but the member's clientSeq still holds",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.ChannelDestroy, "n2"),
					want: evs(destroyLeave(presence.Audience, seedUID, seedAcct, ptr(1), nil, "n2", tsDestroy),
						destroy("n2", tsDestroy)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceJoin, "n3", withTs(tsDestroy+1)), outcome: presence.Stale},
				{n: seed(t, ncs.AudienceJoin, "n4", withSeq(seqJoin105+1), withTs(tsDestroy+1)),
					want: evs(joinEvent(presence.Audience, "n4", seqJoin105+1, tsDestroy+1)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsDestroy+1)), nil)}},
		{name: "102 with lastUid",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: noticeOf(lastUID),
					want: evs(destroyLeave(presence.Audience, seedUID, seedAcct, ptr(1), nil, "n9", tsDestroy),
						destroy("n9", tsDestroy)),
					outcome: presence.Applied},
			}},
		{name: "a destroyed channel's record holds until the retention has passed",
			rules: minute,
			steps: []step{
				{n: at(seed(t, ncs.ChannelDestroy, "n1"), r0, r0), want: evs(destroy("n1", tsDestroy)),
					outcome: presence.Applied},
				{prune: r0 + 122_000, n: at(seed(t, ncs.AudienceJoin, "n2"), r0+122_000, r0+122_000),
					outcome: presence.Stale},
			}},
		// The accepted limit again: past the retention the channel's record is gone, and with it the destroy's ts.
		{name: "after the retention a destroyed channel's record is gone",
			rules: minute,
			steps: []step{
				{n: at(seed(t, ncs.ChannelDestroy, "n1"), r0, r0), want: evs(destroy("n1", tsDestroy)),
					outcome: presence.Applied},
				{prune: r0 + 122_001, n: at(seed(t, ncs.AudienceJoin, "n2"), r0+122_001, r0+122_001),
					want: evs(joinEvent(presence.Audience, "n2", seqJoin105, tsJoin)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "a 101 or 102 without ts is stale",
			steps: []step{
				{n: seed(t, ncs.ChannelCreate, "n1", withTs(0)), outcome: presence.Stale},
				{n: seed(t, ncs.ChannelDestroy, "n2", withTs(0)), outcome: presence.Stale},
			}},
		{name: "a replayed 102 does not empty the roster",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: at(seed(t, ncs.ChannelDestroy, "n2"), seedNotifyMs, seedNotifyMs+11*60_000+1),
					outcome: presence.Replayed},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "a replayed 101 creates no channel record",
			steps: []step{
				{n: at(seed(t, ncs.ChannelCreate, "n1"), seedNotifyMs, seedNotifyMs+11*60_000+1),
					outcome: presence.Replayed},
			},
			channels: &zero},
	})
}

func TestReplayGuard(t *testing.T) {
	t.Parallel()
	const window = int64(11 * 60_000) // DefaultRetention + DefaultClockSkew
	const custom = int64(70_000)      // 1 minute + 10 s
	rules := presence.Rules{Retention: time.Minute, ClockSkew: 10 * time.Second}
	zero, one := 0, 1
	runRuleCases(t, []ruleCase{
		{name: "notifyMs older than retention and skew is replayed",
			steps:    []step{{n: at(seed(t, ncs.AudienceJoin, "n1"), r0-window-1, r0), outcome: presence.Replayed}},
			channels: &zero},
		{name: "notifyMs at the edge of the window is applied",
			steps: []step{{n: at(seed(t, ncs.AudienceJoin, "n1"), r0-window, r0),
				want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)), outcome: presence.Applied}},
			final:    []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)},
			channels: &one},
		{name: "a replayed leave does not remove the member",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: at(seed(t, ncs.AudienceLeave, "n2"), r0-window-1, r0), outcome: presence.Replayed},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "a replayed leave leaves no tombstone",
			steps: []step{
				{n: at(seed(t, ncs.AudienceLeave, "n1"), r0-window-1, r0), outcome: presence.Replayed},
				{n: at(seed(t, ncs.AudienceJoin, "n2"), r0, r0),
					want: evs(joinEvent(presence.Audience, "n2", seqJoin105, tsJoin)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "the window follows the rules: replayed",
			rules: rules,
			steps: []step{{n: at(seed(t, ncs.AudienceJoin, "n1"), r0-custom-1, r0), outcome: presence.Replayed}}},
		{name: "the window follows the rules: applied",
			rules: rules,
			steps: []step{{n: at(seed(t, ncs.AudienceJoin, "n1"), r0-custom, r0),
				want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)), outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "notifyMs ahead of the receiver's clock is applied",
			steps: []step{{n: at(seed(t, ncs.AudienceJoin, "n1"), r0+30_000, r0),
				want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)), outcome: presence.Applied}},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
	})
}

func TestCommunicationProfile(t *testing.T) {
	t.Parallel()
	const call = "call-1"
	in := inChannel(call)
	event := func(kind presence.Kind, role presence.Role, u uint32, noticeID string, clientSeq, ts int64) presence.Event {
		e := presence.Event{Channel: call, Event: kind, Role: role, UID: u, Account: seedAcct, Platform: ptr(1),
			ClientSeq: clientSeq, Ts: ts, NoticeID: noticeID, Source: "ncs"}
		if kind == presence.Leave {
			e.Reason, e.Duration = ptr(1), ptr(int64(600))
		}
		return e
	}
	member := func(u uint32) presence.Member {
		return presence.Member{UID: u, Account: seedAcct, Platform: ptr(1), Since: tsJoin}
	}
	runRuleCases(t, []ruleCase{
		{name: "107 and 108 from older SDKs",
			steps: []step{
				{n: seed(t, ncs.CommunicationJoin, "n1", in),
					want: evs(event(presence.Join, presence.User, seedUID, "n1", seqJoin105, tsJoin)), outcome: presence.Applied},
				{n: seed(t, ncs.CommunicationJoin, "n2", in, withUID(2)),
					want: evs(event(presence.Join, presence.User, 2, "n2", seqJoin105, tsJoin)), outcome: presence.Applied},
				{n: seed(t, ncs.CommunicationJoin, "n1", in), outcome: presence.Stale},
				{n: seed(t, ncs.CommunicationLeave, "n3", in),
					want: evs(event(presence.Leave, presence.User, seedUID, "n3", seqLeave106, tsLeave)), outcome: presence.Applied},
				{n: seed(t, ncs.CommunicationJoin, "n1", in), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(call, nil, nil, ms(member(2)))}},
		{name: "103 and 104 from newer SDKs in a communication channel",
			steps: []step{
				{n: seed(t, ncs.BroadcasterJoin, "n1", in),
					want: evs(event(presence.Join, presence.Host, seedUID, "n1", seqJoin103, tsJoin)), outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n2", in, withUID(2)),
					want: evs(event(presence.Join, presence.Host, 2, "n2", seqJoin103, tsJoin)), outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterLeave, "n3", in),
					want: evs(event(presence.Leave, presence.Host, seedUID, "n3", seqLeave104, tsLeave)), outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n1", in), outcome: presence.Stale},
			},
			final: []presence.Snapshot{snapshot(call, ms(member(2)), nil, nil)}},
		{name: "both SDKs in one channel",
			steps: []step{
				{n: seed(t, ncs.CommunicationJoin, "n1", in),
					want: evs(event(presence.Join, presence.User, seedUID, "n1", seqJoin105, tsJoin)), outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterJoin, "n2", in, withUID(2)),
					want: evs(event(presence.Join, presence.Host, 2, "n2", seqJoin103, tsJoin)), outcome: presence.Applied},
				{n: seed(t, ncs.BroadcasterLeave, "n3", in, withUID(2)),
					want: evs(event(presence.Leave, presence.Host, 2, "n3", seqLeave104, tsLeave)), outcome: presence.Applied},
			},
			final: []presence.Snapshot{snapshot(call, nil, nil, ms(member(seedUID)))}},
	})
}

func TestIgnored(t *testing.T) {
	t.Parallel()
	testVector, err := ncs.Decode([]byte(`{"eventMs":1560408533119,"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e-53f411c2761f","notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}`))
	if err != nil {
		t.Fatalf("decode the test notification: %v", err)
	}
	zero := 0
	runRuleCases(t, []ruleCase{
		{name: "105 without uid", steps: []step{{n: seed(t, ncs.AudienceJoin, "n1", withUID(0)), outcome: presence.Ignored}},
			channels: &zero},
		{name: "105 without clientSeq", steps: []step{{n: seed(t, ncs.AudienceJoin, "n1", withSeq(0)), outcome: presence.Ignored}},
			channels: &zero},
		{name: "106 with a negative clientSeq", steps: []step{{n: seed(t, ncs.AudienceLeave, "n1", withSeq(-5)), outcome: presence.Ignored}},
			channels: &zero},
		{name: "111 without uid", steps: []step{{n: seed(t, ncs.RoleToBroadcaster, "n1", withUID(0)), outcome: presence.Ignored}},
			channels: &zero},
		{name: "a leave without clientSeq does not remove the member",
			steps: []step{
				{n: seed(t, ncs.AudienceJoin, "n1"), want: evs(joinEvent(presence.Audience, "n1", seqJoin105, tsJoin)),
					outcome: presence.Applied},
				{n: seed(t, ncs.AudienceLeave, "n2", withSeq(0)), outcome: presence.Ignored},
			},
			final: []presence.Snapshot{snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)}},
		{name: "a channel event type without its payload",
			steps:    []step{{n: presence.Notice{NoticeID: "n1", Type: ncs.AudienceJoin, NotifyMs: r0, ReceivedMs: r0}, outcome: presence.Ignored}},
			channels: &zero},
		{name: "eventType 10, Agora's test notification", steps: []step{{n: noticeOf(testVector), outcome: presence.Ignored}},
			channels: &zero},
		{name: "eventType 10 with a channel payload",
			steps: []step{{n: func() presence.Notice {
				n := seed(t, ncs.AudienceJoin, "n1")
				n.Type = 10
				return n
			}(), outcome: presence.Ignored}},
			channels: &zero},
		{name: "an unknown event type with a channel payload",
			steps: []step{{n: func() presence.Notice {
				n := seed(t, ncs.AudienceJoin, "n1")
				n.Type = 109
				return n
			}(), outcome: presence.Ignored}},
			channels: &zero},
	})
}

func TestOutcomeString(t *testing.T) {
	t.Parallel()
	for o, want := range map[presence.Outcome]string{presence.Applied: "applied", presence.Stale: "stale",
		presence.Replayed: "replayed", presence.Ignored: "ignored"} {
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), got, want)
		}
	}
}

func TestStoredSetsSnapshotSeq(t *testing.T) {
	t.Parallel()
	s := presence.NewState(presence.Rules{})
	s.Apply(seed(t, ncs.AudienceJoin, "n1"))
	s.Stored(chanName, 42)
	s.Stored(chanName, 41) // an older seq never moves it back
	s.Stored("unknown", 7) // a channel the state does not hold is not created
	v := s.View()
	want := snapshot(chanName, nil, ms(seedMember(tsJoin)), nil)
	want.Seq = 42
	equal(t, "snapshot", v.Snapshot(chanName), want)
	equal(t, "channels", v.Channels(), []presence.Summary{{Channel: chanName, Seq: 42, Counts: presence.Counts{Audience: 1}}})
	if c, m := s.Len(); c != 1 || m != 1 {
		t.Errorf("Len = %d channels, %d members; want 1, 1", c, m)
	}
}
