package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/usher-presence/usher/hub/loadtest"
)

// bench runs the load tool: against a running server (--url), or against servers it starts itself (--spawn), in
// which case it can read their CPU time and memory.
func bench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var (
		cfg             loadtest.Config
		target, url     string
		spawn, idle     bool
		findMax, ingest bool
		rate            float64
		duration        time.Duration
		pid             int
	)
	s := newSettings("bench", getenv, stderr)
	s.fs.StringVar(&target, "target", "usher", "usher, baseline (the bare fan-out server), or both (the same run against each, for a ratio)")
	s.fs.StringVar(&url, "url", "", "base URL of a running server; empty with --spawn. Its USHER_WS_UPGRADE_RATE and _BURST must let the fleet dial from one address")
	s.fs.BoolVar(&spawn, "spawn", true, "start the server(s) as child processes (so their CPU and memory can be read)")
	s.fs.IntVar(&pid, "pid", 0, "with --url: the server's process id, to read its CPU time and memory")
	s.Secret(&cfg.NCSSecret, "ncs-secret", "USHER_NCS_SECRETS", "NCS secret of the running Usher (--url)")
	s.Secret(&cfg.JWTSecret, "jwt-secret", "USHER_JWT_SECRET", "JWT secret of the running Usher (--url)")
	s.fs.IntVar(&cfg.Channels, "channels", 1, "channels")
	s.fs.IntVar(&cfg.Subscribers, "subscribers", 100, "WebSocket subscribers, spread over the channels")
	s.fs.Float64Var(&rate, "rate", 100, "notifications per second (each makes one presence event)")
	s.fs.DurationVar(&duration, "duration", 10*time.Second, "how long to send")
	s.fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "how long to wait for the last events")
	s.fs.IntVar(&cfg.Senders, "senders", 32, "webhook requests in flight at most")
	s.fs.BoolVar(&findMax, "find-max", false, "search the highest rate with >= 99.9% delivered and p99 < 250 ms")
	s.fs.BoolVar(&idle, "idle", false, "only hold the connections and report the server's KiB per connection")
	s.fs.BoolVar(&ingest, "ingest", false, "send as fast as the server acknowledges (--rate is the ceiling) and report acknowledged notifications per second")
	if err := s.Parse(args); err != nil {
		return err
	}
	if secrets := splitSecrets(cfg.NCSSecret); len(secrets) > 0 {
		cfg.NCSSecret = secrets[0] // the same USHER_NCS_SECRETS as the server's: a list while secrets rotate
	}
	targets := []string{target}
	if target == "both" {
		targets = []string{loadtest.TargetUsher, loadtest.TargetBaseline}
	}
	if spawn && url == "" {
		for _, dir := range sweepBenchDirs(os.TempDir(), time.Now()) {
			fmt.Fprintf(stderr, "removed %s, left by a bench that was killed\n", dir)
		}
	}
	var reports []loadtest.Report
	// one measures target t; a server it started is stopped before the next target's run, so that the two never
	// share the machine (or a debug address).
	one := func(t string) error {
		c := cfg
		c.Target, c.Log = t, stderr
		c.URL, c.ServerPID = url, pid
		if spawn && url == "" {
			srv, err := spawnServer(ctx, t)
			if err != nil {
				return err
			}
			defer srv.stop()
			c.URL, c.ServerPID, c.NCSSecret, c.JWTSecret = srv.url, srv.cmd.Process.Pid, srv.ncs, srv.jwt
		}
		if c.URL == "" {
			return errors.New("give --url, or --spawn")
		}
		before := loadtest.ServerRSS(c.ServerPID)
		fmt.Fprintf(stderr, "%s: connecting %d subscribers over %d channels\n", t, c.Subscribers, c.Channels)
		fleet, err := loadtest.Connect(ctx, c)
		if err != nil {
			return err
		}
		defer fleet.Close()
		switch {
		case idle:
			time.Sleep(3 * time.Second) // let the server settle (bounded; measuring, not synchronising)
			kib, rss := fleet.IdleKiB(before)
			fmt.Fprintf(stdout, "%s: %d idle connections: %.1f KiB per connection (server RSS %d -> %d KiB)\n", t, c.Subscribers, kib, before, rss)
		case findMax:
			r, err := search(ctx, fleet, rate, duration, stdout)
			if err != nil {
				return err
			}
			reports = append(reports, r)
		default:
			r, err := fleet.Run(ctx, rate, duration)
			if err != nil {
				return err
			}
			if ingest {
				fmt.Fprintf(stdout, "%s: %.0f notifications/s acknowledged (asked %.0f/s, %d in flight)\n", t, r.AckedPerSec, rate, c.Senders)
			}
			fmt.Fprintln(stdout, r)
			reports = append(reports, r)
		}
		return nil
	}
	for _, t := range targets {
		if err := one(t); err != nil {
			return err
		}
	}
	// A search that found no passing rate reports nothing (a zero report): no ratio to it.
	if len(reports) == 2 && reports[0].CPUPer1000 > 0 && reports[0].P99 > 0 && reports[1].CPUPer1000 > 0 && reports[1].P99 > 0 {
		u, b := reports[0], reports[1]
		fmt.Fprintf(stdout, "usher/baseline: CPU per delivery %.2fx, p99 %.2fx, rate %.2fx\n",
			float64(u.CPUPer1000)/float64(b.CPUPer1000), float64(u.P99)/float64(b.P99), u.Rate/b.Rate)
	}
	return nil
}

