package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/subject"
)

// Headers Usher adds to each stored notification (the body is stored byte for byte as Agora signed it).
const (
	HeaderEventType  = "Usher-Event-Type"
	HeaderChannel    = "Usher-Channel"
	HeaderReceivedMs = "Usher-Received-Ms"
)

// postNCS is Agora's NCS callback: limit, verify, decode, store, and answer 200 only after JetStream's PubAck.
func (g *Gateway) postNCS(c *gin.Context) {
	body, err := readBody(c.Request, MaxNCSBody)
	if err != nil {
		g.reject(c, err)
		return
	}
	if err := g.ncs.Verify(c.Request.Header, body); err != nil {
		g.reject(c, err)
		return
	}
	d, err := ncs.Decode(body)
	if err != nil {
		g.reject(c, err)
		return
	}
	msg := nats.NewMsg(subjectOf(d))
	msg.Data = body
	msg.Header.Set(HeaderEventType, strconv.Itoa(int(d.EventType)))
	msg.Header.Set(HeaderReceivedMs, strconv.FormatInt(time.Now().UnixMilli(), 10))
	if d.Channel != "" {
		msg.Header.Set(HeaderChannel, d.Channel)
	}
	// The store outcome must not depend on whether Agora hangs up early: bound the wait, but not by the request.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), g.cfg.PublishTimeout)
	defer cancel()
	if _, err := g.js.PublishMsg(ctx, msg, jetstream.WithMsgID(d.NoticeID), jetstream.WithExpectStream(bus.NCSStream)); err != nil {
		g.log.Error("ncs notification not stored", "noticeId", d.NoticeID, "eventType", int(d.EventType), "err", err)
		g.reject(c, errUnavailable)
		return
	}
	c.JSON(http.StatusOK, gin.H{"ok": true})
}

// reject records err for the JSON error middleware, and logs it without the body or the signature.
func (g *Gateway) reject(c *gin.Context, err error) {
	status, code := classify(err)
	if status < http.StatusInternalServerError {
		g.log.Warn("ncs notification rejected", "status", status, "error", code, "remote", c.ClientIP())
	}
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
		return nil, errBodyTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errReadBody, err)
	}
	if int64(len(body)) > limit {
		return nil, errBodyTooLarge
	}
	return body, nil
}
