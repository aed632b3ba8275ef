package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/test/testutil"
)

// env returns a getenv over m.
func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestServeRefusesBadSettings(t *testing.T) {
	t.Parallel()
	natsListen := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)) // for a setting wrongly accepted
	good := func() map[string]string {
		return map[string]string{
			"USHER_NCS_SECRETS": "s1", "USHER_JWT_SECRET": "0123456789abcdef0123",
			"USHER_DATA_DIR": t.TempDir(), "USHER_NATS_LISTEN": "off", "PORT": "0",
		}
	}
	cases := []struct {
		name  string
		args  []string
		env   func(map[string]string)
		names string // what the one-line error must name
	}{
		{"no NCS secrets", nil, func(m map[string]string) { delete(m, "USHER_NCS_SECRETS") }, "USHER_NCS_SECRETS"},
		{"blank NCS secrets", []string{"serve"}, func(m map[string]string) { m["USHER_NCS_SECRETS"] = " , " }, "USHER_NCS_SECRETS"},
		{"no JWT secret", []string{"serve"}, func(m map[string]string) { delete(m, "USHER_JWT_SECRET") }, "USHER_JWT_SECRET"},
		{"short JWT secret", nil, func(m map[string]string) { m["USHER_JWT_SECRET"] = "short" }, "USHER_JWT_SECRET"},
		{"short previous JWT secret", nil, func(m map[string]string) { m["USHER_JWT_PREVIOUS_SECRETS"] = "0123456789abcdef0123,short" }, "USHER_JWT_PREVIOUS_SECRETS"},
		{"bad port", nil, func(m map[string]string) { m["PORT"] = "http" }, "PORT"},
		{"port out of range", nil, func(m map[string]string) { m["PORT"] = "70000" }, "PORT"},
		{"bad duration", nil, func(m map[string]string) { m["USHER_DEDUP_WINDOW"] = "ten" }, "USHER_DEDUP_WINDOW"},
		{"dedup window too short", nil, func(m map[string]string) { m["USHER_DEDUP_WINDOW"] = "1m" }, "USHER_DEDUP_WINDOW"},
		{"flag wins over env", []string{"--dedup-window", "1m"}, func(map[string]string) {}, "USHER_DEDUP_WINDOW"},
		{"retention too short", nil, func(m map[string]string) { m["USHER_TOMBSTONE_RETENTION"] = "10s" }, "USHER_TOMBSTONE_RETENTION"},
		{"zero max connections", nil, func(m map[string]string) { m["USHER_MAX_CONNECTIONS"] = "0" }, "USHER_MAX_CONNECTIONS"},
		{"zero resume events", nil, func(m map[string]string) { m["USHER_RESUME_EVENTS"] = "0" }, "USHER_RESUME_EVENTS"},
		{"bad log level", nil, func(m map[string]string) { m["USHER_LOG_LEVEL"] = "loud" }, "USHER_LOG_LEVEL"},
		{"bad NATS listen", nil, func(m map[string]string) { m["USHER_NATS_LISTEN"] = "nowhere" }, "USHER_NATS_LISTEN"},
		{"NATS listen port not a number", nil, func(m map[string]string) { m["USHER_NATS_LISTEN"] = "127.0.0.1:nats" }, "USHER_NATS_LISTEN"},
		{"NATS listen port out of range", nil, func(m map[string]string) { m["USHER_NATS_LISTEN"] = "127.0.0.1:70000" }, "USHER_NATS_LISTEN"},
		{"zero read header timeout", nil, func(m map[string]string) { m["USHER_READ_HEADER_TIMEOUT"] = "0s" }, "USHER_READ_HEADER_TIMEOUT"},
		{"zero idle timeout", nil, func(m map[string]string) { m["USHER_IDLE_TIMEOUT"] = "0s" }, "USHER_IDLE_TIMEOUT"},
		{"bad upgrade rate", nil, func(m map[string]string) { m["USHER_WS_UPGRADE_RATE"] = "fast" }, "USHER_WS_UPGRADE_RATE"},
		{"NaN upgrade rate", nil, func(m map[string]string) { m["USHER_WS_UPGRADE_RATE"] = "NaN" }, "USHER_WS_UPGRADE_RATE"},
		{"infinite upgrade rate", []string{"--ws-upgrade-rate", "+Inf"}, func(map[string]string) {}, "USHER_WS_UPGRADE_RATE"},
		{"zero per-subject limit", nil, func(m map[string]string) { m["USHER_MAX_CONNECTIONS_PER_SUBJECT"] = "0" }, "USHER_MAX_CONNECTIONS_PER_SUBJECT"},
		{"tiny body limit", nil, func(m map[string]string) { m["USHER_MAX_BODY_BYTES"] = "10" }, "USHER_MAX_BODY_BYTES"},
		{"bad allow-list", nil, func(m map[string]string) { m["USHER_NCS_ALLOW_CIDRS"] = "10.0.0.0/8,agora" }, "USHER_NCS_ALLOW_CIDRS"},
		{"bad trusted proxy", nil, func(m map[string]string) { m["USHER_TRUSTED_PROXIES"] = "lb" }, "USHER_TRUSTED_PROXIES"},
		{"cert without key", nil, func(m map[string]string) { m["USHER_TLS_CERT"] = "/etc/hostname" }, "USHER_TLS_KEY"},
		{"unreadable cert", nil, func(m map[string]string) {
			m["USHER_TLS_CERT"], m["USHER_TLS_KEY"] = "/nonexistent/cert.pem", "/nonexistent/key.pem"
		}, "USHER_TLS_CERT"},
		{"replicas not a number", nil, func(m map[string]string) { m["USHER_REPLICAS"] = "three" }, "USHER_REPLICAS"},
		{"zero replicas", nil, func(m map[string]string) { m["USHER_REPLICAS"] = "0" }, "USHER_REPLICAS"},
		{"zero dedup window", nil, func(m map[string]string) { m["USHER_DEDUP_WINDOW"] = "0s" }, "USHER_DEDUP_WINDOW"},
		{"zero NCS max age", nil, func(m map[string]string) { m["USHER_NCS_MAX_AGE"] = "0s" }, "USHER_NCS_MAX_AGE"},
		{"zero body limit", nil, func(m map[string]string) { m["USHER_MAX_BODY_BYTES"] = "0" }, "USHER_MAX_BODY_BYTES"},
		{"a flag over a bad variable", []string{"--port", "0", "--replicas", "0"}, func(m map[string]string) { m["PORT"] = "http" }, "USHER_REPLICAS"},
		{"replicas out of range", nil, func(m map[string]string) { m["USHER_REPLICAS"] = "7" }, "USHER_REPLICAS"},
		{"replicas on the embedded server", []string{"--replicas", "3"}, func(map[string]string) {}, "USHER_REPLICAS"},
		{"NATS creds without a NATS URL", nil, func(m map[string]string) { m["USHER_NATS_CREDS"] = "/etc/hostname" }, "USHER_NATS_CREDS"},
		{"NATS cert without key", nil, func(m map[string]string) {
			m["USHER_NATS_URL"], m["USHER_NATS_CERT"] = "nats://127.0.0.1:1", "/etc/hostname"
		}, "USHER_NATS_KEY"},
		{"unreadable NATS creds", nil, func(m map[string]string) {
			m["USHER_NATS_URL"], m["USHER_NATS_CREDS"] = "nats://127.0.0.1:1", "/nonexistent/usher.creds"
		}, "USHER_NATS_CREDS"},
		{"NATS creds that are not credentials", nil, func(m map[string]string) {
			m["USHER_NATS_URL"], m["USHER_NATS_CREDS"] = "nats://127.0.0.1:1", "/etc/hostname"
		}, "USHER_NATS_CREDS"},
		{"NATS CA that is not PEM", nil, func(m map[string]string) {
			m["USHER_NATS_URL"], m["USHER_NATS_CA"] = "nats://127.0.0.1:1", "/etc/hostname"
		}, "USHER_NATS_CA"},
		{"unreadable NATS client cert", nil, func(m map[string]string) {
			m["USHER_NATS_URL"], m["USHER_NATS_CERT"], m["USHER_NATS_KEY"] = "nats://127.0.0.1:1", "/nonexistent/c.pem", "/nonexistent/k.pem"
		}, "USHER_NATS_CERT"},
		{"NATS listen token with a NATS URL", nil, func(m map[string]string) {
			m["USHER_NATS_URL"], m["USHER_NATS_LISTEN_TOKEN"] = "nats://127.0.0.1:1", "listen-token-0123456789"
		}, "USHER_NATS_LISTEN_TOKEN"},
		{"NATS listen token with the listener off", nil, func(m map[string]string) {
			m["USHER_NATS_LISTEN"], m["USHER_NATS_LISTEN_TOKEN"] = "off", "listen-token-0123456789"
		}, "USHER_NATS_LISTEN_TOKEN"},
		// With the listener on: off, the token is refused for that before its length is looked at. (Port 0 is
		// nats-server's default, 4222, not a free one.)
		{"short NATS listen token", nil, func(m map[string]string) {
			m["USHER_NATS_LISTEN"], m["USHER_NATS_LISTEN_TOKEN"] = natsListen, "short"
		}, "USHER_NATS_LISTEN_TOKEN is 5 bytes"},
		// nats-server takes a token that looks like a bcrypt hash for one, and Usher, giving it as it is, is refused.
		{"NATS listen token like a bcrypt hash", nil, func(m map[string]string) {
			m["USHER_NATS_LISTEN"], m["USHER_NATS_LISTEN_TOKEN"] = natsListen, "$2a$11$0123456789abcdefghijkl"
		}, "USHER_NATS_LISTEN_TOKEN"},
		{"data dir under a file", nil, func(m map[string]string) { m["USHER_DATA_DIR"] = "/etc/hostname/data" }, "USHER_DATA_DIR"},
		{"missing secret file", nil, func(m map[string]string) {
			delete(m, "USHER_NCS_SECRETS")
			m["USHER_NCS_SECRETS_FILE"] = "/nonexistent/secret"
		}, "USHER_NCS_SECRETS_FILE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := good()
			tc.env(m)
			var stdout, stderr bytes.Buffer
			// A setting wrongly accepted starts the server, which then runs until ctx ends: a failure, not a hang.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := tc.args
			if len(args) > 0 && args[0] == "serve" {
				args = args[1:]
			}
			err := serve(ctx, args, env(m), &stdout, &stderr)
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.names) {
				t.Fatalf("error %v: want one line naming %s (stderr %q)", err, tc.names, stderr.String())
			}
		})
	}
}

