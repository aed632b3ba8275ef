package testutil

import "runtime"

// HeapInUse returns the bytes allocated on the heap and still reachable, after collecting garbage twice (the second
// collection frees what the first only finalised).
func HeapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
