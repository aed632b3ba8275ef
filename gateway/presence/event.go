// Package presence is Usher's roster state machine: it turns RTC channel notifications into rosters (hosts,
// audience, communication-profile users) and into the ordered stream of effective changes that clients see,
// following Agora's ordering rules. It is pure: no I/O, no clock but the times it is given.
//
// Two folds live here. State is the applier's: it takes notifications in any order, with duplicates, and returns
// only effective changes (Events). View is the reader's: it folds the resulting Events, in stream order, into
// rosters that can be served as snapshots. A View fed every Event that State returned holds the same members as
// State.
package presence

import (
	"github.com/usher-presence/usher/gateway/ncs"
)

// Role is a member's role in a channel.
type Role string

// Roles. User is a member of a communication-profile channel (events 107/108).
const (
	Host     Role = "host"
	Audience Role = "audience"
	User     Role = "user"
)

// Kind is what an Event says happened.
type Kind string

// Event kinds.
const (
	ChannelCreate  Kind = "channel.create"
	ChannelDestroy Kind = "channel.destroy"
	Join           Kind = "join"
	Leave          Kind = "leave"
	RoleChange     Kind = "role.change"
)

// SourceNCS marks events that come from Agora's Notifications service.
const SourceNCS = "ncs"

// Event is one effective presence change: the JSON object clients receive, the same on the stream, over REST and
// over WebSocket. Seq is the USHER_PRESENCE stream sequence, assigned when the event is stored.
//
// A join means "uid is now in the channel with this role", replacing any earlier entry of the uid (a rejoin whose
// leave was lost, or arrives late, is a join too). A leave carries the role the member had. A role.change carries
// the new role, also for a uid that was not in the roster: clients add it.
type Event struct {
	Seq       uint64 `json:"seq"`
	Channel   string `json:"channel"`
	Event     Kind   `json:"event"`
	Role      Role   `json:"role,omitempty"`
	UID       uint32 `json:"uid,omitempty"`
	Account   string `json:"account,omitempty"`
	Platform  *int   `json:"platform,omitempty"`
	Client    *int   `json:"clientType,omitempty"`
	ClientSeq int64  `json:"clientSeq,omitempty"`
	Ts        int64  `json:"ts,omitempty"`
	Reason    *int   `json:"reason,omitempty"`
	Duration  *int64 `json:"duration,omitempty"`
	NoticeID  string `json:"noticeId"`
	Source    string `json:"source"`
	// NotifyMs is when Agora sent the notification (its notifyMs, Unix milliseconds): what end-to-end latency is
	// measured from.
	NotifyMs int64 `json:"notifyMs,omitempty"`
}

// Member is one user in a roster, as snapshots show it.
type Member struct {
	UID        uint32 `json:"uid"`
	Account    string `json:"account,omitempty"`
	Platform   *int   `json:"platform,omitempty"`
	ClientType *int   `json:"clientType,omitempty"`
	// Since is the Unix time, in seconds, of the event that put the member in its current entry (its join, or a
	// role change that added it).
	Since int64 `json:"since"`
}

// roleOf is the role a join or role-change event gives.
func roleOf(t ncs.EventType) Role {
	switch t {
	case ncs.BroadcasterJoin, ncs.RoleToBroadcaster:
		return Host
	case ncs.AudienceJoin, ncs.RoleToAudience:
		return Audience
	case ncs.CommunicationJoin:
		return User
	}
	return ""
}

func platformPtr(p *ncs.Platform) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}
