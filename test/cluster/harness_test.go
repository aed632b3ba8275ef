package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/gateway/subject"
	"github.com/usher-presence/usher/test/testutil"
)

const (
	ncsSecret = "cluster-test-ncs-secret"
	jwtSecret = "cluster-test-jwt-secret-0123456789"
)

// bins are the nats-server and usher binaries, built once by TestMain.
var bins struct {
	natsServer, usher string
	err               error
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "usher-cluster-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	bins.natsServer, bins.usher = filepath.Join(dir, "nats-server"), filepath.Join(dir, "usher")
	bins.err = goBuild(bins.natsServer, "github.com/nats-io/nats-server/v2") // the version go.mod requires
	if bins.err == nil {
		bins.err = goBuild(bins.usher, "github.com/usher-presence/usher/cmd/usher")
	}
	fmt.Fprintf(os.Stderr, "cluster tests: built nats-server and usher in %s\n", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// goBuild builds a main package of the module graph into out, bounded by 5 minutes.
func goBuild(out, pkg string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// needBinaries skips the test under -short and fails it when the binaries could not be built.
func needBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster and usher processes, and kills them; skipped with -short")
	}
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// proc is a child process owned by a test: it is killed (-9) and waited for when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer // the process's stdout and stderr
	done chan struct{}
}

func startProc(t *testing.T, name, path string, args, env []string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(path, args...), out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Killed with the test process too, should it die (a test timeout) before its clean-up runs.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			var keep []string
			for _, l := range strings.Split(p.out.String(), "\n") {
				if !strings.Contains(l, "Error trying to connect to route") && !strings.Contains(l, `"level":"DEBUG"`) &&
					!strings.Contains(l, `"msg":"http request"`) {
					keep = append(keep, l)
				}
			}
			t.Logf("---- %s output (last 6 KB) ----\n%s", name, tail(strings.Join(keep, "\n"), 6<<10))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// kill is kill -9, then a bounded wait for the process to be gone.
func (p *proc) kill(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)
}

// stop is SIGTERM, then a bounded wait for a clean exit.
func (p *proc) stop(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 20*time.Second)
}

