package ncs

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"net/http"
)

// The headers Agora signs a notification with: hex HMAC of the raw body, keyed with the NCS secret.
const (
	HeaderSignature   = "Agora-Signature"    // HMAC-SHA1
	HeaderSignatureV2 = "Agora-Signature-V2" // HMAC-SHA256
)

// Signature errors.
var (
	ErrMissingSignature = errors.New("no Agora-Signature-V2 or Agora-Signature header")
	ErrBadSignature     = errors.New("signature does not match any configured NCS secret")
)

// Verifier checks NCS signatures against one or more secrets (several during a rotation). Its zero value rejects
// everything. A Verifier is immutable and may be used concurrently.
type Verifier struct {
	secrets [][]byte
}

// NewVerifier returns a Verifier that accepts a signature made with any of secrets. Empty secrets are skipped.
func NewVerifier(secrets ...string) *Verifier {
	v := &Verifier{}
	for _, s := range secrets {
		if s != "" {
			v.secrets = append(v.secrets, []byte(s))
		}
	}
	return v
}

// Verify checks the signature headers of a request against its raw body. When Agora-Signature-V2 (SHA-256) is
// present it alone decides; Agora-Signature (SHA-1) is used only when V2 is absent. Comparison is constant-time.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	// A header that is present decides even when empty: an empty V2 must not hand the decision to SHA-1.
	if _, ok := h[http.CanonicalHeaderKey(HeaderSignatureV2)]; ok {
		return v.check(sha256.New, h.Get(HeaderSignatureV2), body)
	}
	if _, ok := h[http.CanonicalHeaderKey(HeaderSignature)]; ok {
		return v.check(sha1.New, h.Get(HeaderSignature), body)
	}
	return ErrMissingSignature
}

func (v *Verifier) check(newHash func() hash.Hash, sigHex string, body []byte) error {
	want, err := hex.DecodeString(sigHex)
	if err != nil || len(want) != newHash().Size() {
		return ErrBadSignature
	}
	ok := false
	for _, secret := range v.secrets {
		mac := hmac.New(newHash, secret)
		mac.Write(body)
		// Check every secret, so the time taken does not tell which one matched.
		if hmac.Equal(mac.Sum(nil), want) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}

// SignSHA256 returns the Agora-Signature-V2 value of body under secret.
func SignSHA256(secret string, body []byte) string { return sign(sha256.New, secret, body) }

// SignSHA1 returns the Agora-Signature value of body under secret.
func SignSHA1(secret string, body []byte) string { return sign(sha1.New, secret, body) }

// Sign sets both signature headers on h, as Agora does.
func Sign(h http.Header, secret string, body []byte) {
	h.Set(HeaderSignature, SignSHA1(secret, body))
	h.Set(HeaderSignatureV2, SignSHA256(secret, body))
}

func sign(newHash func() hash.Hash, secret string, body []byte) string {
	mac := hmac.New(newHash, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}