// TestServeHelpListsEverySetting checks that `usher serve --help` and README's configuration table name the same
// settings, each with its flag, and that every setting's help gives its environment variable.
func TestServeHelpListsEverySetting(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"serve", "--help"}, env(nil), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	help := stderr.String()
	inHelp := map[string]bool{}
	for _, m := range regexp.MustCompile(`\(env ([A-Z_]+)`).FindAllStringSubmatch(help, -1) {
		inHelp[m[1]] = true
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	inReadme := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| `(--[a-z-]+)`").FindAllStringSubmatch(string(readme), -1) {
		inReadme[m[1]] = true
		if !strings.Contains(help, "  -"+strings.TrimPrefix(m[2], "--")+" ") {
			t.Errorf("README gives flag %s for %s; serve --help has no such flag", m[2], m[1])
		}
	}
	if len(inReadme) < 20 || len(inHelp) < 20 {
		t.Fatalf("found %d settings in README's table and %d in help: the patterns no longer match", len(inReadme), len(inHelp))
	}
	for name := range inHelp {
		if !inReadme[name] {
			t.Errorf("%s is in serve --help but not in README's configuration table", name)
		}
	}
	for name := range inReadme {
		if !inHelp[name] {
			t.Errorf("%s is in README's configuration table but serve --help does not give it as (env %s...)", name, name)
		}
	}
	if !strings.Contains(help, "-demo") {
		t.Error("serve --help does not mention --demo")
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	const secret = "0123456789abcdef0123"
	var stdout, stderr bytes.Buffer
	code := run([]string{"token", "--channel", "show-1", "--channel", "team-*", "--ttl", "2h", "--sub", "alice"},
		env(map[string]string{"USHER_JWT_SECRET": secret}), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	c, err := auth.NewVerifier(secret).Verify(strings.TrimSpace(stdout.String()))
	if err != nil {
		t.Fatalf("printed token does not verify: %v", err)
	}
	if c.Subject != "alice" || !c.Channels.Allows("show-1") || !c.Channels.Allows("team-red") || c.Channels.Allows("show-2") {
		t.Fatalf("claims %+v", c)
	}
	if d := c.ExpiresAt.Sub(c.IssuedAt.Time); d.Hours() != 2 {
		t.Fatalf("ttl %s, want 2h", d)
	}
	// The key from a file, and a flag that wins over a _FILE variable that cannot be read.
	keyFile := filepath.Join(t.TempDir(), "jwt")
	if err := os.WriteFile(keyFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"from USHER_JWT_SECRET_FILE": {[]string{"token", "--channel", "a"}, map[string]string{"USHER_JWT_SECRET_FILE": keyFile}},
		"a flag over a missing file": {[]string{"token", "--channel", "a", "--jwt-secret", secret},
			map[string]string{"USHER_JWT_SECRET_FILE": "/nonexistent/jwt"}},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, env(tc.env), &out, &errb); code != 0 {
			t.Errorf("%s: exit %d: %s", name, code, errb.String())
		} else if _, err := auth.NewVerifier(secret).Verify(strings.TrimSpace(out.String())); err != nil {
			t.Errorf("%s: the token does not verify with the key: %v", name, err)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"no secret", []string{"token", "--channel", "a"}, nil},
		{"no channel", []string{"token"}, map[string]string{"USHER_JWT_SECRET": secret}},
		{"illegal channel", []string{"token", "--channel", "a/b"}, map[string]string{"USHER_JWT_SECRET": secret}},
		{"bad ttl", []string{"token", "--channel", "a", "--ttl", "-1h"}, map[string]string{"USHER_JWT_SECRET": secret}},
		{"a key the server refuses", []string{"token", "--channel", "a"}, map[string]string{"USHER_JWT_SECRET": "short"}},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, env(tc.env), &out, &errb); code == 0 || out.Len() != 0 || errb.Len() == 0 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q: want a failure with a message and no token", tc.name, code, out.String(), errb.String())
		}
	}
}

