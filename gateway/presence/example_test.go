package presence_test

import (
	"encoding/json"
	"fmt"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
)

// An applier decodes each stored notification, applies it, and publishes the events Apply returns. Agora's resend
// of a join under a new noticeId changes nothing; the audience member who goes on stage moves to the hosts.
func ExampleState_Apply() {
	s := presence.NewState(presence.Rules{})
	apply := func(body string) {
		d, err := ncs.Decode([]byte(body))
		if err != nil {
			fmt.Println(err)
			return
		}
		events, outcome := s.Apply(presence.Notice{NoticeID: d.NoticeID, Type: d.EventType, Event: d.Event,
			NotifyMs: d.NotifyMs, ReceivedMs: d.NotifyMs})
		fmt.Println(outcome)
		for _, e := range events {
			b, _ := json.Marshal(e) // Seq is set when the event is stored
			fmt.Println(string(b))
		}
	}
	apply(`{"noticeId":"n1","productId":1,"eventType":105,"notifyMs":1611566412672,"payload":` +
		`{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035346,"ts":1560396843,"account":"test"}}`)
	apply(`{"noticeId":"n1-again","productId":1,"eventType":105,"notifyMs":1611566415672,"payload":` +
		`{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035346,"ts":1560396843,"account":"test"}}`)
	apply(`{"noticeId":"n2","productId":1,"eventType":111,"notifyMs":1611566416000,"payload":` +
		`{"channelName":"test_webhook","uid":12121212,"clientSeq":1625051035469,"ts":1560396850,"account":"test"}}`)

	b, _ := json.Marshal(s.View().Snapshot("test_webhook"))
	fmt.Println(string(b))
	// Output:
	// applied
	// {"seq":0,"channel":"test_webhook","event":"join","role":"audience","uid":12121212,"account":"test","platform":1,"clientSeq":1625051035346,"ts":1560396843,"noticeId":"n1","source":"ncs","notifyMs":1611566412672}
	// stale
	// applied
	// {"seq":0,"channel":"test_webhook","event":"role.change","role":"host","uid":12121212,"account":"test","platform":1,"clientSeq":1625051035469,"ts":1560396850,"noticeId":"n2","source":"ncs","notifyMs":1611566416000}
	// {"channel":"test_webhook","seq":0,"hosts":[{"uid":12121212,"account":"test","platform":1,"since":1560396843}],"audience":[],"users":[],"counts":{"hosts":1,"audience":0,"users":0}}
}
