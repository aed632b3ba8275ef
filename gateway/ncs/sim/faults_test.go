package sim

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
)

func TestFaults(t *testing.T) {
	t.Parallel()
	faults := Faults{Duplicate: 0.05, Resend: 0.04, ResendNewID: 0.03, Reorder: 0.06, MaxHold: 5}
	g := newGen(t, Config{Channels: 10, Seed: 5, Faults: &faults})
	c := newClock(50 * time.Millisecond)
	ds := collect(t, g, c, 22000)
	ds = append(ds, g.Flush(c.now())...)
	fs := firsts(t, ds) // fails unless every original was delivered exactly once as a first delivery

	kinds := map[Kind]int{}
	for _, d := range ds {
		kinds[d.Kind]++
	}
	n := float64(len(fs))
	for _, k := range []struct {
		kind Kind
		p    float64
	}{{Duplicate, faults.Duplicate}, {Resend, faults.Resend}, {ResendNewID, faults.ResendNewID}, {Delayed, faults.Reorder}} {
		want := k.p * n
		if got := float64(kinds[k.kind]); math.Abs(got-want) > 0.2*want {
			t.Errorf("%d %v deliveries of %d originals, want about %.0f", kinds[k.kind], k.kind, len(fs), want)
		}
	}

	originalIDs := map[string]bool{}
	for _, f := range fs {
		originalIDs[f.Notification.NoticeID] = true
	}
	lastNotify := map[uint64]int64{} // by Seq: the latest notifyMs delivered
	reissued := map[string]bool{}
	maxFirst := uint64(0)
	sinceLater := map[uint64]int{} // by Seq of an original not yet delivered: deliveries since a later one was
	for i, d := range ds {
		checkWire(t, d)
		orig := fs[d.Seq-1]
		for seq := range sinceLater {
			sinceLater[seq]++
		}
		switch d.Kind {
		case Original, Delayed:
			if d.Kind == Delayed != (d.Seq < maxFirst) {
				t.Errorf("delivery %d: kind %v for Seq %d, highest Seq delivered before %d", i, d.Kind, d.Seq, maxFirst)
			}
			for seq := maxFirst + 1; seq < d.Seq; seq++ {
				sinceLater[seq] = 0 // held back: d is later
			}
			if held := sinceLater[d.Seq]; held > 10*faults.MaxHold {
				t.Errorf("delivery %d: Seq %d held for %d deliveries", i, d.Seq, held)
			}
			delete(sinceLater, d.Seq)
			maxFirst = max(maxFirst, d.Seq)
		case Duplicate:
			if !bytes.Equal(d.Body, orig.Body) {
				t.Errorf("duplicate of Seq %d:\n%s\noriginal:\n%s", d.Seq, d.Body, orig.Body)
			}
		case Resend:
			if d.Notification.NoticeID != orig.Notification.NoticeID {
				t.Errorf("resend of Seq %d has noticeId %s, original %s", d.Seq, d.Notification.NoticeID, orig.Notification.NoticeID)
			}
		case ResendNewID:
			id := d.Notification.NoticeID
			if originalIDs[id] || reissued[id] {
				t.Errorf("new-id resend of Seq %d reuses noticeId %s", d.Seq, id)
			}
			reissued[id] = true
		}
		if d.Kind == Resend || d.Kind == ResendNewID {
			if d.Notification.NotifyMs <= lastNotify[d.Seq] {
				t.Errorf("%v of Seq %d: notifyMs %d, not after %d", d.Kind, d.Seq, d.Notification.NotifyMs, lastNotify[d.Seq])
			}
			if !bytes.Equal(d.Notification.Payload, orig.Notification.Payload) || d.Notification.EventType != orig.Notification.EventType ||
				d.Notification.Sid != orig.Notification.Sid {
				t.Errorf("%v of Seq %d changed more than the notice: %s, original %s", d.Kind, d.Seq, d.Body, orig.Body)
			}
			if seen, ok := lastNotify[d.Seq]; !ok || seen == 0 {
				t.Errorf("%v of Seq %d before its first delivery", d.Kind, d.Seq)
			}
		}
		lastNotify[d.Seq] = max(lastNotify[d.Seq], d.Notification.NotifyMs)
	}
}

func TestNoFaults(t *testing.T) {
	t.Parallel()
	g := newGen(t, Config{Seed: 6, Faults: &Faults{}})
	c := newClock(100 * time.Millisecond)
	for i, d := range collect(t, g, c, 5000) {
		if d.Kind != Original || d.Seq != uint64(i+1) {
			t.Fatalf("delivery %d: %v of Seq %d with no faults", i, d.Kind, d.Seq)
		}
	}
	if g.Pending() > 1 { // at most the rest of a create+join or leave+destroy pair
		t.Errorf("Pending() = %d with no faults", g.Pending())
	}
}

