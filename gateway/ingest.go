package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/subject"
)

// Headers Usher adds to each stored notification (the body is stored byte for byte as Agora signed it).
const (
	HeaderEventType  = "Usher-Event-Type"
	HeaderChannel    = "Usher-Channel"
	HeaderReceivedMs = "Usher-Received-Ms"
	// storedHeaderRoom is more than the headers of a stored notification take: Nats-Msg-Id (a noticeId of at most
	// 256 bytes), Usher-Channel (at most 64) and the others.
	storedHeaderRoom = 1024
)

// postNCS is Agora's NCS callback: limit, verify, decode, store, and answer 200 only after JetStream's PubAck.
func (g *Gateway) postNCS(c *gin.Context) {
	start := time.Now()
	g.metrics.received.Inc()
	body, err := readBody(c.Request, g.cfg.MaxBodyBytes)
	if err != nil {
		g.reject(c, err)
		return
	}
	if err := g.ncs.Verify(c.Request.Header, body); err != nil {
		g.reject(c, err)
		return
	}
	d, err := ncs.Decode(body)
	if err == nil && !headerSafe(d.NoticeID) {
		err = fmt.Errorf("%w: noticeId %q starts or ends with white space or has a line break; it is stored as the message's Nats-Msg-Id, which cannot keep them",
			ncs.ErrInvalidPayload, d.NoticeID)
	}
	if err != nil {
		g.reject(c, err)
		return
	}
	msg := nats.NewMsg(subjectOf(d))
	msg.Data = body
	msg.Header.Set(HeaderEventType, strconv.Itoa(int(d.EventType)))
	msg.Header.Set(HeaderReceivedMs, strconv.FormatInt(start.UnixMilli(), 10))
	if d.Channel != "" && headerSafe(d.Channel) { // else the header would name another channel: " a " would read "a"
		msg.Header.Set(HeaderChannel, d.Channel)
	}
	if d.Channel != "" {
		// Offered before publishing: this instance's applier may read the stored message before the PubAck is back.
		g.handNotices.put(d.NoticeID, body, d)
	}
	// The store outcome must not depend on whether Agora hangs up early: bound the wait, but not by the request.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), g.cfg.PublishTimeout)
	defer cancel()
	ack, err := g.storeNotification(ctx, msg, d.NoticeID)
	if err != nil {
		g.logOf(c).Error("ncs notification not stored", "noticeId", d.NoticeID, "eventType", int(d.EventType), "err", err)
		g.reject(c, errUnavailable)
		return
	}
	g.metrics.accepted.Inc()
	if ack.Duplicate {
		g.metrics.duplicates.Inc()
	}
	g.metrics.ingest.Observe(time.Since(start).Seconds())
	c.JSON(http.StatusOK, gin.H{"ok": true})
}

// reject counts a refused notification by its error code and records err for the JSON error middleware; the
// request log line tells the code (never the body or the signature).
func (g *Gateway) reject(c *gin.Context, err error) {
	_, code := classify(err)
	g.metrics.rejected.WithLabelValues(code).Inc()
	_ = c.Error(err)
}

// subjectOf is where a notification is stored: its channel's subject, or usher.other.<productId>.<eventType>.
func subjectOf(d *ncs.Decoded) string {
	if d.Channel != "" {
		return subject.NCS(d.Channel)
	}
	return subject.Other(d.ProductID, int(d.EventType))
}

// readBody reads at most limit bytes of the request body.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: the limit is %d bytes", errBodyTooLarge, limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errReadBody, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: the limit is %d bytes", errBodyTooLarge, limit)
	}
	return body, nil
}

// headerSafe says whether a NATS header carries v as it is: the client trims white space (space, tab, CR, LF) at
// either end of a value and turns CR and LF into spaces.
func headerSafe(v string) bool {
	return v == textproto.TrimString(v) && !strings.ContainsAny(v, "\r\n")
}
