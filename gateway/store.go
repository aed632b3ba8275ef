package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
)

// errCodeMsgIDInProcess is JetStream's answer to a message whose id is being stored by another publish that has
// not finished yet (a clustered stream while its replicas agree on the first): "duplicate message id is in
// process". Agora's resends and duplicates, taken by two instances or two requests at once, race this way.
const errCodeMsgIDInProcess = 10158

// noRespondersWait is how often a publish is tried again while the stream answers nobody: on a cluster, while its
// replicas elect a new leader after the old one's server died (a few seconds).
const noRespondersWait = 100 * time.Millisecond

// storeNotification publishes msg to USHER_NCS with noticeID as its message id and waits for the PubAck, bounded
// by ctx (the publish timeout). Two answers are tried again, as long as ctx allows:
//   - no responders (the stream has no leader for a moment): every 100 ms;
//   - another publish of the same id is in process: after 20 ms, doubling to 320 ms. Once the first is stored the
//     retry is acknowledged as a duplicate; if the first failed, the retry stores it.
func (g *Gateway) storeNotification(ctx context.Context, msg *nats.Msg, noticeID string) (*jetstream.PubAck, error) {
	wait := 20 * time.Millisecond
	for {
		ack, err := g.js.PublishMsg(ctx, msg, jetstream.WithMsgID(noticeID), jetstream.WithExpectStream(bus.NCSStream),
			jetstream.WithRetryAttempts(int(g.cfg.PublishTimeout/noRespondersWait)+1), jetstream.WithRetryWait(noRespondersWait))
		var api *jetstream.APIError
		if err == nil || !errors.As(err, &api) || api.ErrorCode != errCodeMsgIDInProcess {
			return ack, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errors.Join(err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 320*time.Millisecond)
	}
}
