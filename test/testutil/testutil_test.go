package testutil_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-presence/usher/test/testutil"
)

// TestSyncBuffer writes from several goroutines while the test reads (run it with -race).
func TestSyncBuffer(t *testing.T) {
	var b testutil.SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("x\n"))
			}
		})
	}
	testutil.Eventually(t, 5*time.Second, time.Millisecond, func() (bool, string) {
		n := strings.Count(b.String(), "x\n")
		return n == 400, fmt.Sprintf("%d lines of 400", n)
	})
	wg.Wait()
}

// TestCutProxy sends a line through the proxy to an echo server, cuts (the connection ends, a new one is closed at
// once), and restores (a new connection works again).
func TestCutProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the echo server did not stop within 10 s")
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, nil)
			wg.Go(func() { // echo lines
				s := bufio.NewScanner(c)
				for s.Scan() {
					_, _ = fmt.Fprintln(c, s.Text())
				}
			})
		}
	})
	p := testutil.NewCutProxy(t, ln.Addr().String())

	echo := func(c net.Conn, line string) (string, error) {
		if _, err := fmt.Fprintln(c, line); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}

	c := dial()
	if got, err := echo(c, "one"); got != "one\n" || err != nil {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Cut()
	if got, err := echo(c, "two"); err == nil {
		t.Fatalf("after Cut the connection still answers %q", got)
	}
	if got, err := echo(dial(), "three"); err == nil {
		t.Fatalf("while cut a new connection answers %q", got)
	}
	p.Restore()
	if got, err := echo(dial(), "four"); got != "four\n" || err != nil {
		t.Fatalf("after Restore: %q, %v", got, err)
	}
}
