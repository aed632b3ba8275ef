package presence

import (
	"maps"
	"slices"
	"sync/atomic"
)

// Frozen is a State frozen at one moment, for encoding a checkpoint on another goroutine while the State goes on
// being applied. Taking one costs a slice of pointers, not a copy: while a Frozen is held, the State copies a
// channel (its maps of members and tombstones; a member's entry only when a role change alters it) the first time
// it changes it, so what a Frozen reads never changes under it. Release it when done; from then on the State changes its channels in place again.
//
// MarshalJSON and Release may be called from any goroutine; the State itself stays single-goroutine.
type Frozen struct {
	names    []string
	channels []*channelState
	released atomic.Bool
}

// Freeze freezes the state as it is now. Several may be held at once.
func (s *State) Freeze() *Frozen {
	s.holding() // forget the released ones
	s.gen++
	p := &Frozen{names: make([]string, 0, len(s.channels)), channels: make([]*channelState, 0, len(s.channels))}
	for name, ch := range s.channels {
		p.names = append(p.names, name)
		p.channels = append(p.channels, ch)
	}
	s.held = append(s.held, p)
	return p
}

// MarshalJSON encodes the state as State.MarshalJSON encoded it at the moment of Freeze.
func (p *Frozen) MarshalJSON() ([]byte, error) {
	return encodeChannels(p.names, p.channels)
}

// Release tells the State this Frozen is no longer read. Call it once MarshalJSON has returned; the Frozen lets go
// of the channels it holds at once, even if the State is not changed for a while.
func (p *Frozen) Release() {
	p.names, p.channels = nil, nil
	p.released.Store(true)
}

// writable returns ch, the channel called name, ready to be changed: a copy, put in its place, when a held Frozen
// may be reading it.
func (s *State) writable(name string, ch *channelState) *channelState {
	if ch.gen == s.gen || !s.holding() {
		return ch
	}
	// The members map is copied, not its entries: an entry is changed in place only by a role change, which copies
	// it first when it is older than the channel copy (entry.gen).
	c := &channelState{
		name: ch.name, members: maps.Clone(ch.members), tombs: maps.Clone(ch.tombs),
		createdTs: ch.createdTs, destroyedTs: ch.destroyedTs, touchedMs: ch.touchedMs, seq: ch.seq, gen: s.gen,
	}
	if c.members == nil {
		c.members = map[uint32]*entry{}
	}
	if c.tombs == nil {
		c.tombs = map[uint32]tomb{}
	}
	s.channels[name] = c
	return c
}

// holding reports whether a Frozen is still held, forgetting released ones.
func (s *State) holding() bool {
	s.held = slices.DeleteFunc(s.held, func(p *Frozen) bool { return p.released.Load() })
	return len(s.held) > 0
}
