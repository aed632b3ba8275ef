//go:build unix

package main

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockBenchDir takes an exclusive lock on dir's lock file and holds it until release, or until the process ends
// however it ends (the kernel drops the lock): a bench data directory whose lock can be taken belongs to no bench.
func lockBenchDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, benchLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { _ = f.Close() }, nil
}

// benchDirFree reports whether no process holds the lock of a bench data directory whose lock file is lockPath.
func benchDirFree(lockPath string) bool {
	f, err := os.Open(lockPath)
	if err != nil {
		return false
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}
