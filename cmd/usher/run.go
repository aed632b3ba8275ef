package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `usher: real-time presence for Agora channels

Usage:
  usher [serve] [flags]     run the gateway (the default); usher serve --help lists every setting
  usher serve --demo        run with random secrets and a simulated Agora notification stream
  usher token --channel NAME [--channel NAME ...] [--ttl 1h] [--sub ID]
                            print a client token signed with USHER_JWT_SECRET
  usher bench [flags]       the load tool: signed notifications at a fixed rate, WebSocket subscribers, delivery
                            and latency figures; usher bench --help
  usher baseline [--port N] the bare WebSocket fan-out server usher bench compares Usher with
`

// run is main without the process: arguments, environment and output are passed in, the exit code returned.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		ctx, stop := signalContext()
		defer stop()
		err = serve(ctx, args, getenv, stdout, stderr)
	case "token":
		err = token(args, getenv, stdout, stderr)
	case "bench", "baseline":
		ctx, stop := signalContext()
		defer stop()
		if cmd == "bench" {
			err = bench(ctx, args, getenv, stdout, stderr)
		} else {
			err = baseline(ctx, args, getenv, stderr)
		}
	case "help", "-h", "-help", "--help": // usher serve --help lists serve's flags
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "usher: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "usher: %v\n", err)
		return 1
	}
	return 0
}

// signalContext is a context that the first SIGINT or SIGTERM ends, for a graceful stop. A second one then ends the
// process at once (the signal's default action): an operator who presses Ctrl-C again does not wait for it.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() { // ends with ctx: at the first signal, or when the caller stops
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

// errUsage is returned when the flag package has already printed what was wrong.
var errUsage = errors.New("usage")