func TestDefaultFaults(t *testing.T) {
	t.Parallel()
	g := newGen(t, Config{Seed: 7})
	c := newClock(100 * time.Millisecond)
	kinds := map[Kind]int{}
	for _, d := range collect(t, g, c, 5000) {
		kinds[d.Kind]++
	}
	for _, k := range []Kind{Original, Delayed, Duplicate, Resend, ResendNewID} {
		if kinds[k] == 0 {
			t.Errorf("no %v deliveries with the default faults: %v", k, kinds)
		}
	}
	if kinds[Original] < 4500 {
		t.Errorf("faults are not a few percent by default: %v", kinds)
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	run := func(seed uint64) []Delivery {
		g := newGen(t, Config{Seed: seed})
		c := newClock(70 * time.Millisecond)
		return append(collect(t, g, c, 3000), g.Flush(c.now())...)
	}
	a, b := run(42), run(42)
	if !reflect.DeepEqual(a, b) {
		t.Error("two generators with the same seed and clock differ")
	}
	if reflect.DeepEqual(a, run(43)) {
		t.Error("two generators with different seeds gave the same output")
	}
}

func TestChannelNames(t *testing.T) {
	g := newGen(t, Config{Channels: 20})
	names := g.Channels()
	if want := []string{"show-1", "show.2", "talk #3", "q&a: 4", "room_5", "[vip] 6", "<live> 7", "~chill~|8", "show-9"}; !reflect.DeepEqual(names[:len(want)], want) {
		t.Errorf("Channels() = %q, want it to start with %q", names, want)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if err := ncs.ValidChannelName(n); err != nil || seen[n] {
			t.Errorf("channel name %q: valid %v, repeated %v", n, err, seen[n])
		}
		seen[n] = true
	}
	g = newGen(t, Config{Channels: 2, Prefix: "e2e run7 "})
	if got, want := g.Channels(), []string{"e2e run7 show-1", "e2e run7 show.2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Channels() with a prefix = %q, want %q", got, want)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // in the error, which also wraps ErrConfig
	}{
		{"negative channels", Config{Channels: -1}, "Channels"},
		{"negative hosts", Config{Hosts: -1}, "Hosts"},
		{"negative audience", Config{Audience: -2}, "Audience"},
		{"communication over 1", Config{Communication: 1.5}, "Communication"},
		{"communication NaN", Config{Communication: math.NaN()}, "Communication"},
		{"prefix with a slash", Config{Prefix: "a/b"}, "Prefix"},
		{"prefix too long", Config{Prefix: strings.Repeat("x", 60)}, "Prefix"},
		{"names too long with many channels", Config{Prefix: strings.Repeat("x", 54), Channels: 1000}, "Prefix"},
		{"duplicate over 1", Config{Faults: &Faults{Duplicate: 1.1}}, "Duplicate"},
		{"negative resend", Config{Faults: &Faults{Resend: -0.1}}, "Resend"},
		{"new-id NaN", Config{Faults: &Faults{ResendNewID: math.NaN()}}, "ResendNewID"},
		{"reorder over 1", Config{Faults: &Faults{Reorder: 2}}, "Reorder"},
		{"negative hold", Config{Faults: &Faults{MaxHold: -1}}, "MaxHold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an ErrConfig naming %s", err, tc.want)
			}
		})
	}
	for _, cfg := range []Config{{}, {Communication: -1}, {Communication: 1}, {Prefix: strings.Repeat("x", 54), Channels: 8},
		{Faults: &Faults{Reorder: 1, Duplicate: 1, Resend: 1, ResendNewID: 1}}} {
		if _, err := New(cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

func TestCommunicationShare(t *testing.T) {
	for _, tc := range []struct {
		share float64
		want  int
	}{{0, 2}, {-1, 0}, {1, 8}, {0.5, 4}} {
		g := newGen(t, Config{Channels: 8, Communication: tc.share})
		comm := 0
		for _, ch := range g.channels {
			if ch.comm {
				comm++
			}
		}
		if comm != tc.want {
			t.Errorf("Communication %v: %d of 8 channels, want %d", tc.share, comm, tc.want)
		}
	}
}

func TestExtremeFaults(t *testing.T) {
	t.Parallel()
	// Every fault on every original: the generator still moves on and owes a bounded amount.
	g := newGen(t, Config{Seed: 8, Faults: &Faults{Reorder: 1, Duplicate: 1, Resend: 1, ResendNewID: 1}})
	c := newClock(10 * time.Millisecond)
	ds := collect(t, g, c, 5000)
	if g.Pending() > 4*maxHeld {
		t.Errorf("Pending() = %d", g.Pending())
	}
	firsts(t, append(ds, g.Flush(c.now())...))
}
