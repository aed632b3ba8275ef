package ncs_test

import (
	"fmt"
	"net/http"

	"github.com/usher-presence/usher/gateway/ncs"
)

func ExampleVerifier_Verify() {
	body := []byte(`{"eventMs":1560408533119,"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e-53f411c2761f","notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}`)

	// During a rotation, both the old and the new secret are accepted.
	v := ncs.NewVerifier("old-secret", "secret")

	h := http.Header{}
	h.Set(ncs.HeaderSignatureV2, "6d3320c60b11101395b7fc8f9068748808a0aa1bfa064438e39d1bc2c7d74d99")
	fmt.Println(v.Verify(h, body))

	h.Set(ncs.HeaderSignatureV2, ncs.SignSHA256("someone-else", body))
	fmt.Println(v.Verify(h, body))
	// Output:
	// <nil>
	// signature does not match any configured NCS secret
}

func ExampleDecode() {
	body := []byte(`{"noticeId":"2000001428:4330:107","productId":1,"eventType":106,"notifyMs":1611566412672,` +
		`"payload":{"channelName":"test_webhook","uid":12121212,"platform":1,"clientSeq":1625051035390,"reason":1,"ts":1560396943,"duration":600}}`)
	d, err := ncs.Decode(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.EventType, d.Channel, d.Event.UID, d.Event.ClientSeq, *d.Event.Reason == ncs.ReasonQuit)
	// Output: audience leave channel test_webhook 12121212 1625051035390 true
}