func (p *proc) wait(t *testing.T, d time.Duration) {
	select {
	case <-p.done:
	case <-time.After(d):
		t.Errorf("%s still running %s after a signal", p.name, d)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ---- NATS ----

// natsNode is one nats-server process of a test cluster.
type natsNode struct {
	name                  string
	conf                  string
	client, route, health int
	p                     *proc
}

// natsCluster is a NATS cluster on loopback, each node with JetStream on disk.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
}

// startNATS starts n nats-server nodes (n > 1: a cluster with routes between them) and waits until JetStream is
// usable on every one. Ports are picked free a moment before the servers bind them; when one was taken meanwhile
// (the machine is shared), it starts again on new ports, up to 3 times.
func startNATS(t *testing.T, n int) *natsCluster {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c, err := tryNATS(t, n)
		if err == nil {
			return c
		}
		for _, nd := range c.nodes {
			if nd.p != nil {
				nd.p.kill(t)
			}
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("NATS cluster start, attempt %d: %v; again on new ports", attempt, err)
	}
}

func tryNATS(t *testing.T, n int) (*natsCluster, error) {
	c := &natsCluster{t: t}
	dir := t.TempDir()
	for i := range n {
		c.nodes = append(c.nodes, &natsNode{name: fmt.Sprintf("n%d", i+1),
			client: testutil.FreePort(t), route: testutil.FreePort(t), health: testutil.FreePort(t)})
	}
	var routes []string
	for _, nd := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", nd.route))
	}
	for _, nd := range c.nodes {
		conf := fmt.Sprintf("server_name: %s\nhost: 127.0.0.1\nport: %d\nhttp: \"127.0.0.1:%d\"\n"+
			"jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }\n",
			nd.name, nd.client, nd.health, filepath.Join(dir, nd.name))
		if n > 1 {
			conf += fmt.Sprintf("cluster { name: usher-test, host: 127.0.0.1, port: %d, routes: [%s] }\n", nd.route, strings.Join(routes, ", "))
		}
		nd.conf = filepath.Join(dir, nd.name+".conf")
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.nodes {
		c.startNode(i)
	}
	return c, c.waitHealthy()
}

func (c *natsCluster) startNode(i int) {
	nd := c.nodes[i]
	nd.p = startProc(c.t, "nats "+nd.name, bins.natsServer, []string{"-c", nd.conf}, os.Environ())
}

// waitHealthy waits up to 30 s until every node's /healthz answers 200 (JetStream up, meta leader known).
func (c *natsCluster) waitHealthy() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Every node first: one that could not bind its ports exits, and startNATS retries on new ones.
		for _, nd := range c.nodes {
			if nd.p.exited() {
				return fmt.Errorf("NATS node %s exited: %s", nd.name, tail(nd.p.out.String(), 500))
			}
		}
		why := ""
		for _, nd := range c.nodes {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.health))
			if err != nil {
				why = nd.name + ": " + err.Error()
				break
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				why = fmt.Sprintf("%s: %d %s", nd.name, resp.StatusCode, b)
				break
			}
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("NATS cluster not healthy within 30 s: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// urls lists every node's client URL, comma-separated, as USHER_NATS_URL takes them.
func (c *natsCluster) urls() string {
	var us []string
	for _, nd := range c.nodes {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", nd.client))
	}
	return strings.Join(us, ",")
}

// node returns the node named name.
func (c *natsCluster) node(name string) int {
	for i, nd := range c.nodes {
		if nd.name == name {
			return i
		}
	}
	c.t.Fatalf("no NATS node %q", name)
	return -1
}

// jetStream connects the test to the cluster.
func (c *natsCluster) jetStream() jetstream.JetStream {
	c.t.Helper()
	nc, err := nats.Connect(c.urls(), nats.MaxReconnects(-1), nats.Name("cluster-test"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return js
}

// ---- usher ----

// usher is an `usher serve` process.
type usher struct {
	name, base string
	env        []string
	p          *proc
}

// startUsher starts `usher serve` against the cluster with USHER_REPLICAS=3 and waits until it is ready. When its
// port was taken between picking it and binding it, it tries again on another, up to 3 times.
func startUsher(t *testing.T, name string, nc *natsCluster, extraEnv ...string) *usher {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := testutil.FreePort(t)
		env := []string{
			"PORT=" + strconv.Itoa(port), "USHER_NCS_SECRETS=" + ncsSecret, "USHER_JWT_SECRET=" + jwtSecret,
			"USHER_NATS_URL=" + nc.urls(), "USHER_REPLICAS=3", "USHER_INSTANCE_ID=" + name, "USHER_LOG_LEVEL=info",
		}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "USHER_") && !strings.HasPrefix(kv, "PORT=") {
				env = append(env, kv)
			}
		}
		u := &usher{name: name, base: fmt.Sprintf("http://127.0.0.1:%d", port), env: append(env, extraEnv...)}
		err := u.tryStart(t)
		if err == nil {
			return u
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("usher %s, attempt %d: %v; again on another port", name, attempt, err)
	}
}

// start runs the process again, on the same port, and waits for /readyz.
func (u *usher) start(t *testing.T) {
	t.Helper()
	if err := u.tryStart(t); err != nil {
		t.Fatal(err)
	}
}

func (u *usher) tryStart(t *testing.T) error {
	u.p = startProc(t, "usher "+u.name, bins.usher, []string{"serve"}, u.env)
	deadline := time.Now().Add(40 * time.Second)
	for {
		if u.p.exited() {
			return fmt.Errorf("usher %s exited before it was ready: %s", u.name, tail(u.p.out.String(), 1000))
		}
		resp, err := http.Get(u.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("usher %s not ready within 40 s (%v)", u.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logRemakes logs how often each instance replaced a stalled or failed ordered consumer (gateway/follow.go).
func logRemakes(t *testing.T, us ...*usher) {
	for _, u := range us {
		if n := strings.Count(u.p.out.String(), "making a new one"); n > 0 {
			t.Logf("usher %s replaced an ordered consumer %d time(s)", u.name, n)
		}
	}
}

// leading reports whether the instance says it holds the applier lease (usher_applier_leading), false when it
// does not answer.
func (u *usher) leading() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(u.base + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usher_applier_leading "); ok {
			return strings.TrimSpace(v) == "1"
		}
	}
	return false
}

// waitLeader waits until exactly one of us leads and returns it.
func waitLeader(t *testing.T, us ...*usher) *usher {
	t.Helper()
	var leader *usher
	testutil.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		leader = nil
		n := 0
		for _, u := range us {
			if u.leading() {
				leader, n = u, n+1
			}
		}
		return n == 1, fmt.Sprintf("%d instances lead", n)
	})
	return leader
}

// ---- the load balancer and the sender ----

// balancer is an HTTP load balancer in front of usher instances, round-robin, with passive health checks: a
// backend that refuses a connection is skipped for 3 s (nginx's max_fails=1 fail_timeout=3s), and that request
// gets 502, which the sender resends.
type balancer struct {
	backends []string
	client   *http.Client
	srv      *httptest.Server

	mu       sync.Mutex
	next     int
	downTill []time.Time
}

func newBalancer(t *testing.T, us ...*usher) *balancer {
	t.Helper()
	b := &balancer{client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	for _, u := range us {
		b.backends = append(b.backends, u.base)
	}
	b.downTill = make([]time.Time, len(b.backends))
	b.srv = httptest.NewServer(b)
	t.Cleanup(func() { b.srv.Close(); b.client.CloseIdleConnections() })
	return b
}

func (b *balancer) pick() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for range b.backends {
		i := b.next % len(b.backends)
		b.next++
		if now.After(b.downTill[i]) {
			return i
		}
	}
	i := b.next % len(b.backends)
	b.next++
	return i
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	i := b.pick()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, b.backends[i]+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := b.client.Do(req)
	if err != nil {
		b.mu.Lock()
		b.downTill[i] = time.Now().Add(3 * time.Second)
		b.mu.Unlock()
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// newSender is Agora-like: it resends up to 3 times, after a non-200 or no answer within 10 s, waiting 1 s, then
// 2 s, then 4 s (the simulator's default backoff).
func newSender(t *testing.T, url string) *sim.Sender {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &sim.Sender{URL: url + "/v1/ncs", Secret: ncsSecret, Resends: 3, Backoff: time.Second,
		Client: &http.Client{Timeout: 10 * time.Second, Transport: tr}}
}

// sendResult is what a burst did.
type sendResult struct {
	acked    []string // noticeIds answered 200
	failed   []string // noticeIds never answered 200
	attempts int
	statuses map[int]int // every answer's status, 0 for none
	took     time.Duration
}

// burst says how send posts.
type burst struct {
	// after and midway: once `after` deliveries were acknowledged, midway is called (once, on its own goroutine,
	// which send waits for).
	after  int
	midway func()
	// gap is how long each of the 16 workers waits between two deliveries (zero: as fast as they are answered).
	gap time.Duration
}

// send posts ds with 16 workers, within 2 minutes in all (past that, what is left counts as never
// acknowledged).
func send(t *testing.T, s *sim.Sender, ds []sim.Delivery, b burst) sendResult {
	t.Helper()
	start := time.Now()
	budget, cancelBudget := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelBudget()
	var (
		wg, mwg  sync.WaitGroup
		acked    atomic.Int64
		attempts atomic.Int64
		mu       sync.Mutex
		res      = sendResult{statuses: map[int]int{}}
	)
	jobs := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				ctx, cancel := context.WithTimeout(budget, 60*time.Second)
				r, err := s.Send(ctx, ds[i])
				cancel()
				attempts.Add(int64(r.Attempts))
				mu.Lock()
				for _, st := range r.Statuses {
					res.statuses[st]++
				}
				if err != nil {
					res.failed = append(res.failed, ds[i].Notification.NoticeID)
				} else {
					res.acked = append(res.acked, ds[i].Notification.NoticeID)
				}
				mu.Unlock()
				if err == nil && acked.Add(1) == int64(b.after) && b.midway != nil {
					mwg.Go(b.midway)
				}
				if b.gap > 0 {
					select {
					case <-budget.Done():
					case <-time.After(b.gap):
					}
				}
			}
		})
	}
	for i := range ds {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	mwg.Wait()
	if t.Failed() {
		// midway failed: its t.Fatalf ended only its own goroutine; stop the test here, not at the checks after.
		t.FailNow()
	}
	res.attempts, res.took = int(attempts.Load()), time.Since(start)
	t.Logf("sent %d notifications in %s: %d acknowledged, %d never; %d requests, answers by status %v", len(ds),
		res.took.Round(time.Millisecond), len(res.acked), len(res.failed), res.attempts, res.statuses)
	return res
}

