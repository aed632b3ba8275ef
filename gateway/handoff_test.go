package gateway

import "testing"

func TestHandoff(t *testing.T) {
	h := bySeq[string](4)
	h.put(1, []byte(`{"a":1}`), "one")
	if _, ok := h.take(1, []byte(`{"a":2}`)); ok {
		t.Fatal("took a value for different bytes at the same sequence")
	}
	if _, ok := h.take(5, []byte(`{"a":1}`)); ok {
		t.Fatal("took a value for another sequence of the same slot")
	}
	if v, ok := h.take(1, []byte(`{"a":1}`)); !ok || v != "one" {
		t.Fatalf("take(1) = %q, %v", v, ok)
	}
	if _, ok := h.take(1, []byte(`{"a":1}`)); ok {
		t.Fatal("took the same value twice")
	}
	h.put(2, []byte("x"), "two")
	h.put(6, []byte("y"), "six") // same slot: replaces 2
	if _, ok := h.take(2, []byte("x")); ok {
		t.Fatal("took a value whose slot was reused")
	}
	if v, ok := h.take(6, []byte("y")); !ok || v != "six" {
		t.Fatalf("take(6) = %q, %v", v, ok)
	}
	var none *handoff[uint64, string]
	none.put(1, []byte("x"), "x")
	if _, ok := none.take(1, []byte("x")); ok {
		t.Fatal("a nil handoff gave a value")
	}
}

func TestHandoffByID(t *testing.T) {
	h := byID[int](1024)
	h.put("notice-1", []byte("a"), 1)
	h.put("notice-2", []byte("b"), 2)
	if _, ok := h.take("notice-1", []byte("b")); ok {
		t.Fatal("took a value for other bytes")
	}
	if v, ok := h.take("notice-2", []byte("b")); !ok || v != 2 {
		t.Fatalf("take(notice-2) = %d, %v", v, ok)
	}
	if v, ok := h.take("notice-1", []byte("a")); !ok || v != 1 {
		t.Fatalf("take(notice-1) = %d, %v", v, ok)
	}
}
