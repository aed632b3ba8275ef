// Package auth issues and verifies the client tokens of Usher: HS256 JWTs with a required exp, an optional sub, and
// a channels claim that grants access to channels by exact name, by "prefix*" pattern, or to all with "*".
//
// A Verifier is immutable; all of its methods may be called concurrently.
package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Wildcard grants every channel, and the channel list.
const Wildcard = "*"

// Errors returned by Verify; test with errors.Is.
var (
	ErrNoToken      = errors.New("no token")
	ErrInvalidToken = errors.New("invalid token")
	ErrExpiredToken = errors.New("token expired")
	// ErrNotYetValid is a token whose nbf has not come by this server's clock (the issuer's may run ahead): unlike
	// the other invalid tokens, it may be taken later. It is also an ErrInvalidToken.
	ErrNotYetValid = fmt.Errorf("%w: not valid yet", ErrInvalidToken)
)

// ErrorCode is the code a client is answered for an error of Verify: unauthorized (no token), token_expired,
// token_not_yet_valid, or invalid_token (never taken: malformed, signed with another key, without exp).
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, ErrNoToken):
		return "unauthorized"
	case errors.Is(err, ErrExpiredToken):
		return "token_expired"
	case errors.Is(err, ErrNotYetValid):
		return "token_not_yet_valid"
	}
	return "invalid_token"
}

// Claims are the claims of a client token.
type Claims struct {
	// Channels lists what the token grants: exact channel names, "prefix*" patterns, or "*".
	Channels Grants `json:"channels"`
	jwt.RegisteredClaims
}

// Grants is a list of channel grants.
type Grants []string

// Allows reports whether the grants cover channel. Agora channel names cannot contain '*', so a trailing '*' in a
// grant is always a pattern and never part of a name.
func (g Grants) Allows(channel string) bool {
	if channel == "" {
		return false
	}
	for _, p := range g {
		if p == Wildcard || p == channel {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok && prefix != "" && strings.HasPrefix(channel, prefix) {
			return true
		}
	}
	return false
}

// All reports whether the grants include "*".
func (g Grants) All() bool {
	for _, p := range g {
		if p == Wildcard {
			return true
		}
	}
	return false
}

// Verifier verifies client tokens signed with an HS256 key: the current one, or one of the previous keys kept
// while tokens signed with them are still about (a key rotation).
type Verifier struct {
	keys   []jwt.VerificationKey
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for tokens signed with secret, or with one of previous.
func NewVerifier(secret string, previous ...string) *Verifier {
	v := &Verifier{parser: jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
	)}
	for _, s := range append([]string{secret}, previous...) {
		if s == "" {
			v.keys = nil // an empty key would let anyone sign tokens: verify none
			break
		}
		v.keys = append(v.keys, []byte(s))
	}
	return v
}

// Verify checks a token's signature, algorithm (HS256 only; "none" and everything else is refused) and expiry, and
// returns its claims. A token whose channels claim is missing grants nothing but is valid.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrNoToken
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) {
		if len(v.keys) == 0 {
			// An empty key would let anyone sign tokens: refuse rather than verify.
			return nil, errors.New("no key configured")
		}
		if len(v.keys) == 1 {
			return v.keys[0], nil
		}
		return jwt.VerificationKeySet{Keys: v.keys}, nil
	})
	switch {
	case err == nil:
		return &c, nil
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, ErrExpiredToken
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, fmt.Errorf("%w: exp is required", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, ErrNotYetValid
	default:
		return nil, fmt.Errorf("%w: %s", ErrInvalidToken, reason(err))
	}
}

// reason shortens a jwt error to its cause, without echoing any part of the token.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable"
	}
	return "rejected"
}

// FromHeader returns the token of an Authorization header value with the Bearer scheme, and whether it had one.
// The scheme is matched without regard to case, as HTTP's authentication schemes are (RFC 9110, 11.1).
func FromHeader(v string) (string, bool) {
	const scheme = "Bearer "
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	return strings.TrimSpace(v[len(scheme):]), true
}

// Issue signs a token for channels, valid for ttl, with subject sub (may be empty).
func Issue(secret string, channels []string, ttl time.Duration, sub string) (string, error) {
	if secret == "" {
		return "", errors.New("issue token: empty secret")
	}
	if ttl <= 0 {
		return "", errors.New("issue token: ttl must be positive")
	}
	now := time.Now()
	c := Claims{
		Channels: channels,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	return s, nil
}
