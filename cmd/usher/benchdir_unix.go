//go:build unix

package main

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockBenchDir takes an exclusive lock on dir's lock file and returns the file that holds it: the lock lasts until
// the file is closed in every process that has it (the bench, and the server started with holdBy), however they end
// (the kernel drops the lock). A bench data directory whose lock can be taken belongs to no bench or server.
func lockBenchDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, benchLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
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