// TestRunStopsOnSIGTERM runs the server as main does and sends the process SIGTERM: run must stop cleanly.
func TestRunStopsOnSIGTERM(t *testing.T) {
	var stdout, stderr testutil.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(nil, env(map[string]string{
			"USHER_NCS_SECRETS": "s1", "USHER_JWT_SECRET": "0123456789abcdef0123",
			"USHER_DATA_DIR": t.TempDir(), "USHER_NATS_LISTEN": "off", "PORT": "0", "USHER_LOG_LEVEL": "info",
		}), &stdout, &stderr)
	}()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(stderr.String(), "usher listening") {
		select {
		case code := <-done:
			t.Fatalf("run ended with %d before listening: %s", code, stderr.String())
		case <-deadline:
			t.Fatalf("not listening after 20 s: %s", stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// run's signal handler is installed before it listens, so the signal cannot kill the test process.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(stderr.String(), `"msg":"stopped"`) {
			t.Fatalf("exit %d, log:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop within 20 s of SIGTERM")
	}
}

// usher serve --help shows USHER_NATS_URL's value as the flag's default, without the password in it.
func TestServeHelpHidesNATSURLPassword(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	run([]string{"serve", "--help"}, env(map[string]string{"USHER_NATS_URL": "nats://alice:s3cretpw@n1:4222,nats://n2:4222"}), &out, &errb)
	if strings.Contains(errb.String(), "s3cretpw") || !strings.Contains(errb.String(), "nats://***@n1:4222,nats://n2:4222") {
		t.Fatalf("usher serve --help:\n%s\nwant the NATS URL shown without its password", errb.String())
	}
	errb.Reset()
	run([]string{"serve", "--help"}, env(map[string]string{"USHER_NATS_URL": "nats://alice:s3c,retpw@n1:4222"}), &out, &errb)
	if strings.Contains(errb.String(), "alice") || strings.Contains(errb.String(), "s3c") {
		t.Fatalf("usher serve --help:\n%s\nwant the NATS URL shown without its user and password (one holding a comma)", errb.String())
	}
}

// usher --help (and -h, help) prints the list of subcommands, not serve's flags.
func TestTopLevelHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h", "-help", "help"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{arg}, env(nil), &stdout, &stderr); code != 0 {
			t.Fatalf("usher %s: exit %d", arg, code)
		}
		if !strings.Contains(stdout.String(), "usher bench") || strings.Contains(stderr.String(), "-allowed-origins") {
			t.Errorf("usher %s printed, to stdout:\n%s\nto stderr:\n%s", arg, stdout.String(), stderr.String())
		}
	}
}

