package gateway

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/usher-presence/usher/gateway/presence"
)

func TestRecentEvents(t *testing.T) {
	r := newRecentEvents(4)
	r.reset(10)
	for seq := uint64(11); seq <= 16; seq++ { // 11, 13, 15 of "a"; 12, 14, 16 of "b"
		ch := "a"
		if seq%2 == 0 {
			ch = "b"
		}
		r.add(presence.Event{Seq: seq, Channel: ch})
	}
	seqs := func(channel string, since, until uint64) ([]uint64, bool) {
		events, ok := r.channelEvents(channel, since, until, 0)
		var out []uint64
		for _, e := range events {
			if e.Channel != channel {
				t.Fatalf("%s's events hold one of %s", channel, e.Channel)
			}
			out = append(out, e.Seq)
		}
		return out, ok
	}
	for _, tc := range []struct {
		channel      string
		since, until uint64
		want         []uint64
		ok           bool
	}{
		{"a", 12, 16, []uint64{13, 15}, true}, // 11 and 12 went: every event after 12 is kept
		{"a", 13, 16, []uint64{15}, true},
		{"b", 12, 14, []uint64{14}, true}, // not past until
		{"b", 12, 16, []uint64{14, 16}, true},
		{"a", 11, 15, nil, false}, // 12 went, of a channel it cannot tell
		{"a", 0, 15, nil, false},
		{"a", 16, 15, nil, true}, // nothing after since: nothing to replay, kept or not
		{"a", 3, 3, nil, true},
		{"c", 12, 16, nil, true}, // another channel's: none kept, none missed
	} {
		got, ok := seqs(tc.channel, tc.since, tc.until)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("%s after %d up to %d: %v %v, want %v %v", tc.channel, tc.since, tc.until, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := r.channelEvents("a", 12, 16, 1); !ok || len(got) != 1 || got[0].Seq != 13 {
		t.Errorf("the first of a's events after 12: %v %v, want 13", got, ok)
	}
	r.reset(20) // rosters loaded again, at 20
	if _, ok := r.channelEvents("a", 12, 21, 0); ok {
		t.Error("events from before the rosters were loaded again")
	}
	r.add(presence.Event{Seq: 21, Channel: "a"})
	if got, ok := seqs("a", 20, 21); !ok || !slices.Equal(got, []uint64{21}) {
		t.Errorf("after a reset: %v %v", got, ok)
	}
}

// BenchmarkRecentWorstCase measures the longest answer from the view's memory of the latest events (under the
// view's read lock): a resume from the oldest event kept, the memory full of 1,000 channels' events. Run:
//
//	go test -run '^$' -bench BenchmarkRecentWorstCase ./gateway/
func BenchmarkRecentWorstCase(b *testing.B) {
	r := newRecentEvents(DefaultRecentEvents)
	r.reset(0)
	for seq := uint64(1); seq <= DefaultRecentEvents; seq++ {
		r.add(presence.Event{Seq: seq, Channel: fmt.Sprintf("channel-%d", seq%1000)})
	}
	for b.Loop() {
		if events, ok := r.channelEvents("channel-7", 0, DefaultRecentEvents, 0); !ok || len(events) != (DefaultRecentEvents-7)/1000+1 {
			b.Fatalf("%d events, %v", len(events), ok)
		}
	}
}

// BenchmarkRecentMemory measures the heap the view's memory of the latest events takes when full, per event: events
// decoded from JSON as the view decodes them (a join with a 20-character account, 40-character noticeId). Run:
//
//	go test -run '^$' -bench BenchmarkRecentMemory -benchtime 3x ./gateway/
func BenchmarkRecentMemory(b *testing.B) {
	raw := make([][]byte, DefaultRecentEvents)
	for i := range raw {
		e := presence.Event{Seq: uint64(i + 1), Channel: fmt.Sprintf("channel-%d", i%1000), Event: presence.Join,
			Role: presence.Audience, UID: uint32(i), Account: fmt.Sprintf("account-%013d", i), Platform: new(1), Client: new(3),
			ClientSeq: int64(i), Ts: 1795668443, NoticeID: fmt.Sprintf("%040d", i), Source: "ncs", NotifyMs: 1795668443636}
		raw[i], _ = json.Marshal(e)
	}
	var perEvent float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := newRecentEvents(DefaultRecentEvents)
		r.reset(0)
		for _, m := range raw {
			var e presence.Event
			if err := json.Unmarshal(m, &e); err != nil {
				b.Fatal(err)
			}
			r.add(e)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perEvent = float64(after.HeapAlloc-before.HeapAlloc) / DefaultRecentEvents
		runtime.KeepAlive(r)
	}
	b.ReportMetric(perEvent, "B/event")
	b.ReportMetric(perEvent*DefaultRecentEvents/(1<<20), "MiB")
}
