package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/usher-presence/usher/auth"
)

const secret = "test-secret-0123456789"

// sign makes a token with claims, signed by method with key, the way a third party (or an attacker) would.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign test token: %v", err)
	}
	return s
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func validClaims(channels ...string) auth.Claims {
	return auth.Claims{
		Channels:         channels,
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
	}
}

func TestIssueVerify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		channels []string
		sub      string
	}{
		{name: "channels and sub", channels: []string{"show-1", "room-*"}, sub: "user-42"},
		{name: "wildcard, no sub", channels: []string{"*"}},
		{name: "odd channel names", channels: []string{"a.b > c", "x y%z"}, sub: "moderator"},
		{name: "no channels", channels: nil, sub: "nobody"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := time.Now().Truncate(time.Second)
			tok, err := auth.Issue(secret, tt.channels, 10*time.Minute, tt.sub)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			after := time.Now()
			c, err := auth.NewVerifier(secret).Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(c.Channels) != len(tt.channels) || (len(tt.channels) > 0 && !reflect.DeepEqual([]string(c.Channels), tt.channels)) {
				t.Errorf("Channels = %q, want %q", c.Channels, tt.channels)
			}
			if c.Subject != tt.sub {
				t.Errorf("Subject = %q, want %q", c.Subject, tt.sub)
			}
			if c.ExpiresAt == nil {
				t.Fatal("no exp")
			}
			if exp := c.ExpiresAt.Time; exp.Before(before.Add(10*time.Minute)) || exp.After(after.Add(10*time.Minute)) {
				t.Errorf("exp = %v, want 10 minutes after %v", exp, before)
			}
			if c.IssuedAt == nil || c.IssuedAt.Before(before) || c.IssuedAt.After(after) {
				t.Errorf("iat = %v, want between %v and %v", c.IssuedAt, before, after)
			}
			for _, ch := range tt.channels {
				if strings.HasSuffix(ch, "*") {
					continue
				}
				if !c.Channels.Allows(ch) {
					t.Errorf("verified claims do not allow granted channel %q", ch)
				}
			}
			if len(tt.channels) == 0 && c.Channels.Allows("show-1") {
				t.Error("a token without channels allows show-1")
			}
		})
	}
}

func TestIssueErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		secret string
		ttl    time.Duration
	}{
		{name: "empty secret", secret: "", ttl: time.Minute},
		{name: "zero ttl", secret: secret, ttl: 0},
		{name: "negative ttl", secret: secret, ttl: -time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := auth.Issue(tt.secret, []string{"a"}, tt.ttl, "")
			if err == nil || tok != "" {
				t.Fatalf("Issue = %q, %v; want an error", tok, err)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	key := []byte(secret)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, key, validClaims("show-1"))
	parts := strings.Split(good, ".")
	exp := time.Now().Add(time.Hour).Unix()
	claimsJSON := `{"channels":["*"],"exp":` + strconv.FormatInt(exp, 10) + `}`
	expired := validClaims("show-1")
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
	notYet := validClaims("show-1")
	notYet.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	noExp := auth.Claims{Channels: auth.Grants{"show-1"}}

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{name: "empty", token: "", want: auth.ErrNoToken},
		{name: "expired", token: sign(t, jwt.SigningMethodHS256, key, expired), want: auth.ErrExpiredToken},
		{name: "missing exp", token: sign(t, jwt.SigningMethodHS256, key, noExp), want: auth.ErrInvalidToken},
		{name: "not valid yet", token: sign(t, jwt.SigningMethodHS256, key, notYet), want: auth.ErrNotYetValid},
		{name: "not valid yet with wrong key is not reported as not valid yet",
			token: sign(t, jwt.SigningMethodHS256, []byte("other-secret"), notYet), want: auth.ErrInvalidToken},
		{name: "wrong key", token: sign(t, jwt.SigningMethodHS256, []byte("other-secret"), validClaims("show-1")),
			want: auth.ErrInvalidToken},
		{name: "expired with wrong key is not reported as expired",
			token: sign(t, jwt.SigningMethodHS256, []byte("other-secret"), expired), want: auth.ErrInvalidToken},
		{name: "empty key", token: sign(t, jwt.SigningMethodHS256, []byte{}, validClaims("*")),
			want: auth.ErrInvalidToken},
		{name: "alg none", token: b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(claimsJSON) + ".",
			want: auth.ErrInvalidToken},
		{name: "alg None", token: b64(`{"alg":"None","typ":"JWT"}`) + "." + b64(claimsJSON) + ".",
			want: auth.ErrInvalidToken},
		{name: "alg none with the HS256 signature kept",
			token: b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "." + parts[2], want: auth.ErrInvalidToken},
		{name: "alg none via the library", token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType,
			validClaims("*")), want: auth.ErrInvalidToken},
		{name: "no alg", token: b64(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2], want: auth.ErrInvalidToken},
		{name: "HS384 with the same key", token: sign(t, jwt.SigningMethodHS384, key, validClaims("show-1")),
			want: auth.ErrInvalidToken},
		{name: "HS512 with the same key", token: sign(t, jwt.SigningMethodHS512, key, validClaims("show-1")),
			want: auth.ErrInvalidToken},
		{name: "RS256", token: sign(t, jwt.SigningMethodRS256, rsaKey, validClaims("show-1")),
			want: auth.ErrInvalidToken},
		{name: "claims widened, signature kept", token: parts[0] + "." + b64(claimsJSON) + "." + parts[2],
			want: auth.ErrInvalidToken},
		{name: "signature dropped", token: parts[0] + "." + parts[1] + ".", want: auth.ErrInvalidToken},
		{name: "signature truncated", token: good[:len(good)-2], want: auth.ErrInvalidToken},
		{name: "signature of another token", token: parts[0] + "." + parts[1] + "." +
			strings.Split(sign(t, jwt.SigningMethodHS256, key, validClaims("show-2")), ".")[2],
			want: auth.ErrInvalidToken},
		{name: "channels is a string", token: sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{
			"channels": "*", "exp": exp}), want: auth.ErrInvalidToken},
		{name: "exp is a string", token: sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{
			"channels": []string{"a"}, "exp": "tomorrow"}), want: auth.ErrInvalidToken},
		{name: "one segment", token: "abcdef", want: auth.ErrInvalidToken},
		{name: "two segments", token: parts[0] + "." + parts[1], want: auth.ErrInvalidToken},
		{name: "four segments", token: good + ".x", want: auth.ErrInvalidToken},
		{name: "dots only", token: "..", want: auth.ErrInvalidToken},
		{name: "bad base64", token: "!!!." + parts[1] + "." + parts[2], want: auth.ErrInvalidToken},
		{name: "header not JSON", token: b64("not json") + "." + parts[1] + "." + parts[2], want: auth.ErrInvalidToken},
		{name: "Bearer prefix", token: "Bearer " + good, want: auth.ErrInvalidToken},
		{name: "whitespace", token: " " + good, want: auth.ErrInvalidToken},
	}
	v := auth.NewVerifier(secret)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := v.Verify(tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %+v, %v; want %v", c, err, tt.want)
			}
			if c != nil {
				t.Errorf("Verify returned claims %+v with its error", c)
			}
			for _, other := range []error{auth.ErrNoToken, auth.ErrInvalidToken, auth.ErrExpiredToken, auth.ErrNotYetValid} {
				// A token not valid yet is invalid (now), as well.
				also := tt.want == auth.ErrNotYetValid && other == auth.ErrInvalidToken
				if other != tt.want && !also && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
			// What a client is told: only a token that can never be taken is invalid_token.
			code := map[error]string{auth.ErrNoToken: "unauthorized", auth.ErrExpiredToken: "token_expired",
				auth.ErrNotYetValid: "token_not_yet_valid", auth.ErrInvalidToken: "invalid_token"}[tt.want]
			if got := auth.ErrorCode(err); got != code {
				t.Errorf("ErrorCode = %q, want %q", got, code)
			}
			// The error may be logged or sent to the client: it must not carry the token or any part of it.
			msg := err.Error()
			if tt.token != "" && strings.Contains(msg, tt.token) {
				t.Errorf("error %q contains the token", msg)
			}
			for _, seg := range strings.Split(tt.token, ".") {
				if len(seg) >= 8 && strings.Contains(msg, seg) {
					t.Errorf("error %q contains token segment %q", msg, seg)
				}
			}
		})
	}
}