// usher serve --help gives each setting's default once: the value in effect, and the built-in one beside it only
// when an environment variable sets another.
func TestServeHelpGivesEachDefaultOnce(t *testing.T) {
	t.Parallel()
	helpOf := func(vars map[string]string) string {
		var out, errb bytes.Buffer
		if code := run([]string{"serve", "--help"}, env(vars), &out, &errb); code != 0 {
			t.Fatalf("exit %d", code)
		}
		return errb.String()
	}
	usage := helpOf(nil)
	for _, line := range strings.Split(usage, "\n") {
		if strings.Count(line, "default") > 1 {
			t.Errorf("a default given twice: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(usage, "(env USHER_CHECKPOINT_INTERVAL) (default 10s)") {
		t.Errorf("serve --help does not give USHER_CHECKPOINT_INTERVAL's default as (default 10s):\n%s", usage)
	}
	set := helpOf(map[string]string{"USHER_CHECKPOINT_INTERVAL": "30s"})
	if !strings.Contains(set, "(env USHER_CHECKPOINT_INTERVAL, built-in default 10s) (default 30s)") {
		t.Errorf("with USHER_CHECKPOINT_INTERVAL=30s, serve --help does not give both the value in effect and the built-in default:\n%s", set)
	}
}

// NCS secrets come comma-separated or one per line, as a USHER_NCS_SECRETS_FILE often holds them.
func TestSplitSecrets(t *testing.T) {
	t.Parallel()
	got := splitSecrets("one\ntwo,three\r\n\n four \n")
	if want := []string{"one", "two", "three", "four"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A USHER_NATS_URL the NATS client cannot parse stops start-up with a line that names it without its user, password
// or token: the parse error of Go's net/url quotes the whole URL, and a password with a character a URL's userinfo
// may not hold ('^', a space, '%' not followed by two hex digits) is ordinary.
func TestServeErrorHidesNATSURLCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, secret string }{
		{"nats://alice:pa^ssw0rd@127.0.0.1:1", "pa^ssw0rd"},
		{"nats://alice:pa%zzssw0rd@127.0.0.1:1", "zzssw0rd"},
		{"nats://n1:4222,tls://t0ken^x@127.0.0.1:1", "t0ken^x"},
		// A comma in a password: the NATS client splits the list there, and the piece before it, a fragment of the
		// user info, is what its error quotes.
		{"nats://alice:pa,ssw0rd@127.0.0.1:1", "alice:pa"},
		// A '/' or '?' in a password ends the host part of the URL there: net/url takes "alice:s3cr3t" for a host and
		// port, and its reason quotes the port, the password's start.
		{"nats://alice:s3cr3t/pw@127.0.0.1:1", "s3cr3t"},
		{"nats://alice:s3cr3t?pw@127.0.0.1:1", "s3cr3t"},
	} {
		var out, errb bytes.Buffer
		code := run(nil, env(map[string]string{
			"USHER_NCS_SECRETS": "s1", "USHER_JWT_SECRET": "0123456789abcdef0123", "PORT": "0", "USHER_NATS_URL": tc.url,
		}), &out, &errb)
		if code == 0 || strings.Contains(errb.String(), tc.secret) || strings.Contains(errb.String(), "%zz") ||
			!strings.Contains(errb.String(), "***@127.0.0.1:1") {
			t.Errorf("USHER_NATS_URL=%q: exit %d, stderr %q: want a failure naming the URL without its credentials", tc.url, code, errb.String())
		}
	}
}

// TestServeSignalledDuringStart: a SIGTERM while the server is still starting (its context ends before the streams
// are declared) is a stop asked for, not a failure: serve returns nil, as after a SIGTERM once it runs, rather than
// the start-up step's "context canceled" (exit 1, which a supervisor takes for a crash).
func TestServeSignalledDuringStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb testutil.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, nil, env(map[string]string{
			"USHER_NCS_SECRETS": "s1", "USHER_JWT_SECRET": "0123456789abcdef0123",
			"USHER_DATA_DIR": t.TempDir(), "USHER_NATS_LISTEN": "off", "PORT": "0",
		}), &out, &errb)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve signalled during start-up: %v; want nil (log %s)", err, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve still running 20 s after its context ended")
	}
}

