package gateway

import (
	"context"

	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/hub"
)

// hubSource gives the hub this instance's view and the stored presence events.
type hubSource struct{ g *Gateway }

var _ hub.Source = hubSource{}

func (s hubSource) Snapshot(channel string) presence.Snapshot { return s.g.view.snapshot(channel) }
func (s hubSource) Seq(channel string) uint64                 { return s.g.view.channelSeq(channel) }
func (s hubSource) WaitSeq(ctx context.Context, seq uint64) error {
	return s.g.view.waitSeq(ctx, seq)
}

func (s hubSource) Events(ctx context.Context, channel string, since, until uint64, limit int) ([]presence.Event, uint64, error) {
	events, stored, err := s.g.events(ctx, channel, since, limit)
	if err != nil {
		return nil, 0, err
	}
	for i, e := range events {
		if e.Seq > until {
			return events[:i], stored, nil
		}
	}
	return events, stored, nil
}

func (s hubSource) Recent(channel string, since, until uint64, limit int) ([]presence.Event, bool) {
	return s.g.view.recentEvents(channel, since, until, limit)
}

func (s hubSource) FirstSeq(ctx context.Context) (uint64, error) {
	return presenceFirstSeq(ctx, s.g.js)
}
func (s hubSource) Ready() bool   { return s.g.view.ready.Load() }
func (s hubSource) Epoch() string { return s.g.view.epochNow() }
