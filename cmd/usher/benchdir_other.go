//go:build !unix

package main

import "os"

// lockBenchDir: without flock, directories are not locked, and none is taken for stale.
func lockBenchDir(string) (*os.File, error) { return nil, nil }

func benchDirFree(string) bool { return false }
