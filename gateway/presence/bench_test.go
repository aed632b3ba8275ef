package presence_test

import (
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

// BenchmarkApply measures State.Apply over a realistic mix: the simulator's stream for 20 channels tending towards
// 2 hosts and 200 audience (a quarter of them communication-profile channels), with its default delivery faults
// (duplicates, resends, reordering), decoded as the applier decodes them. Decoding is not timed.
func BenchmarkApply(b *testing.B) {
	gen, err := sim.New(sim.Config{Channels: 20, Hosts: 2, Audience: 200, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var ds []sim.Delivery
	for len(ds) < 200_000 {
		now = now.Add(5 * time.Millisecond)
		if d, ok := gen.Next(now); ok {
			ds = append(ds, d)
		}
	}
	notices := simNotices(b, append(ds, gen.Flush(now)...))
	for i := range notices {
		notices[i].ReceivedMs = notices[i].NotifyMs
	}

	s := presence.NewState(presence.Rules{})
	outcomes := map[presence.Outcome]int{}
	n, i := 0, 0
	for b.Loop() {
		if i == len(notices) { // the stream is spent: start it again on a new state
			s, i = presence.NewState(presence.Rules{}), 0
		}
		_, o := s.Apply(notices[i])
		outcomes[o]++
		i++
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "notices/s")
	b.ReportMetric(100*float64(outcomes[presence.Stale])/float64(n), "%stale")
}

// bigAudience returns the events of n audience members joining one channel, with the simulator's account and
// platform mix: 4 in 10 accounts "user-<base 36>", the rest the uid in decimal; Android, iOS, Web mostly, some
// Linux recorders with a clientType.
func bigAudience(n int) []presence.Event {
	out := make([]presence.Event, n)
	for i := range out {
		u := uint32(100_000_000 + i*7919)
		account := strconv.FormatUint(uint64(u), 10)
		if i%10 < 4 {
			account = "user-" + strconv.FormatUint(uint64(u)*2654435761%(1<<32), 36)
		}
		p := []int{1, 1, 1, 2, 2, 7, 5, 8, 0, 6}[i%10]
		e := presence.Event{Seq: uint64(i + 1), Channel: "show-1", Event: presence.Join, Role: presence.Audience, UID: u,
			Account: account, Platform: &p, ClientSeq: 1_625_051_030_000 + int64(i), Ts: 1_560_396_843 + int64(i/50),
			NoticeID: "n", Source: "ncs"}
		if p == 6 {
			e.Client = ptr(10)
		}
		out[i] = e
	}
	return out
}

// BenchmarkSnapshot100k measures serving a channel of 100,000 audience members: View.Snapshot alone, its Copy (what
// runs under the live view's lock), and Snapshot plus its JSON encoding, as REST and WebSocket clients get it.
func BenchmarkSnapshot100k(b *testing.B) {
	const n = 100_000
	v := presence.NewView()
	for _, e := range bigAudience(n) {
		v.Apply(e)
	}
	if c := v.Snapshot("show-1").Counts.Audience; c != n {
		b.Fatalf("audience %d, want %d", c, n)
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			if s := v.Snapshot("show-1"); len(s.Audience) != n {
				b.Fatal(len(s.Audience))
			}
		}
	})
	b.Run("copy", func(b *testing.B) { // the part a reader holds the view's lock for
		for b.Loop() {
			if s := v.Copy("show-1"); len(s.Audience) != n {
				b.Fatal(len(s.Audience))
			}
		}
	})
	b.Run("snapshot+json", func(b *testing.B) {
		size := 0
		for b.Loop() {
			data, err := json.Marshal(v.Snapshot("show-1"))
			if err != nil {
				b.Fatal(err)
			}
			size = len(data)
		}
		b.ReportMetric(float64(size), "bytes/snapshot")
	})
}

// BenchmarkMemory100k measures the memory a channel of 100,000 audience members holds: in the applier's State
// (members with their clientSeq; notices decoded one by one, as the applier does), and in a reader's View. The
// figure that matters is B/member; the time per op is that of building the roster, with two garbage collections.
func BenchmarkMemory100k(b *testing.B) {
	const n = 100_000
	b.Run("State", func(b *testing.B) {
		var total uint64
		runs := 0
		for b.Loop() {
			events := bigAudience(n)
			before := testutil.HeapInUse()
			s := presence.NewState(presence.Rules{})
			for i, e := range events {
				// A fresh payload per notice, as ncs.Decode makes it.
				ev := &ncs.ChannelEvent{ChannelName: e.Channel, UID: e.UID, ClientSeq: e.ClientSeq, Ts: e.Ts,
					Account: string([]byte(e.Account)), Platform: ptr(ncs.Platform(*e.Platform))}
				if e.Client != nil {
					ev.ClientType = ptr(*e.Client)
				}
				s.Apply(presence.Notice{NoticeID: strconv.Itoa(i), Type: ncs.AudienceJoin, Event: ev,
					NotifyMs: seedNotifyMs, ReceivedMs: seedNotifyMs})
			}
			after := testutil.HeapInUse()
			if _, m := s.Len(); m != n {
				b.Fatalf("%d members, want %d", m, n)
			}
			runtime.KeepAlive(s)
			runtime.KeepAlive(events) // allocated before the first reading: it must not be freed before the second
			total += after - before
			runs++
		}
		b.ReportMetric(float64(total)/float64(runs)/n, "B/member")
	})
	b.Run("View", func(b *testing.B) {
		var total uint64
		runs := 0
		for b.Loop() {
			events := bigAudience(n)
			before := testutil.HeapInUse()
			v := presence.NewView()
			for _, e := range events {
				e.Account = string([]byte(e.Account)) // its own copy, as a decoded event has
				e.Platform = ptr(*e.Platform)
				if e.Client != nil {
					e.Client = ptr(*e.Client)
				}
				v.Apply(e)
			}
			after := testutil.HeapInUse()
			if c := v.Snapshot("show-1").Counts.Audience; c != n {
				b.Fatalf("audience %d, want %d", c, n)
			}
			runtime.KeepAlive(v)
			runtime.KeepAlive(events) // allocated before the first reading: it must not be freed before the second
			total += after - before
			runs++
		}
		b.ReportMetric(float64(total)/float64(runs)/n, "B/member")
	})
}

// BenchmarkPrune1M measures one Prune of a state holding 1,000,000 tombstones (10,000 channels of 100) of which
// none has expired yet: the applier prunes every 1,000 notifications, so this is its steady cost under heavy churn.
func BenchmarkPrune1M(b *testing.B) {
	var buf []byte
	buf = append(buf, `{"channels":[`...)
	for c := range 10_000 {
		if c > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"name":"c`+strconv.Itoa(c)+`","touchedMs":2000000,"tombs":[`...)
		for u := range 100 {
			if u > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, `{"uid":`+strconv.Itoa(u+1)+`,"clientSeq":1,"atMs":`+strconv.Itoa(1_000_000+c*100+u)+`}`...)
		}
		buf = append(buf, `]}`...)
	}
	buf = append(buf, `]}`...)
	s := presence.NewState(presence.Rules{Retention: time.Minute})
	if err := json.Unmarshal(buf, s); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s.Prune(1_000_000 + 60_000) // cutoff 1,000,000: nothing expired
	}
	if channels, _ := s.Len(); channels != 10_000 {
		b.Fatalf("%d channels left", channels)
	}
}

// BenchmarkFreeze100k measures what a checkpoint costs the applier's own path for a channel of 100,000 members that
// changes while the checkpoint is being written: Freeze, then the first change to that channel, which copies it.
func BenchmarkFreeze100k(b *testing.B) {
	var buf []byte
	buf = append(buf, `{"channels":[{"name":"show-1","seq":1,"members":[`...)
	for u := range 100_000 {
		if u > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"uid":`+strconv.Itoa(u+1)+`,"account":"a`+strconv.Itoa(u)+`","since":1,"role":"audience","clientSeq":1}`...)
	}
	buf = append(buf, `]}]}`...)
	s := presence.NewState(presence.Rules{})
	if err := json.Unmarshal(buf, s); err != nil {
		b.Fatal(err)
	}
	seq := uint64(1)
	for b.Loop() {
		f := s.Freeze()
		seq++
		s.Stored("show-1", seq) // the first change while frozen: the channel is copied
		f.Release()
	}
}

// BenchmarkChannels100k measures CopyChannels over 100,000 channels of one member each: the part of GET
// /v1/channels that holds the view's read lock (which the view's goroutine, that every event passes through, waits
// for): a copy of them all, of the one matching a name, and of the busiest 200. Run:
//
//	go test -run '^$' -bench BenchmarkChannels100k ./gateway/presence/
func BenchmarkChannels100k(b *testing.B) {
	const n = 100_000
	v := presence.NewView()
	for i := range n {
		v.Apply(presence.Event{Seq: uint64(i + 1), Channel: "room-" + strconv.Itoa(i), Event: presence.Join,
			Role: presence.Audience, UID: 1, ClientSeq: 1, Ts: 1, NoticeID: "n", Source: "ncs"})
	}
	b.Run("copy", func(b *testing.B) {
		for b.Loop() {
			if s, _ := v.CopyChannels("", 0, presence.ByName); len(s) != n {
				b.Fatal(len(s))
			}
		}
	})
	b.Run("copy matching", func(b *testing.B) {
		for b.Loop() {
			if s, _ := v.CopyChannels("room-99999", 0, presence.ByName); len(s) != 1 {
				b.Fatal(len(s))
			}
		}
	})
	b.Run("busiest200", func(b *testing.B) {
		for b.Loop() {
			if s, _ := v.CopyChannels("", 200, presence.BySize); len(s) != 200 {
				b.Fatal(len(s))
			}
		}
	})
}

// BenchmarkContainsFoldWorst measures ContainsFold at its worst: a name of 64 "a" and a q of 31 "a" and a "b",
// which matches at no place but only at its last byte. GET /v1/channels?q= makes one call a channel, under the
// view's read lock: 100,000 such channels cost 100,000 times this. Run:
//
//	go test -run '^$' -bench BenchmarkContainsFold ./gateway/presence/
func BenchmarkContainsFoldWorst(b *testing.B) {
	name, q := strings.Repeat("a", 64), strings.Repeat("A", 31)+"b"
	for b.Loop() {
		if presence.ContainsFold(name, q) {
			b.Fatal("matched")
		}
	}
}

// BenchmarkContainsFoldTypical is ContainsFold of a typical name and q, which differ at most places at once.
func BenchmarkContainsFoldTypical(b *testing.B) {
	name, q := "Live-Show_2026-11-26_room-4711", "room-47"
	for b.Loop() {
		if !presence.ContainsFold(name, q) {
			b.Fatal("no match")
		}
	}
}
