package hub

import (
	"encoding/json"
	"testing"

	"github.com/usher-presence/usher/gateway/presence"
)

// TestEventFrameMatchesEncoding checks that the frame spliced from an event's stored JSON is byte for byte the one
// encoding the event gives, and that input that is not an encoded object falls back to encoding.
func TestEventFrameMatchesEncoding(t *testing.T) {
	two, reason, dur := 2, 2, int64(61)
	events := []presence.Event{
		{Seq: 1, Channel: "show-1", Event: presence.ChannelCreate, Ts: 1560396843, NoticeID: "n1", Source: "ncs"},
		{Seq: 42, Channel: "a \"quoted\" <ch>", Event: presence.Join, Role: presence.Audience, UID: 7, Account: "ü",
			Platform: &two, ClientSeq: 1625051035346, Ts: 1560396843, NoticeID: "n2", Source: "ncs", NotifyMs: 1611566412672},
		{Seq: 43, Channel: "show-1", Event: presence.Leave, Role: presence.Host, UID: 7, Reason: &reason, Duration: &dur,
			ClientSeq: 2, NoticeID: "n3:1", Source: "ncs"},
	}
	for _, e := range events {
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		want := EncodeEvent(e)
		if got := EventFrame(e, raw); string(got) != string(want) {
			t.Errorf("spliced frame\n got %s\nwant %s", got, want)
		}
		for _, bad := range [][]byte{nil, []byte("{}"), []byte(`[1]`), []byte(`{"seq":1`)} {
			if got := EventFrame(e, bad); string(got) != string(want) {
				t.Errorf("with raw %q: got %s, want the encoding", bad, got)
			}
		}
	}
}
