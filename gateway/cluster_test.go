package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

// readPresence returns every event of USHER_PRESENCE, oldest first, with its seq.
func readPresence(t testing.TB, js jetstream.JetStream) []presence.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, bus.PresenceStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []presence.Event
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("presence %d: %v", seq, err)
		}
		var e presence.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatalf("presence %d: %v", seq, err)
		}
		if e.Seq != seq {
			t.Fatalf("presence message %d carries seq %d", seq, e.Seq)
		}
		out = append(out, e)
	}
	return out
}

// checkStream fails if the presence stream repeats a user's event or goes back in a user's clientSeq.
func checkStream(t testing.TB, events []presence.Event) {
	t.Helper()
	type key struct {
		ch  string
		uid uint32
	}
	last := map[key]int64{}
	for _, e := range events {
		if e.ClientSeq == 0 {
			continue // create, destroy, and the leaves a destroy implies
		}
		k := key{e.Channel, e.UID}
		if e.ClientSeq <= last[k] {
			t.Fatalf("stale or repeated effect at seq %d: %+v (last clientSeq %d)", e.Seq, e, last[k])
		}
		last[k] = e.ClientSeq
	}
}

// sendAll sends ds with 4 workers, round-robin over senders, and fails the test for any never acknowledged. When
// midway is not nil it is closed once `after` deliveries were acknowledged.
func sendAll(t testing.TB, ds []sim.Delivery, senders []*sim.Sender, after int, midway chan<- struct{}) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		acked atomic.Int64
		once  sync.Once
	)
	signal := func() {
		if midway != nil {
			once.Do(func() { close(midway) })
		}
	}
	defer signal()
	jobs := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				if _, err := senders[i%len(senders)].Send(ctx, ds[i]); err != nil {
					t.Errorf("notice %s never acknowledged: %v", ds[i].Notification.NoticeID, err)
				}
				cancel()
				if acked.Add(1) == int64(after) {
					signal()
				}
			}
		})
	}
	for i := range ds {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

// deliver sends n simulated deliveries (then everything the generator still owes) round-robin to the bases.
func deliver(t testing.TB, gen *sim.Generator, bases []string, n int) {
	t.Helper()
	senders := make([]*sim.Sender, len(bases))
	for i, b := range bases {
		senders[i] = &sim.Sender{URL: b + "/v1/ncs", Secret: testSecret, Backoff: 50 * time.Millisecond}
	}
	sendAll(t, gen.Collect(n, time.Now()), senders, 0, nil)
}

// waitTruth waits until every base serves every channel as the generator's truth has it.
func waitTruth(t testing.TB, gen *sim.Generator, bases []string) {
	t.Helper()
	testutil.WaitRosters(t, gen, token(t, "*"), 20*time.Millisecond, bases...)
}

// TestTwoInstancesOneNATS runs two gateways on one NATS server: notifications posted to either are applied once,
// both serve the same rosters, and when the applying instance stops the other takes over.
func TestTwoInstancesOneNATS(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	start := func(name string) (*gateway.Gateway, string) {
		cfg := testConfig(t, "")
		cfg.NATSURL, cfg.InstanceID, cfg.LeaseTTL = ns.ClientURL(), name, time.Second
		g, err := gateway.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return g, "http://" + g.Addr().String()
	}
	a, baseA := start("a")
	b, baseB := start("b")
	defer func() { _ = b.Shutdown(context.Background()) }()

	gen, err := sim.New(sim.Config{Channels: 6, Seed: 7, Faults: &sim.Faults{Duplicate: 0.05, Resend: 0.05, ResendNewID: 0.05, Reorder: 0.05}})
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, gen, []string{baseA, baseB}, 600)
	waitTruth(t, gen, []string{baseA, baseB})
	if a.Applying() == b.Applying() {
		t.Fatalf("applying: a %v, b %v; want exactly one", a.Applying(), b.Applying())
	}

	// Stop whichever applies; the other takes over and the stream carries on.
	leader, follower, followerBase := a, b, baseB
	if b.Applying() {
		leader, follower, followerBase = b, a, baseA
	}
	if err := leader.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	deliver(t, gen, []string{followerBase}, 300)
	waitTruth(t, gen, []string{followerBase})
	if !follower.Applying() {
		t.Fatal("the surviving instance does not apply")
	}
	events := readPresence(t, follower.JetStream())
	checkStream(t, events)
	t.Logf("%d presence events", len(events))
	if follower == a {
		_ = a.Shutdown(context.Background())
	}
}

// TestShutdownHandsOverWhileRequestsFinish: an instance shutting down releases the applier lease while its last
// requests finish, not after them, and its WebSockets keep getting events meanwhile. A request whose body never
// completes holds the HTTP shutdown for the whole grace; the other instance must be applying while that
// request still holds it, and a watcher on the one shutting down gets what the other stores.
func TestShutdownHandsOverWhileRequestsFinish(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t, "127.0.0.1:-1")
	const grace = 6 * time.Second
	start := func(name string) *gateway.Gateway {
		cfg := testConfig(t, "")
		cfg.NATSURL, cfg.InstanceID, cfg.LeaseTTL, cfg.ShutdownGrace = ns.ClientURL(), name, time.Second, grace
		g, err := gateway.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	a := start("a")
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return a.Applying(), "a never applied"
	})
	b := start("b")
	defer func() { _ = b.Shutdown(context.Background()) }()
	watcher := mustDial(t, "http://"+a.Addr().String(), token(t, "show-1"))
	watcher.subscribe("show-1")
	watcher.expect("subscribed", "show-1")
	watcher.expect("snapshot", "show-1")

	// A notification whose body stops half-way: the server waits for the rest until its read timeout (30 s). It asks
	// for 100 Continue, which the server sends once the handler reads the body: the request is in, and holds the
	// HTTP shutdown.
	conn, err := net.Dial("tcp", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /v1/ncs HTTP/1.1\r\nHost: usher\r\nContent-Type: application/json\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("waiting for 100 Continue: %q, %v", line, err)
	}
	if _, err := fmt.Fprint(conn, `{"noticeId":`); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	stopped := make(chan time.Duration, 1)
	go func() { _ = a.Shutdown(context.Background()); stopped <- time.Since(began) }()
	testutil.Eventually(t, grace, 20*time.Millisecond, func() (bool, string) {
		return b.Applying(), "b does not apply"
	})
	took := time.Since(began)
	select {
	case d := <-stopped:
		t.Fatalf("a's shutdown ended after %s, before the half-sent request let it: the test no longer holds it up", d)
	default:
	}
	t.Logf("b applies %s after a began shutting down", took.Round(time.Millisecond))
	joinAudience(t, "http://"+b.Addr().String(), "show-1", 7)
	if e := watcher.expectEvents("show-1", 1, 0)[0]; e.UID != 7 {
		t.Fatalf("the watcher on the instance shutting down got %+v", e)
	}
	select {
	case <-stopped:
	case <-time.After(grace + 5*time.Second):
		t.Fatal("a's shutdown did not end within its grace")
	}
}
