package ncs_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/usher-presence/usher/gateway/ncs"
)

func ptr[T any](v T) *T { return &v }

// The payload examples of Agora's "Channel event type" page (107/108 carry the fields of 105/106).
const (
	payload101 = `{"channelName":"test_webhook","ts":1560396834}`
	payload102 = `{"channelName":"test_webhook","ts":1560399999}`
	payload103 = `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051030746,"ts":1560396843,"account":"test"}`
	payload104 = `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051030789,"reason":1,"ts":1560396943,"duration":600,"account":"test"}`
	payload105 = `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035346,"ts":1560396843,"account":"test"}`
	payload106 = `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035390,"reason":1,"ts":1560396943,"duration":600,"account":"test"}`
	payload111 = `{"channelName":"test_webhook","uid":12121212,"clientSeq":1625051035469,"ts":1560396834,"account":"test"}`
	payload112 = `{"channelName":"test_webhook","uid":12121212,"clientSeq":16250510358369,"ts":1560496834,"account":"test"}`
)

// notice returns an NCS body of eventType with payload (raw JSON; "" leaves the field out), as Agora sends it.
func notice(eventType int, payload string) string {
	if payload == "" {
		return fmt.Sprintf(`{"sid":"C866467GVJJ54687","noticeId":"2000001428:4330:107","productId":1,"eventType":%d,"notifyMs":1611566412672}`, eventType)
	}
	return fmt.Sprintf(`{"sid":"C866467GVJJ54687","noticeId":"2000001428:4330:107","productId":1,"eventType":%d,"notifyMs":1611566412672,"payload":%s}`, eventType, payload)
}

// channelPayload returns a 103 payload naming channel, with the name JSON-encoded.
func channelPayload(channel string) string {
	name, err := json.Marshal(channel)
	if err != nil {
		panic(err)
	}
	return `{"channelName":` + string(name) + `,"uid":1,"clientSeq":1,"ts":1}`
}

type decodeCase struct {
	name        string
	body        string
	wantType    ncs.EventType
	wantProduct int
	wantEvent   *ncs.ChannelEvent // nil: Decoded.Event must be nil
	wantChannel string
}

