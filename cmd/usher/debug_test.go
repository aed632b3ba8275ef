package main

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-presence/usher/test/testutil"
)

// A CPU profile being taken on USHER_DEBUG_ADDR when the server is told to stop neither holds up the stop nor goes on
// after serve has returned.
func TestServeStopsDuringAProfile(t *testing.T) {
	debug := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb testutil.SyncBuffer
	done, stopped := make(chan error, 1), false
	go func() {
		done <- serve(ctx, nil, env(map[string]string{
			"USHER_NCS_SECRETS": "s1", "USHER_JWT_SECRET": "0123456789abcdef0123",
			"USHER_DATA_DIR": t.TempDir(), "USHER_NATS_LISTEN": "off", "PORT": "0", "USHER_DEBUG_ADDR": debug,
		}), &out, &errb)
	}()
	t.Cleanup(func() {
		if stopped {
			return
		}
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop within 20 s of its context ending")
		}
	})
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, func() (bool, string) {
		return strings.Contains(errb.String(), "usher listening"), "serve not listening: " + errb.String()
	})

	client := &http.Client{Timeout: 90 * time.Second}
	var profiled chan error
	profile := func() {
		profiled = make(chan error, 1)
		go func(ended chan<- error) {
			resp, err := client.Get("http://" + debug + "/debug/pprof/profile?seconds=60")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			ended <- err
		}(profiled)
	}
	profile()
	// The profile has begun once another is refused ("cpu profiling already in use"). A probe that came first makes
	// it the one refused: it is asked again.
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() (bool, string) {
		select {
		case <-profiled:
			profile()
		default:
		}
		resp, err := http.Get("http://" + debug + "/debug/pprof/profile?seconds=1")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusInternalServerError, "the 60 s profile not under way: " + resp.Status
	})

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve still running 20 s after its context ended")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("serve took %s to stop while a profile was taken; want under 3 s", took.Round(time.Millisecond))
	}
	select {
	case <-profiled: // answered or cut: either way no longer taken
	case <-time.After(time.Second):
		t.Error("the profile is still being taken after serve returned")
	}
}
