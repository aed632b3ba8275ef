package ncs_test

import (
	"errors"
	"testing"

	"github.com/usher-presence/usher/gateway/ncs"
)

// FuzzDecode feeds Decode arbitrary bodies. Run it with go test -fuzz=FuzzDecode ./gateway/ncs/; plain go test runs
// its seeds (the Decode tables and Agora's signature vector), and any failing input a fuzz run saved under
// testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(vectorBody))
	for _, tt := range decodeCases {
		f.Add([]byte(tt.body))
	}
	for _, tt := range decodeErrorCases {
		f.Add([]byte(tt.body))
	}
	sentinels := []error{ncs.ErrNotJSON, ncs.ErrMissingField, ncs.ErrInvalidChannel, ncs.ErrInvalidPayload}
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := ncs.Decode(body)
		if err != nil {
			if d != nil {
				t.Errorf("Decode returned %+v with error %v", d, err)
			}
			// The webhook handler maps these sentinels to statuses: every rejection must be one of them.
			matched := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					matched++
				}
			}
			if matched != 1 {
				t.Errorf("Decode error %q matches %d sentinel errors, want exactly 1", err, matched)
			}
			return
		}
		if d == nil {
			t.Fatal("Decode returned nil, nil")
		}
		if d.NoticeID == "" {
			t.Errorf("accepted a notification with an empty noticeId")
		}
		if d.Event != nil {
			if err := ncs.ValidChannelName(d.Event.ChannelName); err != nil {
				t.Errorf("accepted a channel event whose channel is invalid: %v", err)
			}
			if d.Channel != d.Event.ChannelName {
				t.Errorf("Channel = %q, Event.ChannelName = %q", d.Channel, d.Event.ChannelName)
			}
			if !d.EventType.IsChannelEvent() {
				t.Errorf("parsed a channel event for eventType %d", d.EventType)
			}
		} else if d.EventType.IsChannelEvent() && d.ProductID == ncs.ProductRTC {
			t.Errorf("RTC channel event %d accepted without a parsed payload", d.EventType)
		}
		if d.Channel != "" {
			if err := ncs.ValidChannelName(d.Channel); err != nil {
				t.Errorf("Channel %q is invalid: %v", d.Channel, err)
			}
		}
	})
}
