package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

// TestMain lets this test binary run as a gateway child process, so tests can kill -9 a real server.
func TestMain(m *testing.M) {
	if os.Getenv("USHER_TEST_CHILD") == "gateway" {
		os.Exit(childGateway())
	}
	os.Exit(m.Run())
}

func childGateway() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	g, err := gateway.Start(ctx, gateway.Config{
		Addr: os.Getenv("CHILD_ADDR"), NCSSecrets: []string{testSecret}, JWTSecret: testJWTSecret,
		DataDir: os.Getenv("CHILD_DATA"), NATSListen: os.Getenv("CHILD_NATS"),
		// Checkpoints saved in the background during the burst, so a kill -9 restarts from one of them.
		CheckpointInterval: 200 * time.Millisecond,
	})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	<-ctx.Done()
	if err := g.Shutdown(context.Background()); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

// child is a gateway in its own process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(t *testing.T, addr, data, natsAddr string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "USHER_TEST_CHILD=gateway", "CHILD_ADDR="+addr, "CHILD_DATA="+data, "CHILD_NATS="+natsAddr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case ready <- sc.Text():
			default:
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(c.kill)
	select {
	case line := <-ready:
		if line != "ready" {
			t.Fatalf("child: %s", line)
		}
	case <-c.done:
		t.Fatal("child exited before it was ready")
	case <-time.After(30 * time.Second):
		t.Fatal("child not ready after 30 s")
	}
	return c
}

// kill is kill -9, then a wait for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
}

// snapshots returns every channel's snapshot from base.
func snapshots(t *testing.T, base string, channels []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	tok := token(t, "*")
	for _, ch := range channels {
		code, raw := getJSON(t, base, presencePath(ch), tok, nil)
		if code != 200 {
			t.Fatalf("%s: %d %s", ch, code, raw)
		}
		out[ch] = raw
	}
	return out
}

// sameEmptyRoster reports whether before and after are snapshots of a channel with no member, the later at a seq at
// or past the earlier's. An empty channel has the seq of the last event of any channel the view forgot (resuming from
// it misses nothing), and a view made from a checkpoint starts that at the checkpoint's last event: after a restart
// it may be further on than before.
func sameEmptyRoster(t *testing.T, before, after string) bool {
	t.Helper()
	var b, a presence.Snapshot
	if json.Unmarshal([]byte(before), &b) != nil || json.Unmarshal([]byte(after), &a) != nil {
		return false
	}
	empty := func(s presence.Snapshot) bool { return s.Counts == (presence.Counts{}) }
	return empty(b) && empty(a) && a.Seq >= b.Seq && a.Epoch == b.Epoch && a.Channel == b.Channel
}

// TestKillDashNine kills the server process (kill -9) twice, once while idle and once in the middle of a burst.
// After each restart the rosters are exactly what they were, Agora-like retries deliver what was not acknowledged,
// and the presence stream neither repeats nor skips an event.
func TestKillDashNine(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes; skipped with -short")
	}
	t.Parallel()
	data, addr, natsAddr := t.TempDir(), freeAddr(t), freeAddr(t)
	base := "http://" + addr
	gen, err := sim.New(sim.Config{Channels: 8, Seed: 42, Faults: &sim.Faults{Duplicate: 0.03, Resend: 0.03, ResendNewID: 0.03, Reorder: 0.05}})
	if err != nil {
		t.Fatal(err)
	}

	c := startChild(t, addr, data, natsAddr)
	deliver(t, gen, []string{base}, 400)
	waitTruth(t, gen, []string{base})
	before := snapshots(t, base, gen.Channels())

	c.kill()
	c = startChild(t, addr, data, natsAddr)
	after := snapshots(t, base, gen.Channels())
	for ch, s := range before {
		if after[ch] != s && !sameEmptyRoster(t, s, after[ch]) {
			t.Fatalf("channel %q after kill -9:\n%s\nbefore:\n%s", ch, after[ch], s)
		}
	}

	// A burst, with a kill -9 in the middle; senders resend until the restarted server answers.
	var wg sync.WaitGroup
	midway := make(chan struct{})
	wg.Go(func() { deliverPatiently(t, gen, base, 1500, 500, midway) })
	<-midway // 500 of the burst were acknowledged
	c.kill()
	c = startChild(t, addr, data, natsAddr)
	wg.Wait()
	waitTruth(t, gen, []string{base})

	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	events := readPresence(t, js)
	checkStream(t, events)
	t.Logf("%d presence events after two kill -9", len(events))
}

// deliverPatiently sends like deliver, but each notification is resent for up to 30 s, covering a restart. It closes
// midway once `after` deliveries were acknowledged.
func deliverPatiently(t *testing.T, gen *sim.Generator, base string, n, after int, midway chan<- struct{}) {
	s := &sim.Sender{URL: base + "/v1/ncs", Secret: testSecret, Backoff: 100 * time.Millisecond, Resends: 12}
	sendAll(t, gen.Collect(n, time.Now()), []*sim.Sender{s}, after, midway)
}
