package subject_test

import (
	"errors"
	mathrand "math/rand"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/quick"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/subject"
)

func TestEncode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		channel, want string
	}{
		{"show-1", "show-1"},
		{"test_webhook", "test_webhook"},
		{"AZaz09-_", "AZaz09-_"},
		{"a.>", "a%2E%3E"},
		{"a b", "a%20b"},
		{"%", "%25"},
		{"*", "%2A"},
		{">", "%3E"},
		{".", "%2E"},
		{"a.*.>", "a%2E%2A%2E%3E"},
		{"a%2E", "a%252E"},
		{"~", "%7E"},
		{"{}", "%7B%7D"},
		{"\x00", "%00"},
		{"\t\r\n", "%09%0D%0A"},
		{"\x7f", "%7F"},
		{"\xff", "%FF"},
		{"é", "%C3%A9"},
	}
	for _, tt := range tests {
		t.Run(tt.channel, func(t *testing.T) {
			t.Parallel()
			if got := subject.Encode(tt.channel); got != tt.want {
				t.Errorf("Encode(%q) = %q, want %q", tt.channel, got, tt.want)
			}
			got, err := subject.Decode(tt.want)
			if err != nil || got != tt.channel {
				t.Errorf("Decode(%q) = %q, %v; want %q, nil", tt.want, got, err, tt.channel)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		got, want string
	}{
		{subject.NCS("show-1"), "usher.ncs.show-1"},
		{subject.NCS("a.>"), "usher.ncs.a%2E%3E"},
		{subject.NCS("a b"), "usher.ncs.a%20b"},
		{subject.Presence("show-1"), "usher.presence.show-1"},
		{subject.Presence("*"), "usher.presence.%2A"},
		{subject.Other(1, 10), "usher.other.1.10"},
		{subject.Other(3, 103), "usher.other.3.103"},
		{subject.Other(0, 999), "usher.other.0.999"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got subject %q, want %q", tt.got, tt.want)
		}
	}
}

func TestChannelOf(t *testing.T) {
	t.Parallel()
	for _, ch := range []string{"show-1", "a.>", "a b", "%", "*", "test_webhook", ncs.ChannelAlphabet()[:64]} {
		for _, subj := range []string{subject.NCS(ch), subject.Presence(ch)} {
			got, err := subject.ChannelOf(subj)
			if err != nil || got != ch {
				t.Errorf("ChannelOf(%q) = %q, %v; want %q, nil", subj, got, err, ch)
			}
		}
	}

	bad := []string{
		"",
		"show-1",
		"usher.ncs.",
		"usher.presence.",
		"usher.ncs.a.b",
		"usher.ncs.a%2e",
		"usher.ncs.*",
		"usher.ncs.>",
		"usher.presence.a b",
		"usher.other.1.10",
		"usher.other.abc",
		"usher.ncsa",
		"USHER.NCS.a",
		"x.usher.ncs.a",
	}
	for _, subj := range bad {
		if got, err := subject.ChannelOf(subj); !errors.Is(err, subject.ErrBadToken) {
			t.Errorf("ChannelOf(%q) = %q, %v; want %v", subj, got, err, subject.ErrBadToken)
		}
	}
}

func TestDecodeRejectsNonCanonical(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, token string }{
		{"empty", ""},
		{"lower-case hex", "a%2e"},
		{"lower-case first digit", "%c3%A9"},
		{"lower-case second digit", "%C3%a9"},
		{"escaped letter", "%41"},
		{"escaped digit", "%30"},
		{"escaped hyphen", "%2D"},
		{"escaped underscore", "%5F"},
		{"bare dot", "a.b"},
		{"bare space", "a b"},
		{"bare star", "*"},
		{"bare gt", ">"},
		{"bare tilde", "a~"},
		{"bare non-ASCII", "é"},
		{"bare NUL", "a\x00"},
		{"truncated escape", "a%2"},
		{"percent alone", "%"},
		{"percent at end", "abc%"},
		{"non-hex escape", "%GG"},
		{"sign in escape", "%+1"},
		{"escape of escape truncated", "%25%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, err := subject.Decode(tt.token); !errors.Is(err, subject.ErrBadToken) {
				t.Errorf("Decode(%q) = %q, %v; want %v", tt.token, got, err, subject.ErrBadToken)
			}
		})
	}
}

// Every three-byte escape: Decode accepts %XY exactly when X and Y are upper-case hex digits and the byte is not one
// Encode writes plainly.
func TestDecodeEveryEscape(t *testing.T) {
	t.Parallel()
	const upper = "0123456789ABCDEF"
	for x := 0; x < 256; x++ {
		for y := 0; y < 256; y++ {
			tok := string([]byte{'%', byte(x), byte(y)})
			hi, lo := strings.IndexByte(upper, byte(x)), strings.IndexByte(upper, byte(y))
			want := hi >= 0 && lo >= 0 && !isPlain(byte(hi<<4|lo))
			got, err := subject.Decode(tok)
			if want && (err != nil || got != string([]byte{byte(hi<<4 | lo)})) {
				t.Errorf("Decode(%q) = %q, %v; want byte %#x", tok, got, err, hi<<4|lo)
			}
			if !want && err == nil {
				t.Errorf("Decode(%q) = %q, nil; want an error", tok, got)
			}
		}
	}
}

