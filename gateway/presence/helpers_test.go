package presence_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
)

func ptr[T any](v T) *T { return &v }

// The payload examples of Agora's "Channel event type" page. 107/108 carry the fields of 105/106. The 111 example's
// ts is older than the joins' and the 112 example's clientSeq has a digit more than the others: both are as Agora
// publishes them.
var seedPayloads = map[ncs.EventType]string{
	ncs.ChannelCreate:      `{"channelName":"test_webhook","ts":1560396834}`,
	ncs.ChannelDestroy:     `{"channelName":"test_webhook","ts":1560399999}`,
	ncs.BroadcasterJoin:    `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051030746,"ts":1560396843,"account":"test"}`,
	ncs.BroadcasterLeave:   `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051030789,"reason":1,"ts":1560396943,"duration":600,"account":"test"}`,
	ncs.AudienceJoin:       `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035346,"ts":1560396843,"account":"test"}`,
	ncs.AudienceLeave:      `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035390,"reason":1,"ts":1560396943,"duration":600,"account":"test"}`,
	ncs.CommunicationJoin:  `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035346,"ts":1560396843,"account":"test"}`,
	ncs.CommunicationLeave: `{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035390,"reason":1,"ts":1560396943,"duration":600,"account":"test"}`,
	ncs.RoleToBroadcaster:  `{"channelName":"test_webhook","uid":12121212,"clientSeq":1625051035469,"ts":1560396834,"account":"test"}`,
	ncs.RoleToAudience:     `{"channelName":"test_webhook","uid":12121212,"clientSeq":16250510358369,"ts":1560496834,"account":"test"}`,
}

// Values of the seed payloads, for expectations.
const (
	chanName    = "test_webhook"
	seedUID     = uint32(12121212)
	seedAcct    = "test"
	seqJoin103  = int64(1625051030746)
	seqLeave104 = int64(1625051030789)
	seqJoin105  = int64(1625051035346)
	seqLeave106 = int64(1625051035390)
	seqRole111  = int64(1625051035469)
	seqRole112  = int64(16250510358369)
	tsCreate    = int64(1560396834)
	tsDestroy   = int64(1560399999)
	tsJoin      = int64(1560396843)
	tsLeave     = int64(1560396943)
	tsRole111   = int64(1560396834)
	tsRole112   = int64(1560496834)
	// notifyMs of the seeds' envelope example; every notice is received at this time unless a case says otherwise.
	seedNotifyMs = int64(1611566412672)
)

// seedBody is an NCS request body as Agora sends it, with the seed payload of typ.
func seedBody(typ ncs.EventType, noticeID string) []byte {
	return fmt.Appendf(nil, `{"sid":"C866467GVJJ54687","noticeId":%q,"productId":1,"eventType":%d,"notifyMs":%d,"payload":%s}`,
		noticeID, int(typ), seedNotifyMs, seedPayloads[typ])
}

// seed returns the notice of event type typ built from its seed payload, decoded by ncs.Decode as the applier does,
// received when it was sent, then changed by edits (which may change the payload's fields, or be nil).
func seed(t testing.TB, typ ncs.EventType, noticeID string, edits ...func(*ncs.ChannelEvent)) presence.Notice {
	t.Helper()
	d, err := ncs.Decode(seedBody(typ, noticeID))
	if err != nil {
		t.Fatalf("decode seed %d: %v", typ, err)
	}
	for _, e := range edits {
		e(d.Event)
	}
	return noticeOf(d)
}

// noticeOf is the notice the applier makes of a decoded notification received at its notifyMs.
func noticeOf(d *ncs.Decoded) presence.Notice {
	return presence.Notice{NoticeID: d.NoticeID, Type: d.EventType, Event: d.Event, NotifyMs: d.NotifyMs, ReceivedMs: d.NotifyMs}
}

// Edits of a seed payload.
func withUID(u uint32) func(*ncs.ChannelEvent) { return func(e *ncs.ChannelEvent) { e.UID = u } }
func withSeq(s int64) func(*ncs.ChannelEvent)  { return func(e *ncs.ChannelEvent) { e.ClientSeq = s } }
func withTs(s int64) func(*ncs.ChannelEvent)   { return func(e *ncs.ChannelEvent) { e.Ts = s } }
func withAccount(a string) func(*ncs.ChannelEvent) {
	return func(e *ncs.ChannelEvent) { e.Account = a }
}
func withReason(r int) func(*ncs.ChannelEvent) {
	return func(e *ncs.ChannelEvent) { e.Reason = ptr(r) }
}
func inChannel(c string) func(*ncs.ChannelEvent) {
	return func(e *ncs.ChannelEvent) { e.ChannelName = c }
}
func withPlatform(p ncs.Platform, clientType *int) func(*ncs.ChannelEvent) {
	return func(e *ncs.ChannelEvent) { e.Platform, e.ClientType = ptr(p), clientType }
}

// bare removes what a leave may leave out: account, platform and clientType.
func bare(e *ncs.ChannelEvent) { e.Account, e.Platform, e.ClientType = "", nil, nil }

// at sets when the notice was sent and received.
func at(n presence.Notice, notifyMs, receivedMs int64) presence.Notice {
	n.NotifyMs, n.ReceivedMs = notifyMs, receivedMs
	return n
}

// snapshot is the expected snapshot of a channel at seq 0 (State.View without Stored) with these lists; nil means
// an empty list.
func snapshot(ch string, hosts, audience, users []presence.Member) presence.Snapshot {
	nonNil := func(l []presence.Member) []presence.Member {
		if l == nil {
			return []presence.Member{}
		}
		return l
	}
	return presence.Snapshot{Channel: ch, Hosts: nonNil(hosts), Audience: nonNil(audience), Users: nonNil(users),
		Counts: presence.Counts{Hosts: len(hosts), Audience: len(audience), Users: len(users)}}
}

// js renders v as JSON for failure messages.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v (%v)", v, err)
	}
	return string(b)
}

func jsEvents(evs []presence.Event) string {
	if len(evs) == 0 {
		return "[]"
	}
	return js(evs)
}

// equal fails the test unless got and want are deeply equal, showing both as JSON.
func equal[T any](t testing.TB, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", what, js(got), js(want))
	}
}
