package gateway_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/usher-presence/usher/gateway/ncs"
	"github.com/usher-presence/usher/gateway/presence"
	"github.com/usher-presence/usher/hub"
	"github.com/usher-presence/usher/test/testutil"
)

// A resume from the view's memory that is too far behind to replay (more than hub.DefaultMaxReplay events) costs
// what a replay may use, not a copy of every event of the channel that the memory holds: with a large
// USHER_RESUME_EVENTS, one client resuming again and again from an old seq had each resume copy them all, under the
// view's lock, before it was told to reset.
func TestResumeTooFarBehindInMemoryCopiesLittle(t *testing.T) {
	const n = 6 * hub.DefaultMaxReplay
	cfg := testConfig(t, t.TempDir())
	cfg.RecentEvents = 2 * n
	g, base := startGateway(t, cfg)

	// n events of one channel: a join and a leave of one user, over and over (a roster of at most one member, so
	// that the snapshot each reset sends is small).
	const ch = "hot"
	now := time.Now().Unix()
	storeNotices(t, g, ch, n, func(i int) (ncs.EventType, map[string]any) {
		typ := ncs.AudienceJoin
		if i%2 == 1 {
			typ = ncs.AudienceLeave
		}
		return typ, map[string]any{"channelName": ch, "uid": 1, "clientSeq": i + 1, "ts": now, "reason": 1, "duration": 1}
	})

	// The view holds every event (waitSnapshot's 15 s may not do for them all under the race detector).
	tok := token(t, ch)
	testutil.Eventually(t, 60*time.Second, 50*time.Millisecond, func() (bool, string) {
		var s presence.Snapshot
		code, raw := getJSON(t, base, presencePath(ch), tok, &s)
		return code == 200 && s.Seq >= n, fmt.Sprintf("%d %s", code, raw)
	})

	c := mustDial(t, base, tok)
	resume := func() {
		c.subscribe(ch, 0)
		c.expect("subscribed", ch)
		c.expect("reset", ch) // far more than hub.DefaultMaxReplay events behind
		c.expect("snapshot", ch)
	}
	resume() // the snapshot is made once, then shared
	const resumes = 5
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range resumes {
		resume()
	}
	runtime.ReadMemStats(&after)
	// A slice grown by append allocates about 5 times its final size: a copy of the n events kept, about 180 B each,
	// came to about 50 MB; the hub.DefaultMaxReplay+1 that tell a resume too far behind come to about 9 MB.
	perResume := (after.TotalAlloc - before.TotalAlloc) / resumes
	if most := uint64(20 << 20); perResume > most {
		t.Errorf("each resume too far behind allocated %d KiB; want at most %d KiB", perResume>>10, most>>10)
	}
	t.Logf("each resume too far behind allocated %d KiB", perResume>>10)
}
