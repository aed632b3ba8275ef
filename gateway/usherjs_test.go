package gateway_test

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/test/testutil"
)

type driveLine struct {
	Kind     string
	State    string
	Info     map[string]any
	Seq      uint64
	Event    string
	UID      uint32
	Audience []uint32
	Code     string
}

// nodeWithWebSocket returns the node binary, or skips the test when there is none with a WebSocket.
func nodeWithWebSocket(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; usher.js is tested in a browser by the console test")
	}
	if exec.Command(node, "--experimental-websocket", "--no-warnings", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)").Run() != nil {
		t.Skip("this node has no WebSocket (it needs Node 20.10 or later)")
	}
	return node
}

// startDrive runs testdata/usher-drive.cjs (usher.js subscribed to ch through url) and returns a function that
// waits up to 20 s for its next line of a kind, failing on an unexpected event, snapshot, reset or error.
func startDrive(t *testing.T, node, url, tok, ch string, connectTimeout time.Duration) func(kind string) driveLine {
	t.Helper()
	script, _ := filepath.Abs("testdata/usher-drive.cjs")
	lib, _ := filepath.Abs("../web/static/usher.js")
	cmd := exec.Command(node, "--experimental-websocket", "--no-warnings", script, url, tok, ch, lib,
		strconv.FormatInt(connectTimeout.Milliseconds(), 10))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	lines := make(chan driveLine, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l driveLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				lines <- l
			}
		}
	}()
	var seen []driveLine // the last lines, for the failure message
	return func(kind string) driveLine {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the client ended while waiting for %s", kind)
				}
				if seen = append(seen, l); len(seen) > 10 {
					seen = seen[1:]
				}
				if l.Kind == kind {
					return l
				}
				if l.Kind == "event" || l.Kind == "snapshot" || l.Kind == "reset" || l.Kind == "error" {
					t.Fatalf("got %+v while waiting for %s", l, kind)
				}
			case <-deadline:
				t.Fatalf("no %s within 20 s; the last lines: %+v", kind, seen)
			}
		}
	}
}

// TestUsherJSResumes runs web/static/usher.js in Node against the real server through a proxy, cuts the
// connection while events happen, and checks that the client resumes from its last seq with no gap and no repeat.
func TestUsherJSResumes(t *testing.T) {
	node := nodeWithWebSocket(t)
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	const ch = "show #1"
	joinAudience(t, base, ch, 1, 2)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 2 })

	proxy := testutil.NewCutProxy(t, base[len("http://"):])
	next := startDrive(t, node, "ws://"+proxy.Addr()+"/v1/ws", token(t, ch), ch, 2*time.Second)

	if s := next("snapshot"); len(s.Audience) != 2 {
		t.Fatalf("snapshot %+v", s)
	}
	joinAudience(t, base, ch, 3)
	last := next("event")
	if last.UID != 3 {
		t.Fatalf("event %+v", last)
	}

	proxy.Cut()
	joinAudience(t, base, ch, 4, 5) // happen while the client is cut off
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 5 })
	proxy.Restore()
	for {
		l := next("state")
		if l.State == "live" {
			if l.Info["resumed"] != true {
				t.Fatalf("live again but not resumed: %+v", l)
			}
			break
		}
	}
	for _, uid := range []uint32{4, 5} { // the missed events, in order, and no snapshot
		if e := next("event"); e.UID != uid || e.Seq <= last.Seq {
			t.Fatalf("after the cut: %+v, want uid %d after seq %d", e, uid, last.Seq)
		} else {
			last = e
		}
	}
	joinAudience(t, base, ch, 6)
	if e := next("event"); e.UID != 6 || e.Seq <= last.Seq {
		t.Fatalf("live after resume: %+v", e)
	}
}

// TestUsherJSConnectTimeout checks that an attempt whose handshake never completes is abandoned and retried: the
// proxy accepts and closes every connection before the HTTP answer, which Node's WebSocket never reports.
func TestUsherJSConnectTimeout(t *testing.T) {
	node := nodeWithWebSocket(t)
	t.Parallel()
	_, base := startGateway(t, testConfig(t, t.TempDir()))
	const ch = "show-timeout"
	joinAudience(t, base, ch, 7)
	waitSnapshot(t, base, ch, func(s presence.Snapshot) bool { return s.Counts.Audience == 1 })

	proxy := testutil.NewCutProxy(t, base[len("http://"):])
	proxy.Cut()
	next := startDrive(t, node, "ws://"+proxy.Addr()+"/v1/ws", token(t, ch), ch, 300*time.Millisecond)
	for timeouts := 0; timeouts < 2; {
		l := next("state")
		if l.State == "live" {
			t.Fatalf("live through a proxy that answers nothing: %+v", l)
		}
		if l.State == "reconnecting" && l.Info["timeout"] == true {
			timeouts++
		}
	}
	proxy.Restore()
	for l := next("state"); l.State != "live"; l = next("state") {
	}
	if s := next("snapshot"); len(s.Audience) != 1 || s.Audience[0] != 7 {
		t.Fatalf("snapshot after the timeouts: %+v", s)
	}
}
