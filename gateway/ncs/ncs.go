// Package ncs is Agora's Notifications service (NCS) wire format: the webhook envelope, the typed payloads of the
// RTC channel events, signature verification, and the validation rules Usher applies before it accepts a
// notification.
//
// It does no I/O. Everything here may be called concurrently.
package ncs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ProductRTC is the productId of Agora's real-time communication service, whose channel events Usher understands.
const ProductRTC = 1

// EventType is the eventType of a notification.
type EventType int

// The RTC channel events. 107/108 come from older SDKs in the communication profile; newer SDKs send 103/104 there.
const (
	ChannelCreate      EventType = 101
	ChannelDestroy     EventType = 102
	BroadcasterJoin    EventType = 103
	BroadcasterLeave   EventType = 104
	AudienceJoin       EventType = 105
	AudienceLeave      EventType = 106
	CommunicationJoin  EventType = 107
	CommunicationLeave EventType = 108
	RoleToBroadcaster  EventType = 111
	RoleToAudience     EventType = 112
)

var eventNames = map[EventType]string{
	ChannelCreate:      "channel create",
	ChannelDestroy:     "channel destroy",
	BroadcasterJoin:    "broadcaster join channel",
	BroadcasterLeave:   "broadcaster leave channel",
	AudienceJoin:       "audience join channel",
	AudienceLeave:      "audience leave channel",
	CommunicationJoin:  "communication join channel",
	CommunicationLeave: "communication leave channel",
	RoleToBroadcaster:  "client role change to broadcaster",
	RoleToAudience:     "client role change to audience",
}

// IsChannelEvent reports whether t is one of the RTC channel events Usher parses.
func (t EventType) IsChannelEvent() bool { _, ok := eventNames[t]; return ok }

// IsUserEvent reports whether t concerns one user (every channel event but create and destroy); such events carry
// uid and clientSeq.
func (t EventType) IsUserEvent() bool {
	return t.IsChannelEvent() && t != ChannelCreate && t != ChannelDestroy
}

// IsJoin reports whether t is a join (103, 105, 107).
func (t EventType) IsJoin() bool {
	return t == BroadcasterJoin || t == AudienceJoin || t == CommunicationJoin
}

// IsLeave reports whether t is a leave (104, 106, 108).
func (t EventType) IsLeave() bool {
	return t == BroadcasterLeave || t == AudienceLeave || t == CommunicationLeave
}

// IsRoleChange reports whether t is a role change (111, 112).
func (t EventType) IsRoleChange() bool { return t == RoleToBroadcaster || t == RoleToAudience }

func (t EventType) String() string {
	if n, ok := eventNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown (%d)", int(t))
}

// Platform is the platform of a user's device, as Agora numbers it.
type Platform int

// Agora's platform codes.
const (
	PlatformOther   Platform = 0
	PlatformAndroid Platform = 1
	PlatformIOS     Platform = 2
	PlatformWindows Platform = 5
	PlatformLinux   Platform = 6
	PlatformWeb     Platform = 7
	PlatformMacOS   Platform = 8
)

// Leave reasons (the reason field of 104, 106 and 108).
const (
	ReasonOther          = 0
	ReasonQuit           = 1
	ReasonTimeout        = 2
	ReasonPermission     = 3
	ReasonServerLoad     = 4
	ReasonNewDevice      = 5
	ReasonMultipleIP     = 9
	ReasonNetwork        = 10
	ReasonTokenError     = 12
	ReasonUnknownNetwork = 99
	ReasonAbnormalUser   = 999
)

// MaxChannelNameLength is the longest channel name Agora allows, in bytes.
const MaxChannelNameLength = 64

const (
	maxNoticeIDLength = 256
	// channelPunctuation is what Agora allows in a channel name besides ASCII letters and digits.
	channelPunctuation = " !#$%&()+-:;<=.>?@[]^_{}|~,"
)

