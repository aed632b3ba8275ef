package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
)

// Client operations.
const (
	opSubscribe   = "subscribe"
	opUnsubscribe = "unsubscribe"
	opPing        = "ping"
)

// Error codes of {"type":"error"} frames.
const (
	CodeForbidden            = "forbidden"
	CodeBadRequest           = "bad_request"
	CodeTooManySubscriptions = "too_many_subscriptions"
	CodeUnavailable          = "unavailable"
)

// Close codes the server uses.
const (
	// CloseTokenExpired: the token's exp passed.
	CloseTokenExpired = 4001
	// CloseTooSlow: the client did not read its frames fast enough; its send queue filled up or a write timed out.
	CloseTooSlow = 4008
)

// request is a client frame.
type request struct {
	Op      string  `json:"op"`
	Channel string  `json:"channel"`
	Since   *uint64 `json:"since"`
	// Epoch is the snapshot's epoch that since belongs to; without it, since is taken to be of the current one.
	Epoch string `json:"epoch"`
}

// parseRequest reads a client frame (text says it came as a text frame). It returns the request, with a known op
// and, for subscribe and unsubscribe, a valid channel name (since and epoch only for a subscribe, epoch only with
// since); or, for a frame that is not such a request, the bad_request error frame that answers it, naming the
// channel when the frame gave one as a string.
func parseRequest(text bool, data []byte) (req request, bad []byte) {
	if !text {
		return request{}, encodeError(CodeBadRequest, "", "frames must be JSON text: {\"op\":\"subscribe\",\"channel\":\"...\"}")
	}
	if err := json.Unmarshal(data, &req); err != nil {
		return request{}, badFrame(err, req.Channel)
	}
	switch req.Op {
	case opPing:
		return request{Op: opPing}, nil
	case opSubscribe, opUnsubscribe:
		if err := ncs.ValidChannelName(req.Channel); err != nil {
			return request{}, encodeError(CodeBadRequest, req.Channel, err.Error())
		}
		if req.Op == opUnsubscribe || req.Since == nil {
			req.Since, req.Epoch = nil, ""
		}
		return req, nil
	default:
		return request{}, encodeError(CodeBadRequest, req.Channel, fmt.Sprintf("unknown op %q: use subscribe, unsubscribe or ping", echo(req.Op, maxEchoedOp)))
	}
}

// badFrame is the error for a client frame that does not decode. A field of the wrong type (a since of -1, 1.5 or
// "41") leaves the others decoded, so the error names the channel the client meant.
func badFrame(err error, channel string) []byte {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "epoch" {
			return encodeError(CodeBadRequest, channel, "epoch must be a string: the epoch of the snapshot that since counts from")
		}
		if te.Field == "since" {
			return encodeError(CodeBadRequest, channel, "since must be a whole number from 0 to 18446744073709551615: the seq of the last event the client has")
		}
		return encodeError(CodeBadRequest, channel, "op and channel must be strings: {\"op\":\"subscribe\",\"channel\":\"...\"}")
	}
	return encodeError(CodeBadRequest, "", "frames must be JSON text: {\"op\":\"subscribe\",\"channel\":\"...\"}")
}

type channelFrame struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
}

type errorFrame struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Channel string `json:"channel,omitempty"`
	Message string `json:"message"`
}

type snapshotFrame struct {
	Type string `json:"type"`
	presence.Snapshot
}

type presenceFrame struct {
	Type string `json:"type"`
	presence.Event
}

var pongFrame = []byte(`{"type":"pong"}`)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("hub: encode frame: " + err.Error()) // every frame type is plain data
	}
	return b
}

// EncodeEvent is the frame of a presence event, encoded once and sent to every subscriber.
func EncodeEvent(e presence.Event) []byte { return mustJSON(presenceFrame{Type: "presence", Event: e}) }

// presencePrefix starts every presence frame; the event's own fields follow.
const presencePrefix = `{"type":"presence",`

// EventFrame is EncodeEvent(e) built from raw, e's JSON encoding as stored in USHER_PRESENCE, by putting the type in
// front instead of encoding the event again. With raw nil (or not an encoded object), it encodes e.
func EventFrame(e presence.Event, raw []byte) []byte {
	if len(raw) < 3 || raw[0] != '{' || raw[len(raw)-1] != '}' {
		return EncodeEvent(e)
	}
	f := make([]byte, 0, len(presencePrefix)+len(raw)-1)
	f = append(f, presencePrefix...)
	return append(f, raw[1:]...)
}

func encodeSnapshot(s presence.Snapshot) []byte {
	return mustJSON(snapshotFrame{Type: "snapshot", Snapshot: s})
}

func encodeChannel(typ, channel string) []byte {
	return mustJSON(channelFrame{Type: typ, Channel: channel})
}

// encodeError is an error frame. The channel it names is cut short past ncs.MaxChannelNameLength bytes (such a
// name is invalid anyway: see echo).
func encodeError(code, channel, msg string) []byte {
	return mustJSON(errorFrame{Type: "error", Code: code, Channel: echo(channel, ncs.MaxChannelNameLength), Message: msg})
}

// maxEchoedOp is as much of an unknown op as its error repeats.
const maxEchoedOp = 32

// echo is as much of a client's string as an answer repeats: its first n bytes (cut at a character's start) and
// "…" when it is longer. Error frames are the client's own, not shared with other connections, and wait in its
// send queue like any frame: repeated whole, a 4 KiB channel name of "<" would come back as 24 KiB (each one
// "\u003c"), so a client that sent such frames and never read would hold its send queue's 1,024 frames times
// that, 24 MiB. "…" is not a character Agora allows in a channel name, so a name cut short never names another
// channel the client watches.
func echo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
