package gateway

import (
	"bytes"
	"sync"
)

// handoff passes a decoded message from the stage that stored it to the stage on the same instance that consumes
// it from the stream, so that the consumer need not decode it again: ingest to the applier (the notification),
// the applier to the view (the presence event).
//
// It is a fixed ring keyed by stream sequence. A value counts only if the consumer's message is byte for byte the
// one that was put: whatever the stream holds at that sequence (a resend stored earlier, another leader's event) is
// what gets applied, so replay stays deterministic. A value not taken before its slot is reused is simply dropped;
// the consumer then decodes, as it does on every other instance.
//
// All methods may be called concurrently; a nil handoff holds nothing.
type handoff[T any] struct {
	mu    sync.Mutex
	slots []handoffSlot[T]
}

type handoffSlot[T any] struct {
	seq uint64
	raw []byte
	v   T
}

// handoffSize is how many messages a handoff holds: more than the applier's pipeline, so that a value is rarely
// dropped before its consumer comes to it.
const handoffSize = 2048

func newHandoff[T any](size int) *handoff[T] {
	return &handoff[T]{slots: make([]handoffSlot[T], size)}
}

// put offers v, decoded from raw, stored at seq.
func (h *handoff[T]) put(seq uint64, raw []byte, v T) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.slots[seq%uint64(len(h.slots))] = handoffSlot[T]{seq: seq, raw: raw, v: v}
	h.mu.Unlock()
}

// take returns the value put for seq if raw is what it was decoded from, and frees the slot.
func (h *handoff[T]) take(seq uint64, raw []byte) (T, bool) {
	if h == nil {
		var zero T
		return zero, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &h.slots[seq%uint64(len(h.slots))]
	if s.seq != seq || s.raw == nil || !bytes.Equal(s.raw, raw) {
		var zero T
		return zero, false
	}
	v := s.v
	*s = handoffSlot[T]{}
	return v, true
}
