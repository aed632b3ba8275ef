package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

// stack makes a sample of v nanoseconds whose stack is fns, leaf first.
func stack(p *profile.Profile, v int64, fns ...string) {
	var locs []*profile.Location
	for _, name := range fns {
		f := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name}
		p.Function = append(p.Function, f)
		l := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: f}}}
		p.Location = append(p.Location, l)
		locs = append(locs, l)
	}
	p.Sample = append(p.Sample, &profile.Sample{Location: locs, Value: []int64{1, v}})
}

func TestSplitProfile(t *testing.T) {
	p := &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		DurationNanos: 2e9,
	}
	// The webhook handler inside net/http and gin: the handler's stage, not HTTP's; its system call counted too.
	stack(p, 300e6, "internal/runtime/syscall/linux.Syscall6", "github.com/usher-presence/usher/gateway.(*Gateway).postNCS",
		"github.com/gin-gonic/gin.(*Context).Next", "net/http.(*conn).serve")
	stack(p, 100e6, "net/http.(*conn).readRequest", "net/http.(*conn).serve")
	// The hub's Publish called by the view is the view's.
	stack(p, 50e6, "github.com/usher-presence/usher/hub.(*Hub).Publish", "github.com/usher-presence/usher/gateway.(*liveView).follow")
	stack(p, 40e6, "github.com/usher-presence/usher/hub.(*corkConn).flush", "github.com/usher-presence/usher/hub.(*session).writeLoop")
	stack(p, 10e6, "main.main")

	s := splitProfile(p)
	want := map[string]int64{
		"webhook handler (verify, decode, store)": 300e6, "HTTP server (net/http, gin, middleware)": 100e6,
		"view (and the hub's fan-out call)": 50e6, "socket writes to subscribers": 40e6, "other": 10e6,
	}
	for name, v := range want {
		if s.byStage[name] != v {
			t.Errorf("%s: %d ns, want %d", name, s.byStage[name], v)
		}
	}
	if s.total != 500e6 || s.syscall["webhook handler (verify, decode, store)"] != 300e6 || len(s.syscall) != 1 {
		t.Errorf("total %d, system calls %v", s.total, s.syscall)
	}

	var out bytes.Buffer
	s.print(&out, 100) // 200 notifications in 2 s: 2,500 us per notification
	for _, line := range []string{"2500 us per notification", "webhook handler (verify, decode, store)    1500.0 us   60.0 %   (system calls 1500.0 us)"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("report lacks %q:\n%s", line, out.String())
		}
	}
}
