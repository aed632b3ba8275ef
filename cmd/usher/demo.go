package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/usher-presence/usher/gateway/ncs/sim"
)

// runDemoFeed posts a simulated NCS stream, with Agora's faults, to url at rate per second until ctx ends.
func runDemoFeed(ctx context.Context, url, secret string, rate float64, log *slog.Logger) {
	gen, err := sim.New(sim.Config{Channels: 6, Hosts: 2, Audience: 12, Seed: uint64(time.Now().UnixNano())})
	if err != nil {
		log.Error("demo feed", "err", err)
		return
	}
	sender := &sim.Sender{URL: url, Secret: secret, Client: &http.Client{Timeout: 10 * time.Second}}
	// Count 0: the demo feed runs until the server shuts down, which ends ctx.
	st, err := sim.Run(ctx, gen, sender, sim.RunConfig{Rate: rate, Concurrency: 2})
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("demo feed stopped", "err", err)
	}
	log.Info("demo feed stopped", "sent", st.Sent, "acked", st.Acked, "failed", st.Failed)
}