// isPlain is the design's set of bytes a token keeps as they are: A-Z a-z 0-9 - _.
func isPlain(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// checkToken fails t unless tok is one valid NATS subject token made only of the bytes the design allows.
func checkToken(t *testing.T, name, tok string) {
	t.Helper()
	if tok == "" {
		t.Errorf("Encode(%q) is empty", name)
		return
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		// NATS: no separator, no wildcard, no whitespace, printable ASCII only.
		if c == '.' || c == '*' || c == '>' || c <= ' ' || c >= 0x7f {
			t.Errorf("Encode(%q) = %q: byte %q breaks the NATS token", name, tok, c)
			return
		}
		if !isPlain(c) && c != '%' {
			t.Errorf("Encode(%q) = %q: byte %q is outside A-Z a-z 0-9 - _ %%", name, tok, c)
			return
		}
	}
}

// randomChannel returns a name of 1 to 64 bytes from Agora's alphabet.
func randomChannel(r *rand.Rand, alphabet string) string {
	b := make([]byte, 1+r.IntN(ncs.MaxChannelNameLength))
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

func TestEncodeChannelProperties(t *testing.T) {
	t.Parallel()
	alphabet := ncs.ChannelAlphabet()
	r := rand.New(rand.NewPCG(1, 2))
	seen := make(map[string]string) // token -> channel
	const n = 20000
	for range n {
		ch := randomChannel(r, alphabet)
		tok := subject.Encode(ch)
		checkToken(t, ch, tok)
		if len(tok) > 3*len(ch) {
			t.Errorf("Encode(%q) = %q is more than 3 bytes a byte", ch, tok)
		}
		got, err := subject.Decode(tok)
		if err != nil || got != ch {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", ch, got, err)
		}
		if prev, ok := seen[tok]; ok && prev != ch {
			t.Fatalf("Encode(%q) = Encode(%q) = %q", prev, ch, tok)
		}
		seen[tok] = ch

		// A neighbour differing in one byte never shares the token.
		i := r.IntN(len(ch))
		c := alphabet[r.IntN(len(alphabet))]
		if c == ch[i] {
			continue
		}
		other := ch[:i] + string(c) + ch[i+1:]
		if subject.Encode(other) == tok {
			t.Fatalf("Encode(%q) = Encode(%q) = %q", ch, other, tok)
		}
	}
	if len(seen) < n/2 {
		t.Fatalf("only %d distinct channels generated", len(seen))
	}
	// The whole alphabet at both ends of the length range.
	for i := 0; i < len(alphabet); i++ {
		ch := strings.Repeat(alphabet[i:i+1], ncs.MaxChannelNameLength)
		tok := subject.Encode(ch)
		checkToken(t, ch, tok)
		if got, err := subject.Decode(tok); err != nil || got != ch {
			t.Errorf("Decode(Encode(%q)) = %q, %v", ch, got, err)
		}
	}
}

// Injectivity on every string of one or two arbitrary bytes.
func TestEncodeInjectiveShortStrings(t *testing.T) {
	t.Parallel()
	seen := make(map[string]string, 256*257)
	add := func(s string) {
		tok := subject.Encode(s)
		if prev, ok := seen[tok]; ok {
			t.Fatalf("Encode(%q) = Encode(%q) = %q", prev, s, tok)
		}
		seen[tok] = s
		if got, err := subject.Decode(tok); err != nil || got != s {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", s, got, err)
		}
	}
	for a := 0; a < 256; a++ {
		add(string([]byte{byte(a)}))
		for b := 0; b < 256; b++ {
			add(string([]byte{byte(a), byte(b)}))
		}
	}
}

// newMathRand returns the seeded generator testing/quick wants, so failures reproduce.
func newMathRand() *mathrand.Rand { return mathrand.New(mathrand.NewSource(1)) }

// Any non-empty byte string, not only legal channel names, survives the round trip.
func TestEncodeArbitraryBytes(t *testing.T) {
	t.Parallel()
	roundTrip := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		tok := subject.Encode(string(b))
		got, err := subject.Decode(tok)
		return err == nil && got == string(b) && !strings.ContainsAny(tok, ".*> \t\r\n")
	}
	cfg := &quick.Config{MaxCount: 5000, Rand: newMathRand()}
	if err := quick.Check(roundTrip, cfg); err != nil {
		t.Error(err)
	}
	injective := func(a, b []byte) bool {
		return string(a) == string(b) || subject.Encode(string(a)) != subject.Encode(string(b))
	}
	if err := quick.Check(injective, cfg); err != nil {
		t.Error(err)
	}
}

// FuzzDecodeToken checks that Decode accepts only what Encode produces: a decoded token encodes back to itself.
func FuzzDecodeToken(f *testing.F) {
	for _, s := range []string{"show-1", "a%2E%3E", "a%20b", "%25", "%2A", "a%2e", "%41", "a.b", "a b", "a%2", "%",
		"", "%C3%A9", "%FF%00", "%252E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		ch, err := subject.Decode(tok)
		if err != nil {
			if !errors.Is(err, subject.ErrBadToken) {
				t.Errorf("Decode(%q) = %v, want %v", tok, err, subject.ErrBadToken)
			}
			return
		}
		if ch == "" {
			t.Errorf("Decode(%q) = \"\", nil", tok)
		}
		if enc := subject.Encode(ch); enc != tok {
			t.Errorf("Decode(%q) = %q, which encodes to %q", tok, ch, enc)
		}
	})
}

// FuzzEncode checks the round trip and the token shape for any non-empty input.
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"show-1", "a.>", "a b", "%", "*", "é", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ch string) {
		if ch == "" {
			return
		}
		tok := subject.Encode(ch)
		checkToken(t, ch, tok)
		if got, err := subject.Decode(tok); err != nil || got != ch {
			t.Errorf("Decode(Encode(%q)) = %q, %v", ch, got, err)
		}
	})
}