// ---- reading the streams ----

// storedMsg is one message of a stream.
type storedMsg struct {
	seq     uint64
	subject string
	header  nats.Header
	data    []byte
}

// try calls f, with 5 s for each attempt, until it succeeds; the test fails once ctx ends.
func try(t *testing.T, ctx context.Context, what string, f func(ctx context.Context) error) {
	t.Helper()
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %v; trying again", what, err)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// readAllWait bounds readAll, retries included.
const readAllWait = 45 * time.Second

// readAll returns every message of a stream, oldest first.
func readAll(t *testing.T, js jetstream.JetStream, stream string) []storedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readAllWait)
	defer cancel()
	// Each request below goes to a stream or meta leader: with a node just killed, one goes unanswered until the
	// others elect a new leader (8 s and more on this machine), and is not sent again. Each attempt gets 5 s.
	var (
		info *jetstream.StreamInfo
		cons jetstream.Consumer
	)
	try(t, ctx, "read "+stream, func(ctx context.Context) (err error) {
		s, err := js.Stream(ctx, stream)
		if err == nil {
			info, err = s.Info(ctx)
		}
		return err
	})
	var out []storedMsg
	if info.State.Msgs == 0 {
		return out
	}
	t.Logf("%s: %d messages, %d bytes (%d a message)", stream, info.State.Msgs, info.State.Bytes, info.State.Bytes/info.State.Msgs)
	try(t, ctx, "read "+stream, func(ctx context.Context) (err error) {
		cons, err = js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		return err
	})
	for len(out) == 0 || out[len(out)-1].seq < info.State.LastSeq {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("read %s: %d of %d messages within %s: %v", stream, len(out), info.State.Msgs, readAllWait, err)
			}
			t.Logf("read %s: %v; trying again", stream, err)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		n := 0
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, storedMsg{seq: meta.Sequence.Stream, subject: m.Subject(), header: m.Headers(), data: m.Data()})
			n++
		}
		if n == 0 {
			if ctx.Err() != nil {
				t.Fatalf("read %s: %d of %d messages within %s", stream, len(out), info.State.Msgs, readAllWait)
			}
		}
	}
	return out
}