var decodeCases = []decodeCase{
	{name: "101 channel create", body: notice(101, payload101), wantType: ncs.ChannelCreate, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", Ts: 1560396834}, wantChannel: "test_webhook"},
	{name: "102 channel destroy", body: notice(102, payload102), wantType: ncs.ChannelDestroy, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", Ts: 1560399999}, wantChannel: "test_webhook"},
	{name: "102 with lastUid", body: notice(102, `{"channelName":"test_webhook","ts":1560399999,"lastUid":12121212}`),
		wantType: ncs.ChannelDestroy, wantProduct: 1,
		wantEvent:   &ncs.ChannelEvent{ChannelName: "test_webhook", Ts: 1560399999, LastUID: ptr(uint32(12121212))},
		wantChannel: "test_webhook"},
	{name: "102 with lastUid 0", body: notice(102, `{"channelName":"test_webhook","ts":1560399999,"lastUid":0}`),
		wantType: ncs.ChannelDestroy, wantProduct: 1,
		wantEvent:   &ncs.ChannelEvent{ChannelName: "test_webhook", Ts: 1560399999, LastUID: ptr(uint32(0))},
		wantChannel: "test_webhook"},
	{name: "103 broadcaster join", body: notice(103, payload103), wantType: ncs.BroadcasterJoin, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, Platform: ptr(ncs.PlatformAndroid),
			ClientSeq: 1625051030746, Ts: 1560396843, Account: "test"},
		wantChannel: "test_webhook"},
	{name: "104 broadcaster leave", body: notice(104, payload104), wantType: ncs.BroadcasterLeave, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, Platform: ptr(ncs.PlatformAndroid),
			ClientSeq: 1625051030789, Reason: ptr(ncs.ReasonQuit), Ts: 1560396943, Duration: ptr(int64(600)),
			Account: "test"},
		wantChannel: "test_webhook"},
	{name: "105 audience join", body: notice(105, payload105), wantType: ncs.AudienceJoin, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, Platform: ptr(ncs.PlatformAndroid),
			ClientSeq: 1625051035346, Ts: 1560396843, Account: "test"},
		wantChannel: "test_webhook"},
	{name: "106 audience leave", body: notice(106, payload106), wantType: ncs.AudienceLeave, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, Platform: ptr(ncs.PlatformAndroid),
			ClientSeq: 1625051035390, Reason: ptr(ncs.ReasonQuit), Ts: 1560396943, Duration: ptr(int64(600)),
			Account: "test"},
		wantChannel: "test_webhook"},
	{name: "107 communication join", body: notice(107, payload105), wantType: ncs.CommunicationJoin, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, Platform: ptr(ncs.PlatformAndroid),
			ClientSeq: 1625051035346, Ts: 1560396843, Account: "test"},
		wantChannel: "test_webhook"},
	{name: "108 communication leave", body: notice(108, payload106), wantType: ncs.CommunicationLeave, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, Platform: ptr(ncs.PlatformAndroid),
			ClientSeq: 1625051035390, Reason: ptr(ncs.ReasonQuit), Ts: 1560396943, Duration: ptr(int64(600)),
			Account: "test"},
		wantChannel: "test_webhook"},
	{name: "111 role to broadcaster", body: notice(111, payload111), wantType: ncs.RoleToBroadcaster, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, ClientSeq: 1625051035469,
			Ts: 1560396834, Account: "test"},
		wantChannel: "test_webhook"},
	{name: "112 role to audience", body: notice(112, payload112), wantType: ncs.RoleToAudience, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, ClientSeq: 16250510358369,
			Ts: 1560496834, Account: "test"},
		wantChannel: "test_webhook"},
	{name: "zero reason and platform are kept, not dropped",
		body:     notice(106, `{"channelName":"c","uid":7,"platform":0,"clientSeq":3,"reason":0,"ts":5,"duration":0}`),
		wantType: ncs.AudienceLeave, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "c", UID: 7, Platform: ptr(ncs.PlatformOther), ClientSeq: 3,
			Reason: ptr(ncs.ReasonOther), Ts: 5, Duration: ptr(int64(0))},
		wantChannel: "c"},
	{name: "Linux client type",
		body:     notice(103, `{"channelName":"rec","uid":4294967295,"platform":6,"clientType":10,"clientSeq":9,"ts":1}`),
		wantType: ncs.BroadcasterJoin, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "rec", UID: 4294967295, Platform: ptr(ncs.PlatformLinux),
			ClientType: ptr(10), ClientSeq: 9, Ts: 1},
		wantChannel: "rec"},
	{name: "leave reason 999", body: notice(104, `{"channelName":"c","uid":1,"clientSeq":2,"reason":999,"ts":3}`),
		wantType: ncs.BroadcasterLeave, wantProduct: 1,
		wantEvent:   &ncs.ChannelEvent{ChannelName: "c", UID: 1, ClientSeq: 2, Reason: ptr(ncs.ReasonAbnormalUser), Ts: 3},
		wantChannel: "c"},
	{name: "uid 0", body: notice(105, `{"channelName":"c","uid":0,"clientSeq":1,"ts":1}`),
		wantType: ncs.AudienceJoin, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "c", ClientSeq: 1, Ts: 1}, wantChannel: "c"},
	{name: "unknown payload fields are ignored",
		body:     notice(101, `{"channelName":"c","ts":1,"future":{"x":[1,2]}}`),
		wantType: ncs.ChannelCreate, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "c", Ts: 1}, wantChannel: "c"},
	{name: "channel name with escapes Agora allows",
		body:     notice(103, `{"channelName":"a.b > c\u0026d","uid":1,"clientSeq":1,"ts":1}`),
		wantType: ncs.BroadcasterJoin, wantProduct: 1,
		wantEvent:   &ncs.ChannelEvent{ChannelName: "a.b > c&d", UID: 1, ClientSeq: 1, Ts: 1},
		wantChannel: "a.b > c&d"},
	{name: "missing productId is RTC",
		body:     `{"noticeId":"n","eventType":103,"notifyMs":1,"payload":` + payload103 + `}`,
		wantType: ncs.BroadcasterJoin, wantProduct: 0,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", UID: 12121212, Platform: ptr(ncs.PlatformAndroid),
			ClientSeq: 1625051030746, Ts: 1560396843, Account: "test"},
		wantChannel: "test_webhook"},
	{name: "other product with 103 is not parsed, channel still filed",
		body:     `{"noticeId":"n","productId":3,"eventType":103,"notifyMs":1,"payload":` + payload103 + `}`,
		wantType: ncs.BroadcasterJoin, wantProduct: 3, wantEvent: nil, wantChannel: "test_webhook"},
	{name: "productId 0 with 103 is not parsed",
		body:     `{"noticeId":"n","productId":0,"eventType":103,"payload":{"uid":"not checked"}}`,
		wantType: ncs.BroadcasterJoin, wantProduct: 0, wantEvent: nil, wantChannel: ""},
	{name: "other product with invalid channel is accepted without channel",
		body:     `{"noticeId":"n","productId":2,"eventType":103,"payload":{"channelName":"a*b"}}`,
		wantType: ncs.BroadcasterJoin, wantProduct: 2, wantEvent: nil, wantChannel: ""},
	{name: "unknown event 10 (Agora's vector) keeps payload raw", body: vectorBody,
		wantType: 10, wantProduct: 1, wantEvent: nil, wantChannel: ""},
	{name: "unknown event 999 with channelName", body: notice(999, `{"channelName":"room-1","x":true}`),
		wantType: 999, wantProduct: 1, wantEvent: nil, wantChannel: "room-1"},
	{name: "unknown event with invalid channelName", body: notice(999, `{"channelName":"room/1"}`),
		wantType: 999, wantProduct: 1, wantEvent: nil, wantChannel: ""},
	{name: "unknown event with non-string channelName", body: notice(999, `{"channelName":12}`),
		wantType: 999, wantProduct: 1, wantEvent: nil, wantChannel: ""},
	{name: "unknown event with array payload", body: notice(999, `[1,2]`),
		wantType: 999, wantProduct: 1, wantEvent: nil, wantChannel: ""},
	{name: "unknown event without payload", body: notice(999, ""),
		wantType: 999, wantProduct: 1, wantEvent: nil, wantChannel: ""},
	{name: "unknown event 0", body: notice(0, `{}`),
		wantType: 0, wantProduct: 1, wantEvent: nil, wantChannel: ""},
	{name: "noticeId of 256 bytes",
		body:     `{"noticeId":"` + strings.Repeat("n", 256) + `","productId":1,"eventType":101,"payload":` + payload101 + `}`,
		wantType: ncs.ChannelCreate, wantProduct: 1,
		wantEvent: &ncs.ChannelEvent{ChannelName: "test_webhook", Ts: 1560396834}, wantChannel: "test_webhook"},
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, tt := range decodeCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := ncs.Decode([]byte(tt.body))
			if err != nil {
				t.Fatalf("Decode = %v, want nil", err)
			}
			if d.EventType != tt.wantType {
				t.Errorf("EventType = %d, want %d", d.EventType, tt.wantType)
			}
			if d.ProductID != tt.wantProduct {
				t.Errorf("ProductID = %d, want %d", d.ProductID, tt.wantProduct)
			}
			if d.NoticeID == "" {
				t.Error("NoticeID is empty")
			}
			if !reflect.DeepEqual(d.Event, tt.wantEvent) {
				t.Errorf("Event =\n %s\nwant\n %s", dump(d.Event), dump(tt.wantEvent))
			}
			if d.Channel != tt.wantChannel {
				t.Errorf("Channel = %q, want %q", d.Channel, tt.wantChannel)
			}
			var env struct {
				Payload json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal([]byte(tt.body), &env); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.Payload, env.Payload) {
				t.Errorf("Payload = %s, want the raw %s", d.Payload, env.Payload)
			}
		})
	}
}

