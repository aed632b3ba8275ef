//go:build !unix

package main

// lockBenchDir: without flock, directories are not locked, and none is taken for stale.
func lockBenchDir(string) (release func(), err error) { return func() {}, nil }

func benchDirFree(string) bool { return false }
