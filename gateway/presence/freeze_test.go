package presence_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/presence"
)

// A Frozen encodes the state of the moment it was taken, byte for byte, while the State goes on being applied,
// stored to and pruned on another goroutine (run with -race: a channel changed in place under a Frozen is a data
// race); and freezing changes no decision: the state decides and encodes as one that was never frozen.
func TestFreezeWhileApplying(t *testing.T) {
	t.Parallel()
	rules := presence.Rules{Retention: time.Second, ClockSkew: time.Minute}
	for i := range 40 {
		r := rand.New(rand.NewPCG(propertySeed+2, uint64(i)))
		h := genHistory(r, histConfig{channels: 4, users: 12, lives: 3, steps: 30})
		ns := shuffled(r, h.notices, 0.2, 0.2, r0)

		plain := &delivery{state: presence.NewState(rules)}
		frozen := &delivery{state: presence.NewState(rules)}
		type pending struct {
			want []byte
			got  chan []byte
		}
		var held []pending
		for start := 0; start < len(ns); {
			end := min(len(ns), start+1+r.IntN(12))
			startMs := r0 + int64(start)*10
			prune := r.IntN(3) == 0
			for _, d := range []*delivery{plain, frozen} {
				d.continueWith(ns[start:end], startMs)
				if prune {
					d.state.Prune(startMs + int64(end-start)*10)
				}
			}
			// Freeze, and encode it elsewhere while the state moves on; sometimes two are held at once.
			if r.IntN(3) == 0 {
				want := marshal(t, frozen.state)
				f := frozen.state.Freeze()
				p := pending{want: want, got: make(chan []byte, 1)}
				go func() {
					defer f.Release()
					b, err := json.Marshal(f)
					if err != nil {
						b = []byte(err.Error())
					}
					p.got <- b
				}()
				held = append(held, p)
			}
			if len(held) > 0 && r.IntN(2) == 0 {
				p := held[0]
				held = held[1:]
				if got := <-p.got; !bytes.Equal(got, p.want) {
					t.Fatalf("iteration %d: the Frozen encodes\n%s\nnot the state it was taken from\n%s", i, got, p.want)
				}
			}
			start = end
		}
		for _, p := range held {
			if got := <-p.got; !bytes.Equal(got, p.want) {
				t.Fatalf("iteration %d: the Frozen encodes\n%s\nnot the state it was taken from\n%s", i, got, p.want)
			}
		}
		for k := range frozen.notices {
			if frozen.outcomes[k] != plain.outcomes[k] || !reflect.DeepEqual(frozen.events[k], plain.events[k]) {
				t.Fatalf("iteration %d, notice %d: frozen %v %s, never frozen %v %s", i, k,
					frozen.outcomes[k], jsEvents(frozen.events[k]), plain.outcomes[k], jsEvents(plain.events[k]))
			}
		}
		if a, b := marshal(t, frozen.state), marshal(t, plain.state); !bytes.Equal(a, b) {
			t.Fatalf("iteration %d: the frozen state encodes differently:\n%s\n%s", i, a, b)
		}
	}
}