// LeaveReasons lists every leave reason Agora documents, in ascending order.
var LeaveReasons = []int{ReasonOther, ReasonQuit, ReasonTimeout, ReasonPermission, ReasonServerLoad,
	ReasonNewDevice, ReasonMultipleIP, ReasonNetwork, ReasonTokenError, ReasonUnknownNetwork, ReasonAbnormalUser}

// Notification is the envelope of every NCS callback.
type Notification struct {
	NoticeID  string          `json:"noticeId"`
	ProductID int             `json:"productId"`
	EventType EventType       `json:"eventType"`
	NotifyMs  int64           `json:"notifyMs"`
	Sid       string          `json:"sid,omitempty"`
	Payload   json.RawMessage `json:"payload,omitempty"`
}

// ChannelEvent is the payload of an RTC channel event (101-108, 111, 112). Optional fields are pointers: nil means
// Agora did not send the field, which is not the same as zero (reason 0 means "other", platform 0 "other").
type ChannelEvent struct {
	ChannelName string    `json:"channelName"`
	UID         uint32    `json:"uid,omitempty"`
	Platform    *Platform `json:"platform,omitempty"`
	// ClientType is sent only for platform 6 (Linux): 3 local recording, 8 applet, 10 cloud recording.
	ClientType *int `json:"clientType,omitempty"`
	// ClientSeq orders the events of one user; it is absent on 101 and 102.
	ClientSeq int64 `json:"clientSeq,omitempty"`
	// Reason is sent on leaves; see the Reason constants.
	Reason *int `json:"reason,omitempty"`
	// Duration is the seconds the user spent in the channel, sent on leaves.
	Duration *int64 `json:"duration,omitempty"`
	// Ts is the Unix time, in seconds, of the event on Agora's server.
	Ts      int64  `json:"ts"`
	Account string `json:"account,omitempty"`
	// LastUID may be sent with 102: the last user to leave.
	LastUID *uint32 `json:"lastUid,omitempty"`
}

// Decoded is a notification that passed validation, with its channel event parsed when it is one.
type Decoded struct {
	Notification
	// Event is the parsed payload of an RTC channel event, nil for anything else.
	Event *ChannelEvent
	// Channel is the channel the notification belongs to: Event.ChannelName, or for a notification Usher does not
	// parse, a valid channelName found in its payload. Empty when there is none.
	Channel string
}

// Validation errors. Each wraps into a more precise message; test with errors.Is.
var (
	ErrNotJSON        = errors.New("body is not a JSON object")
	ErrMissingField   = errors.New("required field missing")
	ErrInvalidChannel = errors.New("invalid channelName")
	ErrInvalidPayload = errors.New("invalid payload")
)

// envelope mirrors Notification with pointers, to tell a missing field from a zero one.
type envelope struct {
	NoticeID  *string         `json:"noticeId"`
	ProductID *int            `json:"productId"`
	EventType *EventType      `json:"eventType"`
	NotifyMs  *int64          `json:"notifyMs"`
	Sid       string          `json:"sid"`
	Payload   json.RawMessage `json:"payload"`
}

