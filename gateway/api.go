package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/gateway/subject"
)

// Limits of GET /v1/channels/{channel}/events.
const (
	DefaultEventsLimit = 100
	MaxEventsLimit     = 1000
)

// API errors.
var (
	errForbidden  = errors.New("the token does not grant this channel")
	errNeedsAll   = errors.New(`the channel list needs a token that grants "*"`)
	errBadRequest = errors.New("bad request")
)

// claimsKey is where requireToken keeps the verified claims in a gin context.
type claimsKey struct{}

// requireToken verifies the bearer token and keeps its claims for the handler.
func (g *Gateway) requireToken(c *gin.Context) {
	claims, err := g.tokens.Verify(bearerHeader(c))
	if err != nil {
		_ = c.Error(err)
		c.Abort()
		return
	}
	c.Set(claimsKey{}, claims)
	c.Next()
}

// bearerHeader is the token of an "Authorization: Bearer" header (the scheme in any case), or "".
func bearerHeader(c *gin.Context) string {
	tok, _ := auth.FromHeader(c.GetHeader("Authorization"))
	return tok
}

// claimsOf returns the claims requireToken verified.
func claimsOf(c *gin.Context) *auth.Claims {
	v, _ := c.Get(claimsKey{})
	cl, _ := v.(*auth.Claims)
	return cl
}

// channelParam returns the channel of the path, checked against Agora's rules and the token's grants.
func channelParam(c *gin.Context) (string, error) {
	ch := c.Param("channel")
	if err := ncs.ValidChannelName(ch); err != nil {
		return "", err
	}
	if cl := claimsOf(c); cl == nil || !cl.Channels.Allows(ch) {
		return "", errForbidden
	}
	return ch, nil
}

// getPresence answers a channel's roster snapshot.
func (g *Gateway) getPresence(c *gin.Context) {
	ch, err := channelParam(c)
	if err != nil {
		_ = c.Error(err)
		return
	}
	if !g.view.ready.Load() {
		_ = c.Error(errViewLoading)
		return
	}
	c.JSON(http.StatusOK, g.view.snapshot(ch))
}

// getChannels lists the channels with members; it needs the "*" grant. Without a query, every one of them, by
// name. q keeps those whose name contains it, regardless of ASCII case; sort=size puts the busiest first; limit
// keeps the first so many. total is how many matched, before the limit: a console that shows the busiest 200 of
// 100,000 channels gets 200, not an 8 MB list to sort and filter itself every few seconds.
func (g *Gateway) getChannels(c *gin.Context) {
	if cl := claimsOf(c); cl == nil || !cl.Channels.All() {
		_ = c.Error(errNeedsAll)
		return
	}
	q := c.Query("q")
	if len(q) > ncs.MaxChannelNameLength {
		_ = c.Error(fmt.Errorf("%w: q is %d bytes; a channel name has at most %d", errBadRequest, len(q), ncs.MaxChannelNameLength))
		return
	}
	order := c.Query("sort")
	if order == "" {
		order = "name" // as an empty q or limit is none
	}
	if order != "name" && order != "size" {
		_ = c.Error(fmt.Errorf("%w: sort is %q: give name (the default) or size (the busiest first)", errBadRequest, order))
		return
	}
	limit, err := uintQuery(c, "limit", 0, math.MaxInt32)
	if err != nil {
		_ = c.Error(err)
		return
	}
	if !g.view.ready.Load() {
		_ = c.Error(errViewLoading)
		return
	}
	by := presence.ByName
	if order == "size" {
		by = presence.BySize
	}
	list, total := g.view.channels(q, int(limit), by)
	c.JSON(http.StatusOK, gin.H{"channels": list, "total": total})
}

// getEvents answers the channel's events with seq > since, oldest first, at most limit of them.
func (g *Gateway) getEvents(c *gin.Context) {
	ch, err := channelParam(c)
	if err != nil {
		_ = c.Error(err)
		return
	}
	since, err := uintQuery(c, "since", 0, 1<<63)
	if err != nil {
		_ = c.Error(err)
		return
	}
	limit, err := uintQuery(c, "limit", DefaultEventsLimit, MaxEventsLimit)
	if err != nil {
		_ = c.Error(err)
		return
	}
	raw, given := c.GetQuery("since")
	given = given && raw != "" // no since: no claim to be up to date
	theirs := c.Query("epoch")
	if given {
		if events, epoch, ok := g.view.recentPage(ch, since, int(limit)); ok {
			// From the view's memory of the latest events, as a WebSocket resume: no read of the stream.
			if theirs != "" && theirs != epoch {
				_ = c.Error(otherEpoch(since, theirs, epoch))
				return
			}
			c.JSON(http.StatusOK, gin.H{"events": events, "epoch": epoch})
			return
		}
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	events, _, err := g.events(ctx, ch, since, int(limit))
	var st presenceState
	if err == nil {
		// Read after the events: if any after since had expired before or while they were read, it shows here.
		st, err = presenceStreamState(ctx, g.js)
	}
	first, epoch := st.first, st.epoch
	if err != nil {
		g.logOf(c).Error("read presence events", "channel", ch, "err", err)
		_ = c.Error(errEventsDown)
		return
	}
	switch {
	case given && since+1 < first && !g.view.quietBetween(ch, since, first-1, epoch):
		_ = c.Error(fmt.Errorf("%w: events after seq %d are gone (the oldest kept is %d): read the presence snapshot, then the events after its seq",
			errEventsExpired, since, first))
		return
	case given && theirs != "" && theirs != epoch:
		_ = c.Error(otherEpoch(since, theirs, epoch))
		return
	}
	c.JSON(http.StatusOK, gin.H{"events": events, "epoch": epoch})
}

// otherEpoch is the 410 for a since of another epoch than the presence stream's.
func otherEpoch(since uint64, theirs, epoch string) error {
	return fmt.Errorf("%w: seq %d is of epoch %s, and the presence stream was made anew since (epoch %s): read the presence snapshot, then the events after its seq",
		errEventsExpired, since, theirs, epoch)
}

// quietBetween reports whether this instance's rosters show that channel had no event after seq since and up to
// seq upto: they hold every event of the presence stream of epoch up to upto, and the channel's last is at or
// before since. A channel quiet for longer than USHER_PRESENCE_MAX_AGE has a snapshot whose seq is older than the
// oldest event kept; the events after it are then gone, but none was the channel's, and a client that read the
// snapshot (as a 410 tells it to) must be answered, not told again to read it.
func (lv *liveView) quietBetween(channel string, since, upto uint64, epoch string) bool {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	return lv.ready.Load() && lv.epoch == epoch && lv.seq >= upto && lv.v.Seq(channel) <= since
}

// presenceFirstSeq is the oldest event USHER_PRESENCE still keeps (the last one's seq plus 1 when it keeps none; 0
// before the first event).
func presenceFirstSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	st, err := presenceStreamState(ctx, js)
	return st.first, err
}

