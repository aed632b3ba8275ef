package presence

import "container/heap"

// expiry is a tombstone's time of death, for Prune: the tombstone of uid in channel, set at atMs. An entry whose
// tombstone was replaced or removed since is stale, and Prune skips it.
type expiry struct {
	atMs    int64
	channel string
	uid     uint32
}

// expiries is a min-heap of expiry by atMs, so that Prune visits only what expired rather than every tombstone.
type expiries []expiry

func (h expiries) Len() int           { return len(h) }
func (h expiries) Less(i, j int) bool { return h[i].atMs < h[j].atMs }
func (h expiries) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiries) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiries) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// tombstoned records that the tombstone of uid in channel was set at atMs.
func (s *State) tombstoned(channel string, uid uint32, atMs int64) {
	heap.Push(&s.expiries, expiry{atMs: atMs, channel: channel, uid: uid})
}

// pruneTombs drops every tombstone set before cutoff: exactly those, whatever the order they were set in, so that
// a state restored from a checkpoint prunes as the original did.
func (s *State) pruneTombs(cutoff int64) {
	for len(s.expiries) > 0 && s.expiries[0].atMs < cutoff {
		x := heap.Pop(&s.expiries).(expiry)
		ch := s.channels[x.channel]
		if ch == nil {
			continue
		}
		if t, ok := ch.tombs[x.uid]; ok && t.atMs < cutoff {
			delete(s.writable(x.channel, ch).tombs, x.uid)
		}
	}
}
