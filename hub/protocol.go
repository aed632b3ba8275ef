package hub

import (
	"encoding/json"

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

func encodeError(code, channel, msg string) []byte {
	return mustJSON(errorFrame{Type: "error", Code: code, Channel: channel, Message: msg})
}
