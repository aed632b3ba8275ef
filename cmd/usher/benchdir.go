package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

const (
	// benchDirPrefix names the data directories of the servers a bench starts, under the system's temporary directory.
	benchDirPrefix = "usher-bench-"
	// benchLockFile is held locked by the bench that owns the directory, for as long as it runs.
	benchLockFile = "bench.lock"
	// benchDirGrace keeps a sweep off a directory made so recently that its bench may not have locked it yet.
	benchDirGrace = time.Minute
)

// makeBenchDir makes a data directory for a spawned server and locks it for this process. The caller has the
// server hold the lock too (holdBy), releases its own hold and removes the directory once the server has exited;
// a bench killed before it could remove it leaves it to sweepBenchDirs.
func makeBenchDir() (dir string, lock benchLock, err error) {
	if dir, err = os.MkdirTemp("", benchDirPrefix); err != nil {
		return "", benchLock{}, err
	}
	f, err := lockBenchDir(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", benchLock{}, err
	}
	return dir, benchLock{f}, nil
}

// benchLock is the lock of a bench data directory, as a file that holds it (nil where there are no locks).
type benchLock struct{ f *os.File }

// release drops this process's hold on the lock.
func (l benchLock) release() {
	if l.f != nil {
		_ = l.f.Close()
	}
}

// holdBy has the process cmd starts hold the lock as well, until it exits: the directory is its data directory, and
// it can outlive its bench (killed with SIGKILL: on Linux the server is sent SIGTERM and takes a while to stop;
// elsewhere it runs on), while a lock the bench alone held would be gone, and the directory taken for stale.
func (l benchLock) holdBy(cmd *exec.Cmd) {
	if l.f != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, l.f)
	}
}

// sweepBenchDirs removes the bench data directories under tmp that no bench holds: those left by a bench killed
// with SIGKILL, which could not remove them (its servers end with it). Each can hold a whole run's JetStream
// store. It returns the directories removed.
func sweepBenchDirs(tmp string, now time.Time) []string {
	dirs, _ := filepath.Glob(filepath.Join(tmp, benchDirPrefix+"*"))
	var removed []string
	for _, dir := range dirs {
		lock := filepath.Join(dir, benchLockFile)
		st, err := os.Stat(lock)
		if err != nil || now.Sub(st.ModTime()) < benchDirGrace || !benchDirFree(lock) {
			continue
		}
		if os.RemoveAll(dir) == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}
