package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/usher-presence/usher/auth"
	"github.com/usher-presence/usher/gateway"
	"github.com/usher-presence/usher/gateway/ncs"
)

// token prints a client token for the channels given.
func token(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var (
		secret, sub string
		ttl         time.Duration
		channels    []string
	)
	s := newSettings("token", getenv, stderr)
	s.Secret(&secret, "jwt-secret", "USHER_JWT_SECRET", "HS256 key that signs client tokens")
	s.fs.Func("channel", `a channel the token grants: an exact name, "prefix*", or "*" for all (repeatable)`, func(v string) error {
		if err := validGrant(v); err != nil {
			return err
		}
		channels = append(channels, v)
		return nil
	})
	s.fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	s.fs.StringVar(&sub, "sub", "", "subject (who the token is for), optional")
	if err := s.Parse(args); err != nil {
		return err
	}
	switch {
	case secret == "":
		return errors.New("USHER_JWT_SECRET is not set: the token must be signed with the server's key")
	case len(secret) < gateway.MinJWTSecret:
		return fmt.Errorf("USHER_JWT_SECRET is too short: the server refuses keys under %d bytes, so it would refuse this token", gateway.MinJWTSecret)
	case len(channels) == 0:
		return errors.New("give at least one --channel")
	case ttl <= 0:
		return fmt.Errorf("--ttl %s: it must be positive", ttl)
	}
	tok, err := auth.Issue(secret, channels, ttl, sub)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// validGrant checks that a grant is "*", a legal channel name, or a legal non-empty prefix followed by "*".
func validGrant(g string) error {
	if g == auth.Wildcard {
		return nil
	}
	name, _ := strings.CutSuffix(g, "*")
	if err := ncs.ValidChannelName(name); err != nil {
		return fmt.Errorf("grant %q: %w", g, err)
	}
	return nil
}
