package ncs_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/usher-presence/usher/gateway/ncs"
)

// Agora's published signature vector.
const (
	vectorBody   = `{"eventMs":1560408533119,"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e-53f411c2761f","notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}`
	vectorSecret = "secret"
	vectorSHA256 = "6d3320c60b11101395b7fc8f9068748808a0aa1bfa064438e39d1bc2c7d74d99"
	vectorSHA1   = "033c62f40f687675f17f0f41f91a40c71c0f134c"
)

func TestSignAgoraVector(t *testing.T) {
	t.Parallel()
	if got := ncs.SignSHA256(vectorSecret, []byte(vectorBody)); got != vectorSHA256 {
		t.Errorf("SignSHA256 = %s, want %s", got, vectorSHA256)
	}
	if got := ncs.SignSHA1(vectorSecret, []byte(vectorBody)); got != vectorSHA1 {
		t.Errorf("SignSHA1 = %s, want %s", got, vectorSHA1)
	}

	h := http.Header{}
	ncs.Sign(h, vectorSecret, []byte(vectorBody))
	if got := h.Get(ncs.HeaderSignatureV2); got != vectorSHA256 {
		t.Errorf("Sign set %s = %q, want %q", ncs.HeaderSignatureV2, got, vectorSHA256)
	}
	if got := h.Get(ncs.HeaderSignature); got != vectorSHA1 {
		t.Errorf("Sign set %s = %q, want %q", ncs.HeaderSignature, got, vectorSHA1)
	}
	if err := ncs.NewVerifier(vectorSecret).Verify(h, []byte(vectorBody)); err != nil {
		t.Errorf("Verify(Sign(...)) = %v, want nil", err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	body := []byte(vectorBody)
	other := []byte(strings.Replace(vectorBody, `"b":2`, `"b":3`, 1))
	good := ncs.NewVerifier(vectorSecret)

	tests := []struct {
		name     string
		verifier *ncs.Verifier
		v1, v2   string // header values; "" leaves the header out
		body     []byte
		want     error
	}{
		{name: "V2 alone", verifier: good, v2: vectorSHA256, want: nil},
		{name: "V1 alone", verifier: good, v1: vectorSHA1, want: nil},
		{name: "both good", verifier: good, v1: vectorSHA1, v2: vectorSHA256, want: nil},
		{name: "good V1 does not rescue a bad V2", verifier: good, v1: vectorSHA1,
			v2: ncs.SignSHA256("wrong", body), want: ncs.ErrBadSignature},
		{name: "good V1 does not rescue a malformed V2", verifier: good, v1: vectorSHA1, v2: "not-hex",
			want: ncs.ErrBadSignature},
		{name: "bad V1 is ignored when V2 is good", verifier: good, v1: ncs.SignSHA1("wrong", body),
			v2: vectorSHA256, want: nil},
		{name: "garbage V1 is ignored when V2 is good", verifier: good, v1: "zz", v2: vectorSHA256, want: nil},
		{name: "no headers", verifier: good, want: ncs.ErrMissingSignature},
		{name: "wrong secret V2", verifier: good, v2: ncs.SignSHA256("Secret", body), want: ncs.ErrBadSignature},
		{name: "wrong secret V1", verifier: good, v1: ncs.SignSHA1("Secret", body), want: ncs.ErrBadSignature},
		{name: "body changed V2", verifier: good, v2: vectorSHA256, body: other, want: ncs.ErrBadSignature},
		{name: "body changed V1", verifier: good, v1: vectorSHA1, body: other, want: ncs.ErrBadSignature},
		{name: "empty body", verifier: good, v2: vectorSHA256, body: []byte{}, want: ncs.ErrBadSignature},
		{name: "non-hex V2", verifier: good, v2: strings.Repeat("zz", 32), want: ncs.ErrBadSignature},
		{name: "non-hex V1", verifier: good, v1: strings.Repeat("g", 40), want: ncs.ErrBadSignature},
		{name: "odd length hex", verifier: good, v2: vectorSHA256[:63], want: ncs.ErrBadSignature},
		{name: "V2 truncated by a byte", verifier: good, v2: vectorSHA256[:62], want: ncs.ErrBadSignature},
		{name: "V2 one byte too long", verifier: good, v2: vectorSHA256 + "00", want: ncs.ErrBadSignature},
		{name: "V1 truncated by a byte", verifier: good, v1: vectorSHA1[:38], want: ncs.ErrBadSignature},
		{name: "SHA-1 value in the V2 header", verifier: good, v2: vectorSHA1, want: ncs.ErrBadSignature},
		{name: "SHA-256 value in the V1 header", verifier: good, v1: vectorSHA256, want: ncs.ErrBadSignature},
		{name: "SHA-256 prefix in the V1 header", verifier: good, v1: vectorSHA256[:40], want: ncs.ErrBadSignature},
		{name: "padded with spaces", verifier: good, v2: " " + vectorSHA256 + " ", want: ncs.ErrBadSignature},
		{name: "upper-case hex V2", verifier: good, v2: strings.ToUpper(vectorSHA256), want: nil},
		{name: "upper-case hex V1", verifier: good, v1: strings.ToUpper(vectorSHA1), want: nil},
		{name: "rotation: new secret second", verifier: ncs.NewVerifier("old", vectorSecret), v2: vectorSHA256, want: nil},
		{name: "rotation: old secret first", verifier: ncs.NewVerifier(vectorSecret, "new"), v2: vectorSHA256, want: nil},
		{name: "rotation: V1 with second secret", verifier: ncs.NewVerifier("old", vectorSecret), v1: vectorSHA1, want: nil},
		{name: "rotation: neither secret", verifier: ncs.NewVerifier("old", "new"), v2: vectorSHA256,
			want: ncs.ErrBadSignature},
		{name: "empty secrets skipped", verifier: ncs.NewVerifier("", vectorSecret, ""), v2: vectorSHA256, want: nil},
		{name: "only empty secrets reject an empty-key signature", verifier: ncs.NewVerifier("", ""),
			v2: ncs.SignSHA256("", body), want: ncs.ErrBadSignature},
		{name: "only empty secrets reject an empty-key V1 signature", verifier: ncs.NewVerifier(""),
			v1: ncs.SignSHA1("", body), want: ncs.ErrBadSignature},
		{name: "no secrets", verifier: ncs.NewVerifier(), v2: vectorSHA256, want: ncs.ErrBadSignature},
		{name: "zero Verifier rejects a good signature", verifier: &ncs.Verifier{}, v1: vectorSHA1, v2: vectorSHA256,
			want: ncs.ErrBadSignature},
		{name: "zero Verifier rejects an empty-key signature", verifier: &ncs.Verifier{},
			v2: ncs.SignSHA256("", body), want: ncs.ErrBadSignature},
		{name: "zero Verifier without headers", verifier: &ncs.Verifier{}, want: ncs.ErrMissingSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			if tt.v1 != "" {
				h.Set(ncs.HeaderSignature, tt.v1)
			}
			if tt.v2 != "" {
				h.Set(ncs.HeaderSignatureV2, tt.v2)
			}
			b := body
			if tt.body != nil {
				b = tt.body
			}
			err := tt.verifier.Verify(h, b)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// Incoming requests carry header names in any case; net/http canonicalises them and Verify must find them.
func TestVerifyHeaderNameCase(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"agora-signature-v2", "AGORA-SIGNATURE-V2", "Agora-Signature-V2"} {
		h := http.Header{}
		h.Add(name, vectorSHA256)
		if err := ncs.NewVerifier(vectorSecret).Verify(h, []byte(vectorBody)); err != nil {
			t.Errorf("header %q: Verify = %v, want nil", name, err)
		}
	}
}

func TestVerifyConcurrent(t *testing.T) {
	t.Parallel()
	v := ncs.NewVerifier("old", vectorSecret)
	h := http.Header{}
	h.Set(ncs.HeaderSignatureV2, vectorSHA256)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if err := v.Verify(h, []byte(vectorBody)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Verify = %v", err)
	}
}
