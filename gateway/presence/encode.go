package presence

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The checkpoint form of a State: everything Apply depends on, so that a State restored from it decides exactly as
// the original would.
type stateJSON struct {
	Channels []channelJSON `json:"channels"`
}

type channelJSON struct {
	Name        string       `json:"name"`
	Seq         uint64       `json:"seq,omitempty"`
	CreatedTs   int64        `json:"createdTs,omitempty"`
	DestroyedTs int64        `json:"destroyedTs,omitempty"`
	TouchedMs   int64        `json:"touchedMs,omitempty"`
	Members     []memberJSON `json:"members,omitempty"`
	Tombs       []tombJSON   `json:"tombs,omitempty"`
}

type memberJSON struct {
	Member
	Role      Role  `json:"role"`
	ClientSeq int64 `json:"clientSeq"`
	LastTs    int64 `json:"lastTs,omitempty"`
}

type tombJSON struct {
	UID       uint32 `json:"uid"`
	ClientSeq int64  `json:"clientSeq"`
	AtMs      int64  `json:"atMs"`
}

// MarshalJSON encodes the state for a checkpoint, deterministically (channels by name, members and tombstones by
// uid).
func (s *State) MarshalJSON() ([]byte, error) {
	names := make([]string, 0, len(s.channels))
	channels := make([]*channelState, 0, len(s.channels))
	for name, ch := range s.channels {
		names = append(names, name)
		channels = append(channels, ch)
	}
	return encodeChannels(names, channels)
}

// encodeChannels encodes the channels called names (in any order) as MarshalJSON does. It only reads them.
func encodeChannels(names []string, channels []*channelState) ([]byte, error) {
	out := stateJSON{Channels: make([]channelJSON, 0, len(channels))}
	for i, ch := range channels {
		c := channelJSON{Name: names[i], Seq: ch.seq, CreatedTs: ch.createdTs, DestroyedTs: ch.destroyedTs, TouchedMs: ch.touchedMs}
		for _, uid := range sortedUIDs(ch.members) {
			m := ch.members[uid]
			c.Members = append(c.Members, memberJSON{Member: m.Member, Role: m.role.Role(), ClientSeq: m.clientSeq, LastTs: m.lastTs})
		}
		for _, uid := range sortedUIDs(ch.tombs) {
			t := ch.tombs[uid]
			c.Tombs = append(c.Tombs, tombJSON{UID: uid, ClientSeq: t.clientSeq, AtMs: t.atMs})
		}
		out.Channels = append(out.Channels, c)
	}
	slices.SortFunc(out.Channels, func(a, b channelJSON) int { return strings.Compare(a.Name, b.Name) })
	return json.Marshal(out)
}

// UnmarshalJSON replaces the state's contents with a checkpoint's; the state keeps its Rules. On error the state is
// unchanged.
func (s *State) UnmarshalJSON(b []byte) error {
	var in stateJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("decode presence state: %w", err)
	}
	channels := make(map[string]*channelState, len(in.Channels))
	if s.rules == (Rules{}) {
		s.rules = Rules{}.WithDefaults()
	}
	for _, c := range in.Channels {
		ch := &channelState{
			name: c.Name, members: make(map[uint32]*entry, len(c.Members)), tombs: make(map[uint32]tomb, len(c.Tombs)),
			createdTs: c.CreatedTs, destroyedTs: c.DestroyedTs, touchedMs: c.TouchedMs, seq: c.Seq, gen: s.gen,
		}
		for _, m := range c.Members {
			switch m.Role {
			case Host, Audience, User:
			default:
				return fmt.Errorf("decode presence state: channel %q uid %d has role %q", c.Name, m.UID, m.Role)
			}
			ch.members[m.UID] = &entry{Member: m.Member, role: codeOf(m.Role), clientSeq: m.ClientSeq, lastTs: m.LastTs, gen: ch.gen}
		}
		for _, t := range c.Tombs {
			ch.tombs[t.UID] = tomb{clientSeq: t.ClientSeq, atMs: t.AtMs}
		}
		channels[c.Name] = ch
	}
	s.channels = channels // only once all of it decoded: a bad checkpoint leaves the state as it was
	s.expiries = s.expiries[:0]
	for name, ch := range channels {
		for uid, t := range ch.tombs {
			s.expiries = append(s.expiries, expiry{atMs: t.atMs, channel: name, uid: uid})
		}
	}
	heap.Init(&s.expiries)
	return nil
}
