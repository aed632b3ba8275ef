package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// debugStopWait bounds the wait, once the debug server is closed, for its handlers to return: a profile or trace
// under way ends as soon as its connection is closed.
const debugStopWait = 2 * time.Second

// serveDebug serves Go's profiles on addr, apart from the public listener; the returned func stops it. Stopping cuts
// a profile or trace under way (its connection is closed) rather than waiting for it: one may ask for minutes, and
// the server's stop must stay within its bound.
func serveDebug(addr string, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("USHER_DEBUG_ADDR %q: %w", addr, err)
	}
	// Close does not wait for the handlers, which the profiles' own goroutines outlive otherwise: count them. A
	// request that reaches its handler once the stop has begun is refused, so that none is counted after the wait.
	var (
		mu       sync.Mutex
		stopping bool
		handlers sync.WaitGroup
	)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if stopping {
			mu.Unlock()
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		}
		handlers.Add(1)
		mu.Unlock()
		defer handlers.Done()
		mux.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug server stopped", "err", err)
		}
	}()
	log.Info("debug profiles listening", "addr", ln.Addr().String())
	return func() {
		mu.Lock()
		stopping = true
		mu.Unlock()
		_ = srv.Close() // ends the requests' contexts, which the profile and trace handlers wait on
		<-done
		stopped := make(chan struct{})
		go func() { handlers.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(debugStopWait):
			log.Warn("a debug handler did not return after the debug server closed")
		}
	}, nil
}
