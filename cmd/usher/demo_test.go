package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/test/testutil"
)

// TestDemo runs usher serve --demo: it must print working secrets and a console link, and feed itself a simulated
// stream that it accepts, over several channels, readable on the embedded NATS server.
func TestDemo(t *testing.T) {
	t.Parallel()
	natsPort := testutil.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testutil.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--demo", "--demo-rate", "100"}, env(map[string]string{
			"PORT": "0", "USHER_DATA_DIR": t.TempDir(), "USHER_NATS_LISTEN": "127.0.0.1:" + strconv.Itoa(natsPort),
		}), &stdout, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop within 20 s of its context ending")
		}
	}()

	link := regexp.MustCompile(`console: +http://localhost:(\d+)/#token=(\S+)`)
	jwtLine := regexp.MustCompile(`JWT secret: +(\S+)`)
	var m []string
	deadline := time.Now().Add(20 * time.Second)
	for m = link.FindStringSubmatch(stdout.String()); m == nil; m = link.FindStringSubmatch(stdout.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no console link printed; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v; stderr %q", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	secret := jwtLine.FindStringSubmatch(stdout.String())
	if secret == nil {
		t.Fatalf("no JWT secret printed: %q", stdout.String())
	}
	claims, err := auth.NewVerifier(secret[1]).Verify(m[2])
	if err != nil || !claims.Channels.All() {
		t.Fatalf("console token: %v, claims %+v; want a valid \"*\" token", err, claims)
	}
	resp, err := http.Get("http://127.0.0.1:" + m[1] + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(page, []byte("<html")) {
		t.Fatalf("console page: %d %q", resp.StatusCode, page)
	}

	// The simulated stream arrives in USHER_NCS, over several channel subjects.
	nc, err := nats.Connect("nats://127.0.0.1:" + strconv.Itoa(natsPort))
	if err != nil {
		t.Fatalf("connect to the embedded nats: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := js.Stream(sctx, bus.NCSStream)
		var subjects map[string]uint64
		if err == nil {
			var si *jetstream.StreamInfo
			si, err = info.Info(sctx, jetstream.WithSubjectFilter(">"))
			if err == nil {
				subjects = si.State.Subjects
			}
		}
		scancel()
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		if len(subjects) >= 4 {
			t.Logf("demo stored on %d subjects", len(subjects))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s the demo stored on %d subjects: %v", len(subjects), subjects)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if bytes.Contains([]byte(stderr.String()), []byte("rejected")) {
		t.Fatalf("the server rejected demo notifications:\n%s", stderr.String())
	}
}

// --demo with the operator's own secrets set prints neither: only the secrets it made up, and a console link that
// works with the operator's JWT secret.
func TestDemoKeepsGivenSecrets(t *testing.T) {
	t.Parallel()
	const jwtSecret, ncsSecret = "operators-jwt-secret-0123456789abcdef", "operators-ncs-secret-0123456789"
	stdout, stderr := serveInBackground(t, []string{"--demo"}, map[string]string{
		"PORT": "0", "USHER_DATA_DIR": t.TempDir(), "USHER_NATS_LISTEN": "off",
		"USHER_JWT_SECRET": jwtSecret, "USHER_NCS_SECRETS": ncsSecret,
	})
	link := regexp.MustCompile(`console: +http://localhost:(\d+)/#token=(\S+)`)
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, func() (bool, string) {
		return link.MatchString(stdout.String()), "no console link: " + stdout.String()
	})
	out := stdout.String() + stderr.String()
	if strings.Contains(out, jwtSecret) || strings.Contains(out, ncsSecret) {
		t.Fatalf("a secret the operator gave is printed:\n%s", out)
	}
	if !strings.Contains(stdout.String(), "yours, from USHER_JWT_SECRET") {
		t.Errorf("stdout does not say whose secrets are used:\n%s", stdout.String())
	}
	m := link.FindStringSubmatch(stdout.String())
	if _, err := auth.NewVerifier(jwtSecret).Verify(m[2]); err != nil {
		t.Fatalf("the console token is not signed with the operator's secret: %v", err)
	}
}
