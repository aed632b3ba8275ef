package main

import (
	"os"
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

// makeBenchDir makes a data directory for a spawned server and locks it for this process. release unlocks it
// (the caller removes the directory); a bench killed before it could remove it leaves it to sweepBenchDirs.
func makeBenchDir() (dir string, release func(), err error) {
	if dir, err = os.MkdirTemp("", benchDirPrefix); err != nil {
		return "", nil, err
	}
	if release, err = lockBenchDir(dir); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, release, nil
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
