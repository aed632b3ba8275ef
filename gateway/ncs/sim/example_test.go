package sim_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/ncs/sim"
)

// A generator feeds a receiver through a Sender: Run sends 200 deliveries, four at a time, then everything the
// generator still holds back, so that its Truth is what the receiver should now show.
func Example() {
	const secret = "ncs-secret"
	verifier := ncs.NewVerifier(secret)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, `{"error":"body too large"}`, http.StatusRequestEntityTooLarge)
			return
		}
		if err := verifier.Verify(r.Header, body); err != nil {
			http.Error(w, `{"error":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		if _, err := ncs.Decode(body); err != nil {
			http.Error(w, `{"error":"bad notification"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	defer receiver.Close()

	gen, err := sim.New(sim.Config{Channels: 3, Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	sender := &sim.Sender{URL: receiver.URL, Secret: secret}
	stats, err := sim.Run(context.Background(), gen, sender, sim.RunConfig{Count: 200, Concurrency: 4, Drain: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("all acknowledged:", stats.Acked == stats.Sent, "still owed:", gen.Pending())
	fmt.Println("channels:", gen.Channels())
	// Output:
	// all acknowledged: true still owed: 0
	// channels: [show-1 show.2 talk #3]
}

// With a clock of its own, a generator's output is the same on every run.
func ExampleGenerator_Next() {
	gen, err := sim.New(sim.Config{Seed: 3, Faults: &sim.Faults{}})
	if err != nil {
		log.Fatal(err)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for range 6 {
		now = now.Add(400 * time.Millisecond)
		d, ok := gen.Next(now)
		if !ok {
			continue
		}
		n, ev := d.Notification, d.Event
		if n.EventType.IsUserEvent() {
			fmt.Printf("%d %q uid %d clientSeq %d\n", n.EventType, ev.ChannelName, ev.UID, ev.ClientSeq)
		} else {
			fmt.Printf("%d %q ts %d\n", n.EventType, ev.ChannelName, ev.Ts)
		}
	}
	// Output:
	// 101 "room_5" ts 1748779200
	// 105 "room_5" uid 458248698 clientSeq 1748779200400
	// 101 "show.2" ts 1748779201
	// 105 "show.2" uid 3647263288 clientSeq 1748779201200
	// 111 "room_5" uid 458248698 clientSeq 1748779202000
	// 105 "show.2" uid 1239793057 clientSeq 1748779202400
}
