//go:build unix

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// A sweep removes the bench data directories no bench holds, once they are past the grace period, and nothing
// else: not a directory a bench holds, not one just made, not one without a lock file, not another program's.
func TestSweepBenchDirs(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	old := time.Now().Add(-2 * benchDirGrace)
	mk := func(hold bool, mtime time.Time) string {
		dir, lock, err := makeBenchDir()
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(dir) != tmp {
			t.Fatalf("bench dir %s is not under TMPDIR %s", dir, tmp)
		}
		if hold {
			t.Cleanup(lock.release)
		} else {
			lock.release() // as a bench killed with SIGKILL: the kernel drops its lock
		}
		if err := os.Chtimes(filepath.Join(dir, benchLockFile), mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	held := mk(true, old)
	stale := mk(false, old)
	fresh := mk(false, time.Now())
	noLock := filepath.Join(tmp, benchDirPrefix+"from-an-older-bench")
	other := filepath.Join(tmp, "someone-else")
	for _, d := range []string{noLock, other} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(other, benchLockFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(other, benchLockFile), old, old); err != nil {
		t.Fatal(err)
	}

	if got := sweepBenchDirs(tmp, time.Now()); !slices.Equal(got, []string{stale}) {
		t.Errorf("removed %v, want only %s", got, stale)
	}
	for _, d := range []string{held, fresh, noLock, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", stale, err)
	}
	// The held directory's lock cannot be taken twice.
	if f, err := lockBenchDir(held); err == nil {
		_ = f.Close()
		t.Errorf("a second lock on %s", held)
	}
}

// A server outlives the bench that started it when the bench is killed with SIGKILL: on Linux it is sent SIGTERM
// and takes a while to stop (final checkpoint, JetStream flush), elsewhere it runs on. Its data directory is in use
// until it exits: no sweep may take it for stale while it runs, and one after it has exited removes it.
func TestSweepSparesDirOfServerOutlivingItsBench(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir, lock, err := makeBenchDir()
	if err != nil {
		t.Fatal(err)
	}
	// The server: any process started as spawnServer starts it; sleep stands for usher serve.
	cmd := exec.Command("sleep", "30")
	lock.holdBy(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	lock.release() // the bench is killed: its own hold is gone
	old := time.Now().Add(-2 * benchDirGrace)
	if err := os.Chtimes(filepath.Join(dir, benchLockFile), old, old); err != nil {
		t.Fatal(err)
	}

	if got := sweepBenchDirs(tmp, time.Now()); len(got) != 0 {
		t.Fatalf("removed %v while its server runs", got)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not exit within 10 s of SIGKILL")
	}
	if got := sweepBenchDirs(tmp, time.Now()); !slices.Equal(got, []string{dir}) {
		t.Fatalf("removed %v once the server exited, want %s", got, dir)
	}
}
