// Package subject names Usher's NATS subjects and encodes channel names into single subject tokens.
//
// A channel token is the channel name with every byte outside A-Z a-z 0-9 - _ written as %XX (upper-case hex).
// Agora channel names may hold '.', '>', spaces and other punctuation; encoded, a name can never become a subject
// separator or a wildcard, and two names never share a token. Decode accepts only canonical tokens, so the mapping
// is a bijection between names and valid tokens.
package subject

import (
	"errors"
	"strconv"
	"strings"
)

// Subject prefixes and the streams that hold them.
const (
	NCSPrefix      = "usher.ncs."      // + channel token: verified NCS notifications of a channel
	OtherPrefix    = "usher.other."    // + productId.eventType: notifications with no channel
	PresencePrefix = "usher.presence." // + channel token: effective presence changes
)

const upperHex = "0123456789ABCDEF"

// ErrBadToken is returned by Decode for a string that Encode cannot produce.
var ErrBadToken = errors.New("not a canonical channel token")

// Encode returns the subject token of a channel name.
func Encode(channel string) string {
	n := 0
	for i := 0; i < len(channel); i++ {
		if !plain(channel[i]) {
			n++
		}
	}
	if n == 0 {
		return channel
	}
	var b strings.Builder
	b.Grow(len(channel) + 2*n)
	for i := 0; i < len(channel); i++ {
		c := channel[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xF])
	}
	return b.String()
}

// Decode returns the channel name of a token made by Encode. It rejects anything Encode would not produce
// (lower-case hex, an escaped plain byte, a bare special byte), so that no two tokens decode to one name.
func Decode(token string) (string, error) {
	if token == "" {
		return "", ErrBadToken
	}
	var b strings.Builder
	b.Grow(len(token))
	for i := 0; i < len(token); i++ {
		c := token[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		if c != '%' || i+2 >= len(token) {
			return "", ErrBadToken
		}
		hi, lo := strings.IndexByte(upperHex, token[i+1]), strings.IndexByte(upperHex, token[i+2])
		if hi < 0 || lo < 0 {
			return "", ErrBadToken
		}
		d := byte(hi<<4 | lo)
		if plain(d) {
			return "", ErrBadToken
		}
		b.WriteByte(d)
		i += 2
	}
	return b.String(), nil
}

// NCS is the subject of a channel's verified notifications.
func NCS(channel string) string { return NCSPrefix + Encode(channel) }

// Presence is the subject of a channel's presence events.
func Presence(channel string) string { return PresencePrefix + Encode(channel) }

// Other is the subject of a notification that names no channel.
func Other(productID, eventType int) string {
	return OtherPrefix + strconv.Itoa(productID) + "." + strconv.Itoa(eventType)
}

// ChannelOf returns the channel of an NCS or presence subject.
func ChannelOf(subj string) (string, error) {
	for _, p := range []string{NCSPrefix, PresencePrefix} {
		if tok, ok := strings.CutPrefix(subj, p); ok {
			return Decode(tok)
		}
	}
	return "", ErrBadToken
}

func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
