//go:build unix

package main

import (
	"os"
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
		dir, release, err := makeBenchDir()
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(dir) != tmp {
			t.Fatalf("bench dir %s is not under TMPDIR %s", dir, tmp)
		}
		if hold {
			t.Cleanup(release)
		} else {
			release() // as a bench killed with SIGKILL: the kernel drops its lock
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
	if _, err := lockBenchDir(held); err == nil {
		t.Errorf("a second lock on %s", held)
	}
}
