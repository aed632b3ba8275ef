package gateway

import (
	"bytes"
	"hash/maphash"
	"sync"
)

// handoff passes a decoded message from the stage that stored it to the stage on the same instance that consumes
// it from the stream, so that the consumer need not decode it again: ingest to the applier (the notification),
// the applier to the view (the presence event).
//
// It is a fixed table of slots, keyed by stream sequence (applier to view: the applier knows where its event will be
// stored before it publishes) or by message id (ingest to applier: the applier may read a notification before the
// PubAck reaches ingest, so ingest offers it before publishing). A value counts only if the consumer's message is byte for byte the
// one that was put: whatever the stream holds at that sequence (a resend stored earlier, another leader's event) is
// what gets applied, so replay stays deterministic. A value not taken before its slot is reused is simply dropped;
// the consumer then decodes, as it does on every other instance.
//
// All methods may be called concurrently; a nil handoff holds nothing.
type handoff[K comparable, T any] struct {
	slot  func(K) uint64
	mu    sync.Mutex
	slots []handoffSlot[K, T]
}

type handoffSlot[K comparable, T any] struct {
	key K
	raw []byte
	v   T
}

// handoffSize is how many messages a handoff holds: more than the applier's pipeline, so that a value is rarely
// dropped before its consumer comes to it.
const handoffSize = 2048

// bySeq and byID make handoffs keyed by stream sequence and by message id.
func bySeq[T any](size int) *handoff[uint64, T] {
	return &handoff[uint64, T]{slot: func(seq uint64) uint64 { return seq }, slots: make([]handoffSlot[uint64, T], size)}
}

func byID[T any](size int) *handoff[string, T] {
	seed := maphash.MakeSeed()
	return &handoff[string, T]{slot: func(id string) uint64 { return maphash.String(seed, id) }, slots: make([]handoffSlot[string, T], size)}
}

// put offers v, decoded from raw, stored under key.
func (h *handoff[K, T]) put(key K, raw []byte, v T) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.slots[h.slot(key)%uint64(len(h.slots))] = handoffSlot[K, T]{key: key, raw: raw, v: v}
	h.mu.Unlock()
}

// take returns the value put under key if raw is what it was decoded from, and frees the slot.
func (h *handoff[K, T]) take(key K, raw []byte) (T, bool) {
	if h == nil {
		var zero T
		return zero, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &h.slots[h.slot(key)%uint64(len(h.slots))]
	if s.key != key || s.raw == nil || !bytes.Equal(s.raw, raw) {
		var zero T
		return zero, false
	}
	v := s.v
	*s = handoffSlot[K, T]{}
	return v, true
}