// presenceState is what USHER_PRESENCE holds, and its epoch.
type presenceState struct {
	first, last uint64 // as presenceFirstSeq; the last event's seq (0 when none was ever stored)
	// epoch is when the stream was made, in Unix milliseconds. A stream made anew (a wiped data directory, a stream
	// deleted by hand) starts its seqs again, so a seq from before means nothing in it: clients send the epoch with
	// the seq they resume from.
	epoch string
}

func presenceStreamState(ctx context.Context, js jetstream.JetStream) (presenceState, error) {
	ps, err := js.Stream(ctx, bus.PresenceStream) // one request: it fetches the stream's info
	if err != nil {
		return presenceState{}, fmt.Errorf("presence stream: %w", err)
	}
	info := ps.CachedInfo()
	return presenceState{first: info.State.FirstSeq, last: info.State.LastSeq, epoch: epochOf(info.Created)}, nil
}

// epochOf is the epoch of a stream made at created.
func epochOf(created time.Time) string { return strconv.FormatInt(created.UnixMilli(), 10) }

func uintQuery(c *gin.Context, name string, def, limit uint64) (uint64, error) {
	raw, ok := c.GetQuery(name)
	if !ok || raw == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(raw, 10, 64)
	if err != nil || v > limit || (name == "limit" && v == 0) {
		lowest := 0
		if name == "limit" {
			lowest = 1
		}
		return 0, fmt.Errorf("%w: %s must be a whole number from %d to %d", errBadRequest, name, lowest, limit)
	}
	return v, nil
}

// maxEventReads bounds the reads of stored events under way at once (g.reads).
const maxEventReads = 64

// events reads up to limit events of channel with seq > since from USHER_PRESENCE, and tells how many were stored
// after since. At most maxEventReads run at once; the others wait, within ctx. On a NATS cluster the first pull
// from a consumer just created can reach a server before the consumer does ("no responders"): that read is made up
// to 5 times in all, 100 ms apart, within ctx.
func (g *Gateway) events(ctx context.Context, channel string, since uint64, limit int) ([]presence.Event, uint64, error) {
	select {
	case g.reads <- struct{}{}:
		defer func() { <-g.reads }()
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("waiting for one of the %d event reads under way to end: %w", cap(g.reads), ctx.Err())
	}
	for attempt := 1; ; attempt++ {
		out, stored, err := g.readEvents(ctx, channel, since, limit)
		if err == nil || !errors.Is(err, nats.ErrNoResponders) || attempt == 5 {
			return out, stored, err
		}
		select {
		case <-ctx.Done():
			return nil, 0, errors.Join(err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readEvents reads one page of events through an ordered consumer made for it, and deletes that consumer.
func (g *Gateway) readEvents(ctx context.Context, channel string, since uint64, limit int) ([]presence.Event, uint64, error) {
	out := []presence.Event{}
	cons, err := g.js.OrderedConsumer(ctx, bus.PresenceStream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subject.Presence(channel)},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       since + 1,
		InactiveThreshold: readerInactive,
	})
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		// The library leaves the consumer on the server; delete it now (readerInactive is the fallback).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if info := cons.CachedInfo(); info != nil {
			_ = g.js.DeleteConsumer(dctx, bus.PresenceStream, info.Name)
		}
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	stored := info.NumPending
	want := min(uint64(limit), stored)
	if want == 0 {
		return out, stored, nil
	}
	batch, err := cons.Fetch(int(want), jetstream.FetchContext(ctx))
	if err != nil {
		return nil, 0, err
	}
	got := 0
	for msg := range batch.Messages() {
		got++
		meta, err := msg.Metadata()
		if err != nil {
			return nil, 0, err
		}
		var e presence.Event
		if err := json.Unmarshal(msg.Data(), &e); err != nil {
			continue
		}
		e.Seq = meta.Sequence.Stream
		out = append(out, e)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, 0, err
	}
	if got == 0 {
		// Events were pending and none came in time (the consumer's server died, say). An empty page would read as
		// "nothing after since": a resume would go live over a gap.
		return nil, 0, fmt.Errorf("%d events of %q pending after seq %d, none read in time: %w", want, channel, since,
			context.DeadlineExceeded)
	}
	return out, stored, nil
}