// dump prints a ChannelEvent with its pointers followed, for failure messages.
func dump(ev *ncs.ChannelEvent) string {
	if ev == nil {
		return "<nil>"
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestDecodeEnvelope(t *testing.T) {
	t.Parallel()
	d, err := ncs.Decode([]byte(notice(105, payload105)))
	if err != nil {
		t.Fatal(err)
	}
	want := ncs.Notification{
		NoticeID:  "2000001428:4330:107",
		ProductID: ncs.ProductRTC,
		EventType: ncs.AudienceJoin,
		NotifyMs:  1611566412672,
		Sid:       "C866467GVJJ54687",
		Payload:   json.RawMessage(payload105),
	}
	if !reflect.DeepEqual(d.Notification, want) {
		t.Errorf("Notification = %+v, want %+v", d.Notification, want)
	}

	// notifyMs and sid are optional.
	d, err = ncs.Decode([]byte(`{"noticeId":"x","eventType":101,"payload":` + payload101 + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if d.NotifyMs != 0 || d.Sid != "" || d.NoticeID != "x" {
		t.Errorf("got NotifyMs %d, Sid %q, NoticeID %q; want 0, \"\", \"x\"", d.NotifyMs, d.Sid, d.NoticeID)
	}
}

type decodeErrorCase struct {
	name string
	body string
	want error
}

var decodeErrorCases = []decodeErrorCase{
	{name: "empty body", body: "", want: ncs.ErrNotJSON},
	{name: "not JSON", body: "noticeId=1&eventType=101", want: ncs.ErrNotJSON},
	{name: "truncated JSON", body: notice(101, payload101)[:40], want: ncs.ErrNotJSON},
	{name: "trailing data", body: notice(101, payload101) + " {}", want: ncs.ErrNotJSON},
	{name: "JSON array", body: `[` + notice(101, payload101) + `]`, want: ncs.ErrNotJSON},
	{name: "JSON string", body: `"hello"`, want: ncs.ErrNotJSON},
	{name: "JSON number", body: `101`, want: ncs.ErrNotJSON},
	{name: "JSON bool", body: `true`, want: ncs.ErrNotJSON},
	{name: "JSON null", body: `null`, want: ncs.ErrNotJSON},
	{name: "empty object", body: `{}`, want: ncs.ErrMissingField},
	{name: "missing noticeId", body: `{"productId":1,"eventType":101,"payload":` + payload101 + `}`,
		want: ncs.ErrMissingField},
	{name: "empty noticeId", body: `{"noticeId":"","productId":1,"eventType":101,"payload":` + payload101 + `}`,
		want: ncs.ErrMissingField},
	{name: "null noticeId", body: `{"noticeId":null,"productId":1,"eventType":101,"payload":` + payload101 + `}`,
		want: ncs.ErrMissingField},
	{name: "missing eventType", body: `{"noticeId":"n","productId":1,"payload":` + payload101 + `}`,
		want: ncs.ErrMissingField},
	{name: "null eventType", body: `{"noticeId":"n","productId":1,"eventType":null,"payload":` + payload101 + `}`,
		want: ncs.ErrMissingField},
	{name: "noticeId of 257 bytes",
		body: `{"noticeId":"` + strings.Repeat("n", 257) + `","productId":1,"eventType":101,"payload":` + payload101 + `}`,
		want: ncs.ErrInvalidPayload},
	{name: "numeric noticeId", body: `{"noticeId":1,"productId":1,"eventType":101,"payload":` + payload101 + `}`,
		want: ncs.ErrInvalidPayload},
	{name: "string eventType", body: `{"noticeId":"n","productId":1,"eventType":"101","payload":` + payload101 + `}`,
		want: ncs.ErrInvalidPayload},
	{name: "fractional eventType", body: `{"noticeId":"n","productId":1,"eventType":101.5,"payload":` + payload101 + `}`,
		want: ncs.ErrInvalidPayload},
	{name: "string productId", body: `{"noticeId":"n","productId":"1","eventType":101,"payload":` + payload101 + `}`,
		want: ncs.ErrInvalidPayload},
	{name: "string notifyMs", body: `{"noticeId":"n","eventType":101,"notifyMs":"1","payload":` + payload101 + `}`,
		want: ncs.ErrInvalidPayload},

	// A channel event must name a valid channel.
	{name: "channel event without payload", body: notice(103, ""), want: ncs.ErrInvalidChannel},
	{name: "channel event with null payload", body: notice(103, `null`), want: ncs.ErrInvalidChannel},
	{name: "empty payload", body: notice(101, `{}`), want: ncs.ErrInvalidChannel},
	{name: "payload without channelName", body: notice(105, `{"uid":1,"clientSeq":1,"ts":1}`),
		want: ncs.ErrInvalidChannel},
	{name: "missing productId still requires a channel", body: `{"noticeId":"n","eventType":104,"payload":{}}`,
		want: ncs.ErrInvalidChannel},
	{name: "empty channelName", body: notice(103, channelPayload("")), want: ncs.ErrInvalidChannel},
	{name: "null channelName", body: notice(103, `{"channelName":null,"uid":1}`), want: ncs.ErrInvalidChannel},
	{name: "numeric channelName", body: notice(103, `{"channelName":5,"uid":1}`), want: ncs.ErrInvalidChannel},
	{name: "65-byte channelName", body: notice(103, channelPayload(strings.Repeat("c", 65))),
		want: ncs.ErrInvalidChannel},
	{name: "star", body: notice(103, channelPayload("show*")), want: ncs.ErrInvalidChannel},
	{name: "escaped star", body: notice(103, `{"channelName":"show\u002a","uid":1}`), want: ncs.ErrInvalidChannel},
	{name: "slash", body: notice(103, channelPayload("a/b")), want: ncs.ErrInvalidChannel},
	{name: "backslash", body: notice(103, channelPayload(`a\b`)), want: ncs.ErrInvalidChannel},
	{name: "double quote", body: notice(103, channelPayload(`a"b`)), want: ncs.ErrInvalidChannel},
	{name: "single quote", body: notice(103, channelPayload(`a'b`)), want: ncs.ErrInvalidChannel},
	{name: "backtick", body: notice(103, channelPayload("a`b")), want: ncs.ErrInvalidChannel},
	{name: "tab", body: notice(103, channelPayload("a\tb")), want: ncs.ErrInvalidChannel},
	{name: "newline", body: notice(103, channelPayload("a\nb")), want: ncs.ErrInvalidChannel},
	{name: "NUL", body: notice(103, `{"channelName":"a\u0000b","uid":1}`), want: ncs.ErrInvalidChannel},
	{name: "DEL", body: notice(103, channelPayload("a\x7fb")), want: ncs.ErrInvalidChannel},
	{name: "non-ASCII", body: notice(103, channelPayload("café")), want: ncs.ErrInvalidChannel},
	{name: "invalid UTF-8", body: notice(103, `{"channelName":"a`+"\xff"+`b","uid":1}`), want: ncs.ErrInvalidChannel},
	{name: "bad channel on 101", body: notice(101, channelPayload("a/b")), want: ncs.ErrInvalidChannel},
	{name: "bad channel on 102", body: notice(102, channelPayload("a/b")), want: ncs.ErrInvalidChannel},
	{name: "bad channel on 107", body: notice(107, channelPayload("a/b")), want: ncs.ErrInvalidChannel},
	{name: "bad channel on 112", body: notice(112, channelPayload("a/b")), want: ncs.ErrInvalidChannel},

	// Wrong-typed payload fields.
	{name: "payload is a string", body: notice(103, `"test_webhook"`), want: ncs.ErrInvalidPayload},
	{name: "payload is an array", body: notice(103, `[`+payload103+`]`), want: ncs.ErrInvalidPayload},
	{name: "uid as string", body: notice(103, `{"channelName":"c","uid":"12121212","clientSeq":1,"ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "negative uid", body: notice(103, `{"channelName":"c","uid":-1,"clientSeq":1,"ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "uid above 2^32-1", body: notice(103, `{"channelName":"c","uid":4294967296,"clientSeq":1,"ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "fractional uid", body: notice(103, `{"channelName":"c","uid":1.5,"clientSeq":1,"ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "clientSeq as string", body: notice(105, `{"channelName":"c","uid":1,"clientSeq":"1","ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "platform as string", body: notice(105, `{"channelName":"c","uid":1,"platform":"1","ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "reason as string", body: notice(106, `{"channelName":"c","uid":1,"reason":"1","ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "duration as string", body: notice(106, `{"channelName":"c","uid":1,"duration":"600","ts":1}`),
		want: ncs.ErrInvalidPayload},
	{name: "ts as string", body: notice(101, `{"channelName":"c","ts":"1560396834"}`), want: ncs.ErrInvalidPayload},
	{name: "lastUid negative", body: notice(102, `{"channelName":"c","ts":1,"lastUid":-5}`),
		want: ncs.ErrInvalidPayload},
	{name: "account as number", body: notice(103, `{"channelName":"c","uid":1,"account":7}`),
		want: ncs.ErrInvalidPayload},
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	sentinels := []error{ncs.ErrNotJSON, ncs.ErrMissingField, ncs.ErrInvalidChannel, ncs.ErrInvalidPayload}
	for _, tt := range decodeErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := ncs.Decode([]byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, %v; want error %v", d, err, tt.want)
			}
			if d != nil {
				t.Errorf("Decode returned %+v with its error", d)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("error %v also matches %v", err, s)
				}
			}
		})
	}
}

// wantAlphabet is Agora's channel-name alphabet, written out independently of the package.
const wantAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&()+-:;<=.>?@[]^_{}|~,"

func TestChannelAlphabet(t *testing.T) {
	t.Parallel()
	got := ncs.ChannelAlphabet()
	if len(got) != len(wantAlphabet) {
		t.Errorf("ChannelAlphabet has %d bytes, want %d: %q", len(got), len(wantAlphabet), got)
	}
	for c := 0; c < 256; c++ {
		in := strings.IndexByte(wantAlphabet, byte(c)) >= 0
		if strings.IndexByte(got, byte(c)) >= 0 != in {
			t.Errorf("ChannelAlphabet contains %q: %t, want %t", byte(c), !in, in)
		}
		err := ncs.ValidChannelName(string([]byte{byte(c)}))
		if in && err != nil {
			t.Errorf("ValidChannelName(%q) = %v, want nil", byte(c), err)
		}
		if !in && !errors.Is(err, ncs.ErrInvalidChannel) {
			t.Errorf("ValidChannelName(%q) = %v, want %v", byte(c), err, ncs.ErrInvalidChannel)
		}
	}
}

// Every legal character, sent through Decode as Agora would send it (JSON-encoded), is accepted and comes back.
func TestDecodeChannelAlphabet(t *testing.T) {
	t.Parallel()
	alphabet := ncs.ChannelAlphabet()
	var names []string
	for i := 0; i < len(alphabet); i++ {
		names = append(names, alphabet[i:i+1], "x"+alphabet[i:i+1]+"y")
	}
	for i := 0; i < len(alphabet); i += ncs.MaxChannelNameLength {
		names = append(names, alphabet[i:min(i+ncs.MaxChannelNameLength, len(alphabet))])
	}
	for _, name := range names {
		d, err := ncs.Decode([]byte(notice(103, channelPayload(name))))
		if err != nil {
			t.Errorf("channel %q: Decode = %v, want nil", name, err)
			continue
		}
		if d.Event == nil || d.Event.ChannelName != name || d.Channel != name {
			t.Errorf("channel %q: got Event %s, Channel %q", name, dump(d.Event), d.Channel)
		}
	}
}

func TestChannelNameLength(t *testing.T) {
	t.Parallel()
	if ncs.MaxChannelNameLength != 64 {
		t.Fatalf("MaxChannelNameLength = %d, want Agora's 64", ncs.MaxChannelNameLength)
	}
	tests := []struct {
		name string
		want error
	}{
		{name: "a", want: nil},
		{name: strings.Repeat("a", 63), want: nil},
		{name: strings.Repeat("a", 64), want: nil},
		{name: strings.Repeat("~", 64), want: nil},
		{name: strings.Repeat("a", 65), want: ncs.ErrInvalidChannel},
		{name: strings.Repeat("a", 1000), want: ncs.ErrInvalidChannel},
		{name: "", want: ncs.ErrInvalidChannel},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d bytes", len(tt.name)), func(t *testing.T) {
			t.Parallel()
			if err := ncs.ValidChannelName(tt.name); !errors.Is(err, tt.want) {
				t.Errorf("ValidChannelName = %v, want %v", err, tt.want)
			}
			d, err := ncs.Decode([]byte(notice(103, channelPayload(tt.name))))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, want %v", err, tt.want)
			}
			if tt.want == nil && d.Channel != tt.name {
				t.Errorf("Channel = %q, want %q", d.Channel, tt.name)
			}
		})
	}
}

func TestEventTypePredicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		t                                  ncs.EventType
		channel, user, join, leave, change bool
		name                               string
	}{
		{t: 101, channel: true, name: "channel create"},
		{t: 102, channel: true, name: "channel destroy"},
		{t: 103, channel: true, user: true, join: true, name: "broadcaster join channel"},
		{t: 104, channel: true, user: true, leave: true, name: "broadcaster leave channel"},
		{t: 105, channel: true, user: true, join: true, name: "audience join channel"},
		{t: 106, channel: true, user: true, leave: true, name: "audience leave channel"},
		{t: 107, channel: true, user: true, join: true, name: "communication join channel"},
		{t: 108, channel: true, user: true, leave: true, name: "communication leave channel"},
		{t: 111, channel: true, user: true, change: true, name: "client role change to broadcaster"},
		{t: 112, channel: true, user: true, change: true, name: "client role change to audience"},
		{t: 10, name: "unknown (10)"},
		{t: 109, name: "unknown (109)"},
		{t: 0, name: "unknown (0)"},
		{t: -1, name: "unknown (-1)"},
	}
	for _, tt := range tests {
		got := [5]bool{tt.t.IsChannelEvent(), tt.t.IsUserEvent(), tt.t.IsJoin(), tt.t.IsLeave(), tt.t.IsRoleChange()}
		want := [5]bool{tt.channel, tt.user, tt.join, tt.leave, tt.change}
		if got != want {
			t.Errorf("%d: [channel user join leave change] = %v, want %v", int(tt.t), got, want)
		}
		if s := tt.t.String(); s != tt.name {
			t.Errorf("%d: String = %q, want %q", int(tt.t), s, tt.name)
		}
	}
}

func TestLeaveReasons(t *testing.T) {
	t.Parallel()
	want := []int{0, 1, 2, 3, 4, 5, 9, 10, 12, 99, 999}
	if !reflect.DeepEqual(ncs.LeaveReasons, want) {
		t.Errorf("LeaveReasons = %v, want %v", ncs.LeaveReasons, want)
	}
}