// presenceEvents decodes USHER_PRESENCE.
func presenceEvents(t *testing.T, msgs []storedMsg) []presence.Event {
	t.Helper()
	out := make([]presence.Event, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.data, &out[i]); err != nil {
			t.Fatalf("presence %d: %v", m.seq, err)
		}
		if out[i].Seq != m.seq {
			t.Fatalf("presence message %d carries seq %d", m.seq, out[i].Seq)
		}
	}
	return out
}

// checkExactlyOnce re-folds every stored notification, in USHER_NCS order, through the roster state machine, as
// the applier does, and checks that USHER_PRESENCE holds exactly the events that derives: none missing, none
// repeated, none out of place, byte for byte. (Tombstones are never pruned: a test is shorter than the retention.)
func checkExactlyOnce(t *testing.T, ncsMsgs, presenceMsgs []storedMsg) {
	t.Helper()
	st := presence.NewState(presence.Rules{Retention: gateway.DefaultTombstoneRetention})
	var want [][]byte
	for _, m := range ncsMsgs {
		if !strings.HasPrefix(m.subject, subject.NCSPrefix) {
			continue
		}
		received, _ := strconv.ParseInt(m.header.Get(gateway.HeaderReceivedMs), 10, 64)
		n := presence.Notice{ReceivedMs: received}
		if d, err := ncs.Decode(m.data); err == nil {
			n = presence.Notice{NoticeID: d.NoticeID, Type: d.EventType, Event: d.Event, NotifyMs: d.NotifyMs, ReceivedMs: received}
		}
		events, _ := st.Apply(n)
		for _, e := range events {
			e.Seq = uint64(len(want) + 1)
			st.Stored(e.Channel, e.Seq)
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, b)
		}
	}
	for i, m := range presenceMsgs {
		if i >= len(want) {
			t.Fatalf("USHER_PRESENCE holds %d events, the notifications derive %d; the first extra: %s", len(presenceMsgs), len(want), m.data)
		}
		if m.seq != uint64(i+1) || !bytes.Equal(m.data, want[i]) {
			t.Fatalf("USHER_PRESENCE event %d:\n got  %s\n want %s", m.seq, m.data, want[i])
		}
	}
	if len(presenceMsgs) != len(want) {
		t.Fatalf("USHER_PRESENCE holds %d events, the notifications derive %d: the first missing is %s", len(presenceMsgs), len(want), want[len(presenceMsgs)])
	}
	t.Logf("USHER_PRESENCE: %d events, exactly those the %d stored notifications derive", len(want), len(ncsMsgs))
}

