package hub

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/usher-presence/usher/gateway/ncs"
)

// FuzzParseRequest checks parseRequest, the reading of every client frame, on any input: it never panics; a frame
// it takes is a request with a known op, a valid channel for subscribe and unsubscribe, and since and epoch only on
// a subscribe (epoch only with since), which reads back the same once encoded; a frame it refuses gets a bad_request
// error frame, naming the channel when the frame gave one as a string.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"op":"subscribe","channel":"show-1"}`,
		`{"op":"subscribe","channel":"show-1","since":41}`,
		`{"op":"subscribe","channel":"show-1","since":41,"epoch":"1795652700932"}`,
		`{"op":"subscribe","channel":"show-1","epoch":"1795652700932"}`,
		`{"op":"subscribe","channel":"show-1","since":0}`,
		`{"op":"subscribe","channel":"show-1","since":18446744073709551615}`,
		`{"op":"subscribe","channel":"show-1","since":18446744073709551616}`,
		`{"op":"subscribe","channel":"show-1","since":1e3}`,
		`{"op":"subscribe","channel":"show-1","since":-0}`,
		`{"op":"subscribe","channel":"show-1","since":-1}`,
		`{"op":"subscribe","channel":"show-1","since":1.5}`,
		`{"op":"subscribe","channel":"show-1","since":"41"}`,
		`{"op":"subscribe","channel":"show-1","since":null,"epoch":null}`,
		`{"op":"subscribe","channel":"show-1","epoch":7}`,
		`{"op":"unsubscribe","channel":"show-1"}`,
		`{"op":"unsubscribe","channel":"show-1","since":3,"epoch":"e"}`,
		`{"op":"ping"}`,
		`{"op":"ping","channel":"\u0000","since":5}`,
		`{"OP":"subscribe","Channel":"show-1"}`,
		`{"op":"subscribe","op":"ping","channel":"a","channel":"b"}`,
		`{"op":"subscribe","channel":"show-1","x":{"op":"ping","channel":{"a":[1,2,{}]}}}`,
		`{"op":"subscribe","channel":{"name":"show-1"}}`,
		`{"op":["subscribe"],"channel":"show-1"}`,
		`{"op":"subscribe","channel":"sh\u00f6w"}`,
		`{"op":"subscribe","channel":"` + strings.Repeat("a", 65) + `"}`,
		`{"op":"subscribe","channel":"` + strings.Repeat("a", 64) + `"}`,
		`{"op":"subscribe","channel":"*"}`,
		`{"op":"subscribe","channel":"team-*"}`,
		`{"op":"subscribe","channel":""}`,
		`{"op":"subscribe","channel":null}`,
		`{"op":null}`,
		`{"op":"Subscribe","channel":"show-1"}`,
		`{"op":"subscribe","channel":"show-1"} `,
		`{"op":"subscribe","channel":"show-1"}{"op":"ping"}`,
		`{"op":"subscribe","channel":"show-1"`,
		"{\"op\":\"subscribe\",\"channel\":\"sh\xffow\"}",
		"\xef\xbb\xbf{\"op\":\"ping\"}",
		`null`, `[]`, `"ping"`, `42`, `{}`, ``, ` `,
		strings.Repeat("[", 4000),
	} {
		f.Add(true, []byte(seed))
	}
	f.Add(false, []byte(`{"op":"ping"}`))
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		req, bad := parseRequest(text, data)
		if bad != nil {
			checkBadRequest(t, text, data, bad)
			return
		}
		if !text {
			t.Fatalf("a binary frame was taken: %+v", req)
		}
		switch req.Op {
		case opPing:
			if req != (request{Op: opPing}) {
				t.Fatalf("ping with more than its op: %+v", req)
			}
		case opSubscribe, opUnsubscribe:
			if err := ncs.ValidChannelName(req.Channel); err != nil {
				t.Fatalf("%s of an invalid channel %q taken: %v", req.Op, req.Channel, err)
			}
			if req.Op == opUnsubscribe && (req.Since != nil || req.Epoch != "") {
				t.Fatalf("unsubscribe with since or epoch: %+v", req)
			}
			if req.Since == nil && req.Epoch != "" {
				t.Fatalf("epoch without since: %+v", req)
			}
		default:
			t.Fatalf("op %q taken", req.Op)
		}
		again, bad := parseRequest(true, mustJSON(req))
		if bad != nil || again.Op != req.Op || again.Channel != req.Channel || again.Epoch != req.Epoch ||
			(again.Since == nil) != (req.Since == nil) || (req.Since != nil && *again.Since != *req.Since) {
			t.Fatalf("%+v encoded reads back as %+v (%s)", req, again, bad)
		}
	})
}

// checkBadRequest checks the error frame answering a frame parseRequest refused.
func checkBadRequest(t *testing.T, text bool, data, bad []byte) {
	t.Helper()
	var e errorFrame
	dec := json.NewDecoder(bytes.NewReader(bad))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || !utf8.Valid(bad) {
		t.Fatalf("answer %q is not an error frame: %v", bad, err)
	}
	if e.Type != "error" || e.Code != CodeBadRequest || e.Message == "" {
		t.Fatalf("answer %s, want a bad_request error", bad)
	}
	if !text {
		return
	}
	ch, ok := givenChannel(data)
	if !ok {
		return
	}
	if len(ch) <= ncs.MaxChannelNameLength {
		if e.Channel != ch {
			t.Fatalf("answer %s names channel %q, want %q", bad, e.Channel, ch)
		}
		return
	}
	// A longer name is repeated cut short: its first 64 bytes, less the start of a character cut in two, and "…".
	head, cut := strings.CutSuffix(e.Channel, "…")
	if !cut || !strings.HasPrefix(ch, head) || len(head) > ncs.MaxChannelNameLength || len(head) < ncs.MaxChannelNameLength-utf8.UTFMax+1 {
		t.Fatalf("answer %s names channel %q, want the first %d bytes of %q and …", bad, e.Channel, ncs.MaxChannelNameLength, ch)
	}
}

// givenChannel is the channel a frame gives: the string value of its one top-level key that matches "channel" (as
// encoding/json matches keys, regardless of case), when the frame is a JSON object.
func givenChannel(data []byte) (string, bool) {
	if !json.Valid(data) {
		return "", false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return "", false
	}
	// A map keeps only the last of duplicate keys: count the keys in the frame itself.
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return "", false
	}
	var raw json.RawMessage
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", false
		}
		if k, _ := tok.(string); strings.EqualFold(k, "channel") {
			n++
			raw = v
		}
	}
	var ch string
	if n != 1 || json.Unmarshal(raw, &ch) != nil {
		return "", false
	}
	return ch, true
}
