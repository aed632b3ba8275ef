package auth_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/usher-presence/usher/auth"
)

// agoraAlphabet is every byte Agora allows in a channel name. It is written out here rather than taken from
// gateway/ncs so that auth, which the hub imports, stays free of gateway packages even in its tests.
const agoraAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&()+-:;<=.>?@[]^_{}|~,"

func TestGrantsAllows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		grants  auth.Grants
		channel string
		want    bool
	}{
		{"exact", auth.Grants{"show-1"}, "show-1", true},
		{"exact is not a prefix", auth.Grants{"show"}, "show-1", false},
		{"exact is case-sensitive", auth.Grants{"Show-1"}, "show-1", false},
		{"exact longer than channel", auth.Grants{"show-12"}, "show-1", false},
		{"prefix pattern", auth.Grants{"show-*"}, "show-1", true},
		{"prefix pattern, long tail", auth.Grants{"show-*"}, "show-1.a b>c", true},
		{"prefix pattern needs the whole prefix", auth.Grants{"show-*"}, "shows", false},
		{"prefix pattern needs the separator", auth.Grants{"show-*"}, "show", false},
		{"prefix pattern matches the bare prefix", auth.Grants{"show-*"}, "show-", true},
		{"prefix pattern is case-sensitive", auth.Grants{"show-*"}, "SHOW-1", false},
		{"wildcard", auth.Grants{"*"}, "anything at all", true},
		{"wildcard single byte", auth.Grants{"*"}, "a", true},
		{"wildcard inside a list", auth.Grants{"a", "*", "b"}, "zzz", true},
		{"wildcard last", auth.Grants{"a", "b-*", "*"}, "zzz", true},
		{"second grant matches", auth.Grants{"a", "show-1"}, "show-1", true},
		{"second pattern matches", auth.Grants{"x-*", "show-*"}, "show-9", true},
		{"no grant matches", auth.Grants{"a", "b-*"}, "c", false},
		{"empty list", auth.Grants{}, "show-1", false},
		{"nil list", nil, "show-1", false},
		{"empty channel, wildcard", auth.Grants{"*"}, "", false},
		{"empty channel, empty grant", auth.Grants{""}, "", false},
		{"empty channel, pattern", auth.Grants{"a*"}, "", false},
		{"empty grant allows nothing", auth.Grants{""}, "a", false},
		{"star is only a trailing wildcard: leading", auth.Grants{"*-1"}, "show-1", false},
		{"star is only a trailing wildcard: middle", auth.Grants{"s*1"}, "show-1", false},
		{"double star", auth.Grants{"**"}, "show-1", false},
		{"prefix with double star", auth.Grants{"show**"}, "show-1", false},
		{"pattern with a dot", auth.Grants{"a.*"}, "a.b", true},
		{"pattern with a dot is literal", auth.Grants{"a.*"}, "ab", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.grants.Allows(tt.channel); got != tt.want {
				t.Errorf("%q.Allows(%q) = %t, want %t", tt.grants, tt.channel, got, tt.want)
			}
		})
	}
}

func TestGrantsAll(t *testing.T) {
	t.Parallel()
	tests := []struct {
		grants auth.Grants
		want   bool
	}{
		{nil, false},
		{auth.Grants{}, false},
		{auth.Grants{"*"}, true},
		{auth.Grants{"a", "*"}, true},
		{auth.Grants{"a*"}, false},
		{auth.Grants{"**"}, false},
		{auth.Grants{"a", "b"}, false},
		{auth.Grants{""}, false},
	}
	for _, tt := range tests {
		if got := tt.grants.All(); got != tt.want {
			t.Errorf("%q.All() = %t, want %t", tt.grants, got, tt.want)
		}
	}
}

// allowsRef is the grant rule written out on its own: ch is allowed when it is not empty and some grant equals it, is
// "*", or is a non-empty prefix followed by one "*" that ch starts with.
func allowsRef(grants []string, ch string) bool {
	if ch == "" {
		return false
	}
	for _, g := range grants {
		switch {
		case g == "*", g == ch:
			return true
		case len(g) >= 2 && g[len(g)-1] == '*' && len(ch) >= len(g)-1 && ch[:len(g)-1] == g[:len(g)-1]:
			return true
		}
	}
	return false
}

func TestGrantsAllowsProperty(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 11))
	// A small alphabet makes matches common; the full one covers every legal byte.
	small := "ab-."
	word := func(letters string, maxLen int) string {
		b := make([]byte, r.IntN(maxLen+1))
		for i := range b {
			b[i] = letters[r.IntN(len(letters))]
		}
		return string(b)
	}
	var allowed, denied int
	for range 20000 {
		letters := small
		if r.IntN(4) == 0 {
			letters = agoraAlphabet
		}
		ch := word(letters, 8)
		var grants auth.Grants
		for range r.IntN(4) {
			var g string
			switch r.IntN(8) {
			case 0:
				g = "*"
			case 1, 2:
				g = ch // an exact grant, sometimes mangled below
			case 3, 4:
				g = word(letters, 6) + "*"
			case 5:
				g = ch[:r.IntN(len(ch)+1)] + "*"
			default:
				g = word(letters, 8)
			}
			if r.IntN(6) == 0 && g != "" {
				i := r.IntN(len(g))
				g = g[:i] + "*" + g[i:]
			}
			grants = append(grants, g)
		}
		want := allowsRef(grants, ch)
		if got := grants.Allows(ch); got != want {
			t.Fatalf("%q.Allows(%q) = %t, want %t", grants, ch, got, want)
		}
		if want {
			allowed++
		} else {
			denied++
		}
		wantAll := false
		for _, g := range grants {
			wantAll = wantAll || g == "*"
		}
		if got := grants.All(); got != wantAll {
			t.Fatalf("%q.All() = %t, want %t", grants, got, wantAll)
		}
		if wantAll && ch != "" && !grants.Allows(ch) {
			t.Fatalf("%q has All() but does not allow %q", grants, ch)
		}
		if strings.Contains(ch, "*") {
			t.Fatalf("generated channel %q holds a star", ch)
		}
	}
	// The generator must exercise both outcomes, or the comparison above proves little.
	if allowed < 2000 || denied < 2000 {
		t.Fatalf("generator produced %d allowed and %d denied cases", allowed, denied)
	}
}
