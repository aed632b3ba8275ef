package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer is a bytes.Buffer that collects what other goroutines write (logs, a process's output) while the test
// reads it. Its zero value is empty and ready to use; all methods may be called concurrently.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