// Decode parses and validates a notification body (already verified). A channel event (eventType 101-112 with
// productId 1, or no productId) must carry a payload with a valid channelName, and its fields must have their
// documented types; other fields of a channel event are not required here (the roster decides what it can use). Any
// other notification needs only noticeId and eventType; its channel is the payload's channelName when that is valid.
func Decode(body []byte) (*Decoded, error) {
	var envp *envelope
	if err := json.Unmarshal(body, &envp); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return nil, fmt.Errorf("%w: field %q must be a %s", ErrInvalidPayload, typeErr.Field, kindName(typeErr.Type.Kind().String()))
		case errors.As(err, &typeErr):
			return nil, fmt.Errorf("%w: found %s", ErrNotJSON, typeErr.Value)
		}
		return nil, fmt.Errorf("%w: %s", ErrNotJSON, jsonMessage(err))
	}
	if envp == nil {
		return nil, fmt.Errorf("%w: found null", ErrNotJSON)
	}
	env := *envp
	switch {
	case env.NoticeID == nil || *env.NoticeID == "":
		return nil, fmt.Errorf("%w: noticeId", ErrMissingField)
	case env.EventType == nil:
		return nil, fmt.Errorf("%w: eventType", ErrMissingField)
	case len(*env.NoticeID) > maxNoticeIDLength:
		return nil, fmt.Errorf("%w: noticeId longer than %d bytes", ErrInvalidPayload, maxNoticeIDLength)
	}
	d := &Decoded{Notification: Notification{
		NoticeID:  *env.NoticeID,
		EventType: *env.EventType,
		Sid:       env.Sid,
		Payload:   env.Payload,
	}}
	if env.ProductID != nil {
		d.ProductID = *env.ProductID
	}
	if env.NotifyMs != nil {
		d.NotifyMs = *env.NotifyMs
	}
	if d.EventType.IsChannelEvent() && (env.ProductID == nil || d.ProductID == ProductRTC) {
		ev, err := decodeChannelEvent(env.Payload)
		if err != nil {
			return nil, err
		}
		d.Event, d.Channel = ev, ev.ChannelName
		return d, nil
	}
	// Not a channel event Usher parses: keep it whole, and file it under its channel when it names a valid one.
	var probe struct {
		ChannelName string `json:"channelName"`
	}
	if len(env.Payload) > 0 && json.Unmarshal(env.Payload, &probe) == nil && ValidChannelName(probe.ChannelName) == nil {
		d.Channel = probe.ChannelName
	}
	return d, nil
}

func decodeChannelEvent(payload json.RawMessage) (*ChannelEvent, error) {
	if len(payload) == 0 || string(payload) == "null" {
		return nil, fmt.Errorf("%w: a channel event needs a payload with channelName", ErrInvalidChannel)
	}
	var ev ChannelEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field == "channelName" {
			return nil, fmt.Errorf("%w: channelName must be a string", ErrInvalidChannel)
		}
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return nil, fmt.Errorf("%w: payload field %q must be a %s", ErrInvalidPayload, typeErr.Field, kindName(typeErr.Type.Kind().String()))
		}
		if errors.As(err, &typeErr) {
			return nil, fmt.Errorf("%w: payload must be a JSON object", ErrInvalidPayload)
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidPayload, jsonMessage(err))
	}
	if err := ValidChannelName(ev.ChannelName); err != nil {
		return nil, err
	}
	return &ev, nil
}

// ValidChannelName checks a channel name against Agora's rules: 1 to 64 bytes of ASCII letters, digits, space and
// !#$%&()+-:;<=.>?@[]^_{}|~, .
func ValidChannelName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: channelName is missing or empty", ErrInvalidChannel)
	}
	if len(name) > MaxChannelNameLength {
		return fmt.Errorf("%w: channelName is %d bytes, the limit is %d", ErrInvalidChannel, len(name), MaxChannelNameLength)
	}
	for i := 0; i < len(name); i++ {
		if !channelByte(name[i]) {
			return fmt.Errorf("%w: channelName has a character Agora does not allow (byte %d, %q)", ErrInvalidChannel, i, name[i])
		}
	}
	return nil
}

func channelByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte(channelPunctuation, b) >= 0
}

// ChannelAlphabet returns every byte Agora allows in a channel name, for tests and generators.
func ChannelAlphabet() string {
	var b strings.Builder
	for c := 0; c < 128; c++ {
		if channelByte(byte(c)) {
			b.WriteByte(byte(c))
		}
	}
	return b.String()
}

func kindName(k string) string {
	switch k {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "whole number in range"
	case "float32", "float64":
		return "number"
	}
	return k
}

// jsonMessage strips encoding/json's package prefix for error messages shown to callers.
func jsonMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}