// search doubles the rate while runs pass, then bisects three times between the last pass and the first failure.
func search(ctx context.Context, f *loadtest.Fleet, start float64, d time.Duration, out io.Writer) (loadtest.Report, error) {
	var best loadtest.Report
	lo, hi := 0.0, 0.0
	try := func(rate float64) error {
		r, err := f.Run(ctx, rate, d)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  %s pass=%v\n", r, r.Pass())
		if r.Pass() {
			lo, best = rate, r
		} else {
			hi = rate
		}
		return nil
	}
	for rate := start; hi == 0 && rate < 1e6; rate *= 2 {
		if err := try(rate); err != nil {
			return best, err
		}
	}
	for i := 0; i < 3 && lo > 0 && hi > 0; i++ {
		if err := try((lo + hi) / 2); err != nil {
			return best, err
		}
	}
	if lo == 0 {
		fmt.Fprintf(out, "no rate from %.0f/s up passed: start lower (--rate)\n", start)
		return best, nil
	}
	fmt.Fprintf(out, "highest passing rate: %.0f/s\n%s\n", lo, best)
	return best, nil
}

// spawned is a server the bench started.
type spawned struct {
	cmd      *exec.Cmd
	url      string
	ncs, jwt string
	dir      string
	lock     benchLock     // dir's lock, which marks it as in use: held by this bench and by the server
	exited   chan struct{} // closed once the process has exited
}

func spawnServer(ctx context.Context, target string) (*spawned, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	s := &spawned{url: "http://127.0.0.1:" + strconv.Itoa(port), ncs: randomSecret(), jwt: randomSecret()}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if s.dir, s.lock, err = makeBenchDir(); err != nil {
		return nil, err
	}
	sub := "serve"
	if target == loadtest.TargetBaseline {
		sub = "baseline"
	}
	s.cmd = exec.Command(self, sub, "--port", strconv.Itoa(port))
	s.cmd.Env = append(os.Environ(), "USHER_NCS_SECRETS="+s.ncs, "USHER_JWT_SECRET="+s.jwt, "USHER_DATA_DIR="+s.dir,
		// No listener, so no token for one (an operator's own would have the server refuse the two together).
		"USHER_NATS_LISTEN=off", "USHER_NATS_LISTEN_TOKEN=", "USHER_NATS_LISTEN_TOKEN_FILE=",
		"USHER_LOG_LEVEL=warn", "USHER_MAX_CONNECTIONS=25000",
		// The fleet dials thousands of connections from one address: lift the per-address upgrade limit.
		"USHER_WS_UPGRADE_RATE=1000000", "USHER_WS_UPGRADE_BURST=1000000")
	s.cmd.Stderr = os.Stderr
	s.cmd.SysProcAttr = childAttr()
	s.lock.holdBy(s.cmd)
	if err := s.cmd.Start(); err != nil {
		s.lock.release()
		_ = os.RemoveAll(s.dir)
		return nil, err
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	// Ready when /healthz answers 200 (the baseline answers 404 there: any answer from it will do).
	probe := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := probe.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 || target == loadtest.TargetBaseline {
				return s, nil
			}
		}
		select {
		case <-s.exited:
			s.stop()
			return nil, fmt.Errorf("%s exited at start: %v (its log is above)", target, s.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("%s did not start within 30 s", target)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *spawned) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	_ = os.RemoveAll(s.dir)
	s.lock.release()
}

// baseline serves the bare fan-out server the load tool compares Usher with.
func baseline(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	var (
		port      int
		debugAddr string
	)
	s := newSettings("baseline", getenv, stderr)
	s.Int(&port, "port", "PORT", 8081, "HTTP listen port")
	s.String(&debugAddr, "debug-addr", "USHER_DEBUG_ADDR", "", "host:port for Go's /debug/pprof profiles, to compare with Usher's; unset: off")
	if err := s.Parse(args); err != nil {
		return err
	}
	if debugAddr != "" {
		stop, err := serveDebug(debugAddr, slog.New(slog.NewTextHandler(stderr, nil)))
		if err != nil {
			return err
		}
		defer stop()
	}
	srv := &http.Server{Addr: ":" + strconv.Itoa(port), Handler: loadtest.NewBaseline(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}
