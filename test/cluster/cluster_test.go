package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/test/testutil"
)

// faults are the delivery faults of every test's simulated Agora: duplicates, resends (same and new noticeId) and
// reordering.
var faults = &sim.Faults{Duplicate: 0.03, Resend: 0.03, ResendNewID: 0.02, Reorder: 0.05}

// TestCrossInstanceDelivery posts every webhook to instance A; watchers on B and C get every event once, in order.
func TestCrossInstanceDelivery(t *testing.T) {
	needBinaries(t)
	nc := startNATS(t, 3)
	a, b, c := startUsher(t, "a", nc), startUsher(t, "b", nc), startUsher(t, "c", nc)
	gen, err := sim.New(sim.Config{Channels: 10, Seed: 1, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	wb := watch(t, "on-b", gen.Channels(), b.base)
	wc := watch(t, "on-c", gen.Channels(), c.base)

	res := send(t, newSender(t, a.base), gen.Collect(2000, time.Now()), burst{})
	if len(res.failed) > 0 {
		t.Fatalf("%d notifications never acknowledged, e.g. %s", len(res.failed), res.failed[0])
	}
	// A duplicate racing its original ("duplicate message id is in process" on a clustered stream) is retried and
	// answered 200, not 503.
	if strings.Contains(a.p.out.String(), "in process") {
		t.Errorf("usher a answered a duplicate in process with an error; answers by status %v", res.statuses)
	}
	waitTruth(t, gen, a, b, c)
	js := nc.jetStream()
	ncsMsgs, presenceMsgs := readAll(t, js, bus.NCSStream), readAll(t, js, bus.PresenceStream)
	checkExactlyOnce(t, ncsMsgs, presenceMsgs)
	wb.verify(t, presenceMsgs)
	wc.verify(t, presenceMsgs)
}

// TestKillUsherMidBurst kills -9 the instance holding the applier lease in the middle of a burst of 10,000
// notifications sent through a load balancer. After the sender's retries every roster equals the ground truth,
// USHER_PRESENCE holds each effect exactly once, and the watcher that was on the killed instance reconnects to a
// survivor with since and sees a gap-free stream.
func TestKillUsherMidBurst(t *testing.T) {
	needBinaries(t)
	nc := startNATS(t, 3)
	us := []*usher{startUsher(t, "a", nc), startUsher(t, "b", nc), startUsher(t, "c", nc)}
	leader := waitLeader(t, us...)
	var survivors []*usher
	for _, u := range us {
		if u != leader {
			survivors = append(survivors, u)
		}
	}
	gen, err := sim.New(sim.Config{Channels: 20, Seed: 2, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	onLeader := watch(t, "on-leader", gen.Channels(), leader.base, survivors[0].base, survivors[1].base)
	onSurvivor := watch(t, "on-"+survivors[0].name, gen.Channels(), survivors[0].base)

	lb := newBalancer(t, us...)
	var takeover time.Duration
	res := send(t, newSender(t, lb.srv.URL), gen.Collect(10000, time.Now()), burst{after: 3000, midway: func() {
		killed := time.Now()
		leader.p.kill(t)
		t.Logf("killed -9 usher %s (the applier) after 3000 acknowledged notifications", leader.name)
		testutil.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
			for _, u := range survivors {
				if u.leading() {
					takeover = time.Since(killed)
					return true, ""
				}
			}
			return false, "no survivor took the applier lease"
		})
		t.Logf("applier taken over %s after the kill", takeover.Round(10*time.Millisecond))
	}})
	if len(res.failed) > 0 {
		t.Fatalf("%d notifications never acknowledged after the sender's retries, e.g. %s", len(res.failed), res.failed[0])
	}
	waitTruth(t, gen, survivors...)
	js := nc.jetStream()
	ncsMsgs, presenceMsgs := readAll(t, js, bus.NCSStream), readAll(t, js, bus.PresenceStream)
	checkAcceptedStored(t, res.acked, ncsMsgs)
	checkExactlyOnce(t, ncsMsgs, presenceMsgs)
	onLeader.verify(t, presenceMsgs)
	onSurvivor.verify(t, presenceMsgs)
	logRemakes(t, survivors...)
	if onLeader.sessions < 2 {
		t.Fatalf("the watcher on the killed instance never reconnected")
	}
}

// TestKillNATSNodeMidBurst kills -9 the NATS node leading USHER_NCS in the middle of a burst (replicas 3): no
// acknowledged notification is lost, rosters equal the ground truth, and watchers see every event once. Then,
// with the node still down, an instance restarts and serves the same rosters.
func TestKillNATSNodeMidBurst(t *testing.T) {
	needBinaries(t)
	nc := startNATS(t, 3)
	a, b := startUsher(t, "a", nc), startUsher(t, "b", nc)
	gen, err := sim.New(sim.Config{Channels: 12, Seed: 3, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	wa := watch(t, "on-a", gen.Channels(), a.base)
	wb := watch(t, "on-b", gen.Channels(), b.base)
	js := nc.jetStream()

	lb := newBalancer(t, a, b)
	victim := -1
	res := send(t, newSender(t, lb.srv.URL), gen.Collect(5000, time.Now()), burst{after: 1500, midway: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, bus.NCSStream)
		if err != nil {
			t.Errorf("stream: %v", err)
			return
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			t.Errorf("stream info: %v", err)
			return
		}
		victim = nc.node(info.Cluster.Leader)
		nc.nodes[victim].p.kill(t)
		t.Logf("killed -9 NATS node %s (leader of %s) after 1500 acknowledged notifications", info.Cluster.Leader, bus.NCSStream)
	}})
	if victim < 0 {
		t.Fatal("no NATS node was killed")
	}
	// Every acknowledged notification is stored, whatever the sender did with the rest.
	ncsMsgs := readAll(t, js, bus.NCSStream)
	checkAcceptedStored(t, res.acked, ncsMsgs)
	if len(res.failed) > 0 {
		t.Fatalf("%d notifications never acknowledged after the sender's retries, e.g. %s", len(res.failed), res.failed[0])
	}
	waitTruth(t, gen, a, b)
	presenceMsgs := readAll(t, js, bus.PresenceStream)
	checkExactlyOnce(t, ncsMsgs, presenceMsgs)
	wa.verify(t, presenceMsgs)
	wb.verify(t, presenceMsgs)
	logRemakes(t, a, b)

	// With the node still down, an instance restarts: its start-up updates the streams (2 of 3 servers up) and it
	// serves the same rosters.
	restart := time.Now()
	a.p.stop(t)
	stopped := time.Since(restart)
	a.start(t)
	t.Logf("usher a restarted with NATS node %s down: stopped in %s, ready %s later", nc.nodes[victim].name,
		stopped.Round(10*time.Millisecond), (time.Since(restart) - stopped).Round(10*time.Millisecond))
	waitTruth(t, gen, a)
}

// TestRestartedInstanceResumes restarts (SIGTERM, then start again on the same port) the instance a watcher is
// connected to while notifications keep coming through the other: the watcher reconnects to the restarted
// instance and resumes without a gap. The restarted instance held the applier lease; the other takes it over.
func TestRestartedInstanceResumes(t *testing.T) {
	needBinaries(t)
	nc := startNATS(t, 3)
	a := startUsher(t, "a", nc)
	waitLeader(t, a)
	b := startUsher(t, "b", nc)
	gen, err := sim.New(sim.Config{Channels: 8, Seed: 4, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, "on-a", gen.Channels(), a.base)
	sender := newSender(t, b.base)
	ds := gen.Collect(3000, time.Now())

	res := send(t, sender, ds[:500], burst{})
	// The rest goes to b at about 300 a second, while a stops, b takes over the applier, and a starts again.
	done := make(chan sendResult, 1)
	go func() { done <- send(t, sender, ds[500:], burst{gap: 50 * time.Millisecond}) }()
	stopped := time.Now()
	a.p.stop(t)
	t.Logf("usher a stopped (SIGTERM) in %s", time.Since(stopped).Round(10*time.Millisecond))
	var takeover time.Duration
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, func() (bool, string) {
		if b.leading() {
			takeover = time.Since(stopped)
			return true, ""
		}
		return false, "b did not take the applier lease"
	})
	t.Logf("applier handed over %s after SIGTERM", takeover.Round(10*time.Millisecond))
	a.start(t)
	back := time.Since(stopped)
	t.Logf("usher a ready again %s after SIGTERM", back.Round(10*time.Millisecond))
	var rest sendResult
	select {
	case rest = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the paced burst did not end") // send is bounded by 2 minutes
	}
	if rest.took < back {
		t.Logf("note: the paced burst ended (%s) before a was back (%s): the machine is slow today", rest.took, back)
	}
	if len(res.failed)+len(rest.failed) > 0 {
		t.Fatalf("%d notifications never acknowledged", len(res.failed)+len(rest.failed))
	}
	waitTruth(t, gen, a, b)
	js := nc.jetStream()
	ncsMsgs, presenceMsgs := readAll(t, js, bus.NCSStream), readAll(t, js, bus.PresenceStream)
	checkExactlyOnce(t, ncsMsgs, presenceMsgs)
	w.verify(t, presenceMsgs)
	if w.sessions < 2 {
		t.Fatalf("the watcher never reconnected")
	}
}

// TestReplicasNeedACluster starts usher with USHER_REPLICAS=3 against a single NATS server: it must refuse to start
// with one line naming USHER_REPLICAS and what the server said.
func TestReplicasNeedACluster(t *testing.T) {
	needBinaries(t)
	nc := startNATS(t, 1)
	u := &usher{name: "r3", env: append(os.Environ(), "PORT=0", "USHER_NCS_SECRETS="+ncsSecret, "USHER_JWT_SECRET="+jwtSecret,
		"USHER_NATS_URL="+nc.urls(), "USHER_REPLICAS=3", "USHER_LOG_LEVEL=error")}
	u.p = startProc(t, "usher r3", bins.usher, []string{"serve"}, u.env)
	select {
	case <-u.p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("usher with USHER_REPLICAS=3 on one NATS server still running after 30 s")
	}
	out := strings.TrimSpace(u.p.out.String())
	if code := u.p.cmd.ProcessState.ExitCode(); code != 1 || strings.Count(out, "\n") != 0 ||
		!strings.Contains(out, "USHER_REPLICAS is 3") || !strings.Contains(out, "not supported in non-clustered mode") {
		t.Fatalf("exit %d, output %q: want exit 1 and one line naming USHER_REPLICAS and the server's reason", code, out)
	}
	t.Logf("%s", out)
}

// A bench killed hard (SIGKILL: no clean-up of its own) leaves no server it spawned running: the children are tied
// to its life.
func TestBenchServersDieWithTheBench(t *testing.T) {
	needBinaries(t)
	b := startProc(t, "usher bench", bins.usher, []string{"bench", "--target", "baseline", "--channels", "1",
		"--subscribers", "1", "--rate", "1", "--duration", "60s"}, os.Environ())
	var child int
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() (bool, string) {
		child = childOf(b.cmd.Process.Pid)
		return child > 0 && strings.Contains(b.out.String(), "connecting"), "no server spawned yet"
	})
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		// Gone, or a zombie waiting for init to reap it.
		return err != nil || strings.Contains(string(st), ") Z "), fmt.Sprintf("the spawned server (pid %d) still runs: %s", child, st)
	})
}

