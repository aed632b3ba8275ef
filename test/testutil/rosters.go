package testutil

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs/sim"
	"github.com/usher-presence/usher/gateway/presence"
)

// WaitRosters waits, at most 30 s, polling every every, until the Usher at each of bases serves every channel of
// gen as gen's truth has it (GET /v1/channels/{channel}/presence with tok, which must grant them). A base that
// does not answer is asked again at the next poll: instances may be stopping or starting meanwhile.
func WaitRosters(t testing.TB, gen *sim.Generator, tok string, every time.Duration, bases ...string) {
	t.Helper()
	truth := gen.Truth()
	members := 0
	for _, ms := range truth {
		members += len(ms)
	}
	if members == 0 {
		t.Fatal("the simulated truth is empty: nothing to compare")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	Eventually(t, 30*time.Second, every, func() (bool, string) {
		for _, base := range bases {
			for _, ch := range gen.Channels() {
				req, err := http.NewRequest(http.MethodGet, base+"/v1/channels/"+url.PathEscape(ch)+"/presence", nil)
				if err != nil {
					return false, err.Error()
				}
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					return false, err.Error()
				}
				var s presence.Snapshot
				err = json.NewDecoder(resp.Body).Decode(&s)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || err != nil {
					return false, fmt.Sprintf("%s %s: %d %v", base, ch, resp.StatusCode, err)
				}
				if ok, why := sim.MatchSnapshot(s, truth[ch]); !ok {
					return false, base + " " + why
				}
			}
		}
		return true, ""
	})
}