// checkAcceptedStored checks that every acknowledged noticeId is in USHER_NCS.
func checkAcceptedStored(t *testing.T, acked []string, ncsMsgs []storedMsg) {
	t.Helper()
	ids := map[string]bool{}
	for _, m := range ncsMsgs {
		ids[m.header.Get(jetstream.MsgIDHeader)] = true
	}
	lost := 0
	for _, id := range acked {
		if !ids[id] {
			if lost < 5 {
				t.Errorf("notification %s was acknowledged and is not in USHER_NCS", id)
			}
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d acknowledged notifications lost", lost)
	}
}

// ---- rosters ----

func token(t *testing.T) string {
	t.Helper()
	tok, err := auth.Issue(jwtSecret, []string{auth.Wildcard}, time.Hour, "cluster-test")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitTruth waits until every instance serves every channel as the generator's truth has it.
func waitTruth(t *testing.T, gen *sim.Generator, us ...*usher) {
	t.Helper()
	bases := make([]string, len(us))
	for i, u := range us {
		bases[i] = u.base
	}
	testutil.WaitRosters(t, gen, token(t), 100*time.Millisecond, bases...)
}

// ---- WebSocket watchers ----

// watcher is a WebSocket client that watches channels on one instance, and when its connection drops reconnects
// to the next of its bases (as a client behind a load balancer would) and resumes every channel from the last seq
// it received. It records every presence seq per channel.
type watcher struct {
	name     string
	bases    []string
	token    string
	channels []string
	cancel   context.CancelFunc
	done     chan struct{}
	ready    chan struct{} // closed once every channel's first snapshot came

	mu       sync.Mutex
	start    map[string]uint64   // the seq of each channel's first snapshot
	seqs     map[string][]uint64 // presence seqs received, per channel
	last     map[string]uint64
	epoch    map[string]string // of each channel's first snapshot: resumes name it, so another epoch shows as a reset
	sessions int
	problems []string
}

func watch(t *testing.T, name string, channels []string, bases ...string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{name: name, bases: bases, token: token(t), channels: channels, cancel: cancel,
		done: make(chan struct{}), ready: make(chan struct{}),
		start: map[string]uint64{}, seqs: map[string][]uint64{}, last: map[string]uint64{}, epoch: map[string]string{}}
	go w.run(ctx)
	t.Cleanup(w.stop)
	select {
	case <-w.ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("watcher %s: no snapshots within 20 s: %v", name, w.problemList())
	}
	return w
}

func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	for i := 0; ctx.Err() == nil; i++ {
		err := w.session(ctx, w.bases[i%len(w.bases)])
		if ctx.Err() != nil {
			return
		}
		_ = err // a dropped connection; the next session resumes
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (w *watcher) problem(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
}

func (w *watcher) problemList() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.problems)
}

// session connects to base, subscribes (or resumes) every channel and records frames until the connection ends.
func (w *watcher) session(ctx context.Context, base string) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + w.token}}})
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(16 << 20)
	w.mu.Lock()
	w.sessions++
	var subs [][]byte
	for _, ch := range w.channels {
		req := map[string]any{"op": "subscribe", "channel": ch}
		if _, ok := w.start[ch]; ok {
			req["since"] = w.last[ch]
			if e := w.epoch[ch]; e != "" {
				req["epoch"] = e
			}
		}
		b, _ := json.Marshal(req)
		subs = append(subs, b)
	}
	w.mu.Unlock()
	for _, b := range subs {
		if err := conn.Write(dctx, websocket.MessageText, b); err != nil {
			return err
		}
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		var f struct {
			Type    string `json:"type"`
			Channel string `json:"channel"`
			Seq     uint64 `json:"seq"`
			Epoch   string `json:"epoch"`
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			w.problem("%s: frame %s: %v", base, b, err)
			continue
		}
		w.frame(base, f.Type, f.Channel, f.Seq, f.Epoch, string(b))
	}
}