// A Verifier built with an empty secret (a missing setting) must not accept tokens signed with the empty key.
func TestVerifyEmptySecret(t *testing.T) {
	t.Parallel()
	forged := sign(t, jwt.SigningMethodHS256, []byte{}, validClaims("*"))
	if c, err := auth.NewVerifier("").Verify(forged); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("NewVerifier(\"\").Verify(token signed with the empty key) = %+v, %v; want %v", c, err,
			auth.ErrInvalidToken)
	}
}

func TestVerifyMissingChannelsGrantsNothing(t *testing.T) {
	t.Parallel()
	tok := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()})
	c, err := auth.NewVerifier(secret).Verify(tok)
	if err != nil {
		t.Fatalf("Verify = %v, want nil", err)
	}
	if len(c.Channels) != 0 || c.Channels.All() || c.Channels.Allows("show-1") {
		t.Errorf("Channels = %q, want no grants", c.Channels)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	t.Parallel()
	v := auth.NewVerifier(secret)
	tok, err := auth.Issue(secret, []string{"show-*"}, time.Hour, "u")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Verify(tok); err != nil {
					errs <- err
					return
				}
				if _, err := v.Verify(tok + "x"); err == nil {
					errs <- errors.New("tampered token accepted")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// During a key rotation, tokens signed with a previous key are still taken, with the same checks; others are not.
func TestVerifyPreviousSecrets(t *testing.T) {
	t.Parallel()
	const current, previous, other = "current-secret-0123456789", "previous-secret-0123456789", "other-secret-0123456789"
	v := auth.NewVerifier(current, previous)
	expired := validClaims("show-1")
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"current key", sign(t, jwt.SigningMethodHS256, []byte(current), validClaims("show-1")), nil},
		{"previous key", sign(t, jwt.SigningMethodHS256, []byte(previous), validClaims("show-1")), nil},
		{"another key", sign(t, jwt.SigningMethodHS256, []byte(other), validClaims("show-1")), auth.ErrInvalidToken},
		{"previous key, expired", sign(t, jwt.SigningMethodHS256, []byte(previous), expired), auth.ErrExpiredToken},
		{"previous key, HS512", sign(t, jwt.SigningMethodHS512, []byte(previous), validClaims("show-1")), auth.ErrInvalidToken},
	} {
		c, err := v.Verify(tc.token)
		switch {
		case tc.want == nil && (err != nil || !c.Channels.Allows("show-1")):
			t.Errorf("%s: %+v, %v; want the token taken", tc.name, c, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: %+v, %v; want %v", tc.name, c, err, tc.want)
		}
	}
	// An empty previous key (a setting left blank) must not let tokens signed with the empty key in.
	forged := sign(t, jwt.SigningMethodHS256, []byte{}, validClaims("*"))
	if c, err := auth.NewVerifier(current, "").Verify(forged); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a token signed with the empty key: %+v, %v", c, err)
	}
}
