package sim

import (
	"fmt"
	"slices"

	"github.com/usher-presence/usher/gateway/presence"
)

// MatchSnapshot compares a presence snapshot with the ground truth of its channel (Generator.Truth) on uid, role
// and account. It returns whether they match and, for a failure message, both sides.
func MatchSnapshot(s presence.Snapshot, truth []Member) (bool, string) {
	type m struct {
		UID     uint32
		Role    string
		Account string
	}
	var got, want []m
	for role, list := range map[string][]presence.Member{"host": s.Hosts, "audience": s.Audience, "user": s.Users} {
		for _, x := range list {
			got = append(got, m{x.UID, role, x.Account})
		}
	}
	for _, x := range truth {
		want = append(want, m{x.UID, x.Role.String(), x.Account})
	}
	cmp := func(a, b m) int { return int(a.UID) - int(b.UID) }
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	return slices.Equal(got, want), fmt.Sprintf("channel %q at seq %d:\n got  %v\n want %v", s.Channel, s.Seq, got, want)
}