func (w *watcher) frame(base, typ, ch string, seq uint64, epoch, raw string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch typ {
	case "subscribed":
	case "snapshot":
		if _, ok := w.start[ch]; ok {
			w.problems = append(w.problems, fmt.Sprintf("%s: a snapshot of %q on a resume: %.200s", base, ch, raw))
			return
		}
		w.start[ch], w.last[ch], w.epoch[ch] = seq, seq, epoch
		if epoch == "" {
			w.problems = append(w.problems, fmt.Sprintf("%s: a snapshot of %q without an epoch: %.200s", base, ch, raw))
		}
		if len(w.start) == len(w.channels) {
			close(w.ready)
		}
	case "presence":
		if seq <= w.last[ch] {
			w.problems = append(w.problems, fmt.Sprintf("%s: %q event %d after %d", base, ch, seq, w.last[ch]))
			return
		}
		w.seqs[ch] = append(w.seqs[ch], seq)
		w.last[ch] = seq
	default:
		w.problems = append(w.problems, fmt.Sprintf("%s: %.300s", base, raw))
	}
}

// verify waits until the watcher has every channel's last stored event, then checks that it received exactly the
// channel's stored events after its first snapshot, in order, each once.
func (w *watcher) verify(t *testing.T, presenceMsgs []storedMsg) {
	t.Helper()
	stored := map[string][]uint64{}
	for _, m := range presenceMsgs {
		ch := m.header.Get(gateway.HeaderChannel)
		if ch == "" {
			var e presence.Event
			_ = json.Unmarshal(m.data, &e)
			ch = e.Channel
		}
		stored[ch] = append(stored[ch], m.seq)
	}
	testutil.Eventually(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, ch := range w.channels {
			if s := stored[ch]; len(s) > 0 && w.last[ch] < s[len(s)-1] {
				return false, fmt.Sprintf("watcher %s: %q at %d, stored up to %d", w.name, ch, w.last[ch], s[len(s)-1])
			}
		}
		return true, ""
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.problems) > 0 {
		t.Fatalf("watcher %s: %d problems, the first: %v", w.name, len(w.problems), w.problems[:min(5, len(w.problems))])
	}
	total := 0
	for _, ch := range w.channels {
		var want []uint64
		for _, s := range stored[ch] {
			if s > w.start[ch] {
				want = append(want, s)
			}
		}
		if !slices.Equal(w.seqs[ch], want) {
			t.Fatalf("watcher %s, channel %q from snapshot %d: got %d events, stored %d\n got  %v\n want %v", w.name, ch,
				w.start[ch], len(w.seqs[ch]), len(want), w.seqs[ch], want)
		}
		total += len(want)
	}
	t.Logf("watcher %s: %d events over %d channels in %d session(s), gap-free, each once", w.name, total, len(w.channels), w.sessions)
}