// A rotation of USHER_JWT_SECRET without a moment when tokens are refused: tokens signed with a key listed in
// USHER_JWT_PREVIOUS_SECRETS are taken as well, by REST and by the WebSocket upgrade; others are not.
func TestServeTakesPreviousJWTSecrets(t *testing.T) {
	t.Parallel()
	const current, previous = "the-new-key-0123456789abcdef", "the-old-key-0123456789abcdef"
	port := testutil.FreePort(t)
	stdout, stderr := serveInBackground(t, nil, map[string]string{
		"USHER_NCS_SECRETS": "s1", "USHER_JWT_SECRET": current, "USHER_JWT_PREVIOUS_SECRETS": previous,
		"USHER_DATA_DIR": t.TempDir(), "USHER_NATS_LISTEN": "off", "PORT": strconv.Itoa(port),
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(secret, path string) int {
		tok, err := auth.Issue(secret, []string{"show-1"}, time.Hour, "viewer")
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		return get(current, "/v1/channels/show-1/presence") == 200, "not serving yet: " + stderr.String()
	})
	for _, tc := range []struct {
		secret, path string
		want         int
	}{
		{previous, "/v1/channels/show-1/presence", 200},
		{"some-other-key-0123456789abcdef", "/v1/channels/show-1/presence", 401},
		{previous, "/v1/ws", 426}, // taken: a GET without the upgrade headers is told to upgrade
		{"some-other-key-0123456789abcdef", "/v1/ws", 401},
	} {
		if got := get(tc.secret, tc.path); got != tc.want {
			t.Errorf("GET %s with a token of %q: %d, want %d", tc.path, tc.secret, got, tc.want)
		}
	}
	if strings.Contains(stdout.String()+stderr.String(), previous) {
		t.Error("the previous key is in the output")
	}
}

// serveInBackground runs usher serve with args and environment vars until the test ends, then waits (20 s at most)
// for it to stop. It returns serve's output.
func serveInBackground(t *testing.T, args []string, vars map[string]string) (stdout, stderr *testutil.SyncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr = &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, args, env(vars), stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop within 20 s of its context ending")
		}
	})
	return stdout, stderr
}