// childOf returns a child process of pid (0: none yet).
func childOf(pid int) int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

// The first SIGTERM stops usher serve gracefully: it waits for requests in progress, up to its grace. A second one
// ends it at once.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	needBinaries(t)
	port := testutil.FreePort(t)
	u := startProc(t, "usher serve", bins.usher, []string{"serve"}, append(os.Environ(),
		"USHER_NCS_SECRETS=s1", "USHER_JWT_SECRET=0123456789abcdef0123", "USHER_DATA_DIR="+t.TempDir(),
		"USHER_NATS_LISTEN=off", fmt.Sprintf("PORT=%d", port), "USHER_LOG_LEVEL=info"))
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() (bool, string) {
		return strings.Contains(u.out.String(), "usher listening"), "not listening yet"
	})
	// A request in progress, whose body never ends: the graceful stop waits for it.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /v1/ncs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The server answers 100 Continue when the handler starts reading the body: the request is in progress.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("waiting for 100 Continue: %q, %v", line, err)
	}
	if _, err := fmt.Fprint(conn, "{"); err != nil {
		t.Fatal(err)
	}

	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return strings.Contains(u.out.String(), "shutting down"), "no graceful stop begun"
	})
	select {
	case <-u.done:
		t.Fatalf("exited before its request ended or its grace passed: %s", u.cmd.ProcessState)
	case <-time.After(time.Second):
	}
	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.done:
	case <-time.After(2 * time.Second):
		t.Fatal("still running 2 s after a second SIGTERM")
	}
}
