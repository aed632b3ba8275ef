// Command stages splits a CPU profile of a server under `usher bench` into the stages of the pipeline, in
// microseconds of CPU per notification, so that Usher and the baseline can be compared stage by stage:
//
//	USHER_DEBUG_ADDR=127.0.0.1:6060 usher bench --target usher --channels 2000 --subscribers 10000 --rate 3000 --duration 25s &
//	sleep 12; go tool pprof -proto -output usher.pb.gz 'http://127.0.0.1:6060/debug/pprof/profile?seconds=10'
//	go run ./hub/loadtest/stages -rate 3000 usher.pb.gz
//
// A sample belongs to the first stage, in the order listed, that one of its frames matches; the rest is "other".
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"

	"github.com/google/pprof/profile"
)

// stage is a part of the pipeline, recognised by the functions on a sample's stack.
type stage struct {
	name string
	re   *regexp.Regexp
}

// stages, most specific first: the webhook handler runs inside net/http, the applier inside the NATS client's
// calls, the hub's Publish inside the view.
var stages = []stage{
	{"garbage collector", regexp.MustCompile(`^runtime\.(gcBgMarkWorker|bgsweep|bgscavenge)`)},
	{"socket writes to subscribers", regexp.MustCompile(`usher/hub\.\(\*session\)\.writeLoop|loadtest\.\(\*Baseline\)\.publish`)},
	{"webhook handler (verify, decode, store)", regexp.MustCompile(`gateway\.\(\*Gateway\)\.postNCS`)},
	{"applier", regexp.MustCompile(`gateway\.\(\*applier\)`)},
	{"view (and the hub's fan-out call)", regexp.MustCompile(`gateway\.\(\*liveView\)`)},
	{"hub, other", regexp.MustCompile(`usher/hub\.`)},
	{"embedded NATS server", regexp.MustCompile(`nats-server`)},
	{"NATS client", regexp.MustCompile(`nats\.go|nats%2ego`)},
	{"HTTP server (net/http, gin, middleware)", regexp.MustCompile(`^net/http\.|gin-gonic|gateway\.\(\*Gateway\)`)},
	{"scheduler", regexp.MustCompile(`^runtime\.(mcall|park_m|schedule|goexit0|mstart)`)},
}

var syscallRe = regexp.MustCompile(`^(syscall\.|internal/runtime/syscall)`)

// split is a profile's CPU by stage.
type split struct {
	total   int64            // nanoseconds
	byStage map[string]int64 // nanoseconds
	syscall map[string]int64 // of which in system calls
	seconds float64          // the profile's duration
}

func splitProfile(p *profile.Profile) split {
	s := split{byStage: map[string]int64{}, syscall: map[string]int64{}, seconds: float64(p.DurationNanos) / 1e9}
	idx := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == "cpu" })
	if idx < 0 {
		idx = len(p.SampleType) - 1
	}
	for _, smp := range p.Sample {
		var names []string
		for _, loc := range smp.Location {
			for _, l := range loc.Line {
				if l.Function != nil {
					names = append(names, l.Function.Name)
				}
			}
		}
		v := smp.Value[idx]
		name := "other"
	find:
		for _, st := range stages {
			for _, n := range names {
				if st.re.MatchString(n) {
					name = st.name
					break find
				}
			}
		}
		s.total += v
		s.byStage[name] += v
		if slices.ContainsFunc(names, syscallRe.MatchString) {
			s.syscall[name] += v
		}
	}
	return s
}

func (s split) print(w io.Writer, rate float64) {
	n := rate * s.seconds // notifications in the profile
	fmt.Fprintf(w, "%.2f s of CPU in %.1f s at %.0f notifications/s: %.0f us per notification\n", float64(s.total)/1e9, s.seconds, rate, float64(s.total)/1e3/n)
	names := make([]string, 0, len(stages)+1)
	for _, st := range stages {
		names = append(names, st.name)
	}
	for _, name := range append(names, "other") {
		if s.byStage[name] == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-42s %6.1f us  %5.1f %%   (system calls %5.1f us)\n", name,
			float64(s.byStage[name])/1e3/n, 100*float64(s.byStage[name])/float64(s.total), float64(s.syscall[name])/1e3/n)
	}
}

func main() {
	rate := flag.Float64("rate", 0, "notifications per second while the profile was taken")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: stages -rate N cpu-profile.pb.gz ...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *rate <= 0 || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, path := range flag.Args() {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		fmt.Printf("== %s\n", path)
		splitProfile(p).print(os.Stdout, *rate)
	}
}
