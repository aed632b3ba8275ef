package gateway

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// testObjects returns an object store holding a large object called "obj", and the object.
func testObjects(t *testing.T) (jetstream.JetStream, jetstream.ObjectStore, context.Context, []byte) {
	t.Helper()
	js, ctx := testJetStream(t, 2*time.Minute)
	store, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "READ_TEST"})
	if err != nil {
		t.Fatal(err)
	}
	large := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB, 256 chunks: reading it takes a while
	if _, err := store.PutBytes(ctx, "obj", large); err != nil {
		t.Fatal(err)
	}
	return js, store, ctx, large
}

func TestReadObject(t *testing.T) {
	js, store, ctx, large := testObjects(t)
	b, err := readObject(ctx, js, store, "obj")
	if err != nil || !bytes.Equal(b, large) {
		t.Fatalf("read %d bytes, err %v; want the %d stored", len(b), err, len(large))
	}
	if _, err := store.PutBytes(ctx, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if b, err := readObject(ctx, js, store, "empty"); err != nil || len(b) != 0 {
		t.Fatalf("empty object: %q, %v", b, err)
	}
	if _, err := readObject(ctx, js, store, "missing"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("missing object: %v, want ErrObjectNotFound", err)
	}
	// Reads leave no consumer behind on the server.
	stream, err := js.Stream(ctx, "OBJ_READ_TEST")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Consumers != 0 {
		t.Fatalf("consumers left on the bucket's stream: %+v, %v", info.State, err)
	}
}

// TestReadReplacedVersion reads a version of an object after another replaced it, which purged its chunks: the
// read must say so at once, rather than wait for chunks that will never come.
func TestReadReplacedVersion(t *testing.T) {
	js, store, ctx, _ := testObjects(t)
	old, err := store.GetInfo(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutBytes(ctx, "obj", []byte("the replacement")); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second) // nats.go's Get waits until this ends
	defer cancel()
	if _, err := readChunks(rctx, js, store, old); !errors.Is(err, errReplaced) {
		t.Fatalf("reading a replaced version: %v, want errReplaced", err)
	}
	if b, err := readObject(rctx, js, store, "obj"); err != nil || string(b) != "the replacement" {
		t.Fatalf("read %q, %v; want the replacement", b, err)
	}
}

// TestReadObjectWhileReplaced reads a large object while a writer replaces it, as an instance loads the checkpoint
// while the applier saves the next one. Every read must end, well before its context, with one whole version.
func TestReadObjectWhileReplaced(t *testing.T) {
	js, store, ctx, large := testObjects(t)
	small := []byte("the replacement")
	for trial := range 5 {
		if trial > 0 {
			if _, err := store.PutBytes(ctx, "obj", large); err != nil {
				t.Fatal(err)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second) // nats.go's Get waits until this ends
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		go func() {
			b, err := readObject(rctx, js, store, "obj")
			done <- result{b, err}
		}()
		if _, err := store.PutBytes(ctx, "obj", small); err != nil {
			t.Fatal(err)
		}
		r := <-done
		cancel()
		if r.err != nil {
			t.Fatalf("trial %d: read while replaced: %v", trial, r.err)
		}
		if !bytes.Equal(r.b, large) && !bytes.Equal(r.b, small) {
			t.Fatalf("trial %d: read %d bytes that are neither version", trial, len(r.b))
		}
	}
}
