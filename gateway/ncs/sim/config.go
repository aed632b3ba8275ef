// Package sim simulates Agora's Notifications service (NCS) for demos, load tests and end-to-end tests.
//
// A Generator invents realistic RTC channel histories (channels created and destroyed, hosts and audience joining,
// leaving with every documented reason and changing roles, communication-profile users) and delivers them with the
// faults NCS has: duplicates, resends with a newer notifyMs, resends under a new noticeId, and out-of-order delivery.
// It keeps the ground truth, who is in each channel after every original event, to compare a receiver's rosters
// with. A Sender posts deliveries the way Agora does, signed and retried; Run paces a Generator into a Sender.
package sim

import (
	"errors"
	"fmt"

	"github.com/usher-presence/usher/gateway/ncs"
)

// ErrConfig is wrapped by the error New returns for an invalid Config, and Run for an invalid RunConfig.
var ErrConfig = errors.New("sim: invalid config")

// Config configures a Generator. The zero value is valid: every zero field means the default its comment names.
type Config struct {
	// Channels is the number of channels. Zero means 5.
	Channels int
	// Prefix is put in front of every channel name. The names themselves cycle through patterns that use characters
	// Agora allows but code often trips on: "show-1", "show.2", "talk #3", "q&a: 4", "room_5", "[vip] 6",
	// "<live> 7", "~chill~|8", then "show-9" and so on. Every name, prefix included, must pass ncs.ValidChannelName.
	Prefix string
	// Hosts is the number of hosts a live-broadcast channel tends towards. Zero means 2.
	Hosts int
	// Audience is the audience size a live-broadcast channel tends towards. Zero means 8.
	Audience int
	// Communication is the fraction of channels in the communication profile: their users join and leave with
	// 107/108, have no roles, and tend towards Hosts+Audience of them. Zero means 0.25; a negative value means none.
	Communication float64
	// Seed makes the output deterministic: a Generator with the same Config, called with the same clock readings,
	// produces the same bytes. Every value, zero included, is a seed.
	Seed uint64
	// Faults sets the delivery faults. Nil means DefaultFaults(); &Faults{} means none.
	Faults *Faults
}

// Faults are the delivery faults a Generator adds to its stream of original events. Each probability applies
// independently to every original event, so over a long run a fault's count is about its probability times the
// number of originals. Zero means the fault never happens.
type Faults struct {
	// Duplicate is the probability that an original is delivered again with a byte-identical body.
	Duplicate float64
	// Resend is the probability that an original is delivered again under the same noticeId with a newer
	// notifyMs, as Agora does when it retries.
	Resend float64
	// ResendNewID is the probability that an original is delivered again under a new noticeId with the same
	// payload and a newer notifyMs; Agora does not promise to keep noticeId across retries.
	ResendNewID float64
	// Reorder is the probability that an original is held back and delivered after one or more later ones.
	Reorder float64
	// MaxHold bounds how long a held original or an extra copy waits: it becomes due within MaxHold further
	// deliveries (it goes out later only when several are due at once). Zero means 4.
	MaxHold int
}

// DefaultFaults returns the faults of a Generator whose Config.Faults is nil: a few percent of each, as a demo
// should show them.
func DefaultFaults() Faults {
	return Faults{Duplicate: 0.02, Resend: 0.02, ResendNewID: 0.01, Reorder: 0.03, MaxHold: defaultMaxHold}
}

const (
	defaultChannels      = 5
	defaultHosts         = 2
	defaultAudience      = 8
	defaultCommunication = 0.25
	defaultMaxHold       = 4
)

// namePatterns are the default channel names; %d is the channel's number, from 1.
var namePatterns = []string{"show-%d", "show.%d", "talk #%d", "q&a: %d", "room_%d", "[vip] %d", "<live> %d", "~chill~|%d"}

// channelName returns the name of channel i (from 0).
func channelName(prefix string, i int) string {
	return prefix + fmt.Sprintf(namePatterns[i%len(namePatterns)], i+1)
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, Faults, error) {
	f := DefaultFaults()
	if c.Faults != nil {
		f = *c.Faults
	}
	switch {
	case c.Channels < 0:
		return c, f, fmt.Errorf("%w: Channels is %d, must not be negative", ErrConfig, c.Channels)
	case c.Hosts < 0:
		return c, f, fmt.Errorf("%w: Hosts is %d, must not be negative", ErrConfig, c.Hosts)
	case c.Audience < 0:
		return c, f, fmt.Errorf("%w: Audience is %d, must not be negative", ErrConfig, c.Audience)
	case c.Communication > 1 || c.Communication != c.Communication:
		return c, f, fmt.Errorf("%w: Communication is %v, must be at most 1", ErrConfig, c.Communication)
	case f.MaxHold < 0:
		return c, f, fmt.Errorf("%w: Faults.MaxHold is %d, must not be negative", ErrConfig, f.MaxHold)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"Duplicate", f.Duplicate}, {"Resend", f.Resend}, {"ResendNewID", f.ResendNewID}, {"Reorder", f.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) {
			return c, f, fmt.Errorf("%w: Faults.%s is %v, must be a probability from 0 to 1", ErrConfig, p.name, p.v)
		}
	}
	if c.Channels == 0 {
		c.Channels = defaultChannels
	}
	if c.Hosts == 0 {
		c.Hosts = defaultHosts
	}
	if c.Audience == 0 {
		c.Audience = defaultAudience
	}
	switch {
	case c.Communication == 0:
		c.Communication = defaultCommunication
	case c.Communication < 0:
		c.Communication = 0
	}
	if f.MaxHold == 0 {
		f.MaxHold = defaultMaxHold
	}
	// The longest name is the last one's, or one of the few before it with a longer pattern.
	for i := max(0, c.Channels-len(namePatterns)); i < c.Channels; i++ {
		if err := ncs.ValidChannelName(channelName(c.Prefix, i)); err != nil {
			return c, f, fmt.Errorf("%w: Prefix %q gives channel name %q: %w", ErrConfig, c.Prefix, channelName(c.Prefix, i), err)
		}
	}
	return c, f, nil
}
