package gateway

import (
	"math"
	"sort"

	"github.com/usher-presence/usher/gateway/presence"
)

// DefaultRecentEvents is how many of the latest presence events each instance's view keeps in memory (Config's
// RecentEvents), to answer resumes without reading USHER_PRESENCE.
const DefaultRecentEvents = 32768

// recentEvents keeps the latest events the view applied, of every channel, in stream order, so that a client that
// resumes after a short absence (a network blip, another instance's restart) gets what it missed from memory: a
// crowd of such clients reconnecting at once would otherwise make thousands of reads of USHER_PRESENCE, four
// JetStream requests each. It holds every event applied after from: when it is full, the oldest goes and from
// moves up to it. Guarded by the view's lock.
type recentEvents struct {
	buf   []presence.Event // a ring: the oldest at start
	start int
	n     int
	from  uint64
}

// newRecentEvents returns an empty ring of size events that holds nothing until reset says from where.
func newRecentEvents(size int) *recentEvents {
	return &recentEvents{buf: make([]presence.Event, max(size, 1)), from: math.MaxUint64}
}

// reset empties the ring: the view (re)loaded its rosters at seq, and holds every event after it from now on.
func (r *recentEvents) reset(seq uint64) {
	clear(r.buf)
	r.start, r.n, r.from = 0, 0, seq
}

// add keeps e, the next event the view applied.
func (r *recentEvents) add(e presence.Event) {
	if r.n == len(r.buf) {
		r.from = r.buf[r.start].Seq
		r.buf[r.start] = presence.Event{}
		r.start = (r.start + 1) % len(r.buf)
		r.n--
	}
	r.buf[(r.start+r.n)%len(r.buf)] = e
	r.n++
}

// at is the i-th event kept, oldest first.
func (r *recentEvents) at(i int) *presence.Event { return &r.buf[(r.start+i)%len(r.buf)] }

// channelEvents returns channel's events with since < seq <= until, oldest first (the first limit of them, when limit
// is above 0), when it holds them all: since is at or after from, and until at or before the view's last event (as
// the channel's seq in the view always is).
func (r *recentEvents) channelEvents(channel string, since, until uint64, limit int) ([]presence.Event, bool) {
	if until <= since {
		return nil, true
	}
	if since < r.from {
		return nil, false
	}
	var out []presence.Event
	for i := sort.Search(r.n, func(i int) bool { return r.at(i).Seq > since }); i < r.n; i++ {
		e := r.at(i)
		if e.Seq > until {
			break
		}
		if e.Channel == channel {
			if limit > 0 && len(out) == limit {
				break
			}
			out = append(out, *e)
		}
	}
	return out, true
}
