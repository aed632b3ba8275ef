package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// chunkWait is the longest a read of a stored object waits for its next chunk (128 KiB; normally milliseconds).
	chunkWait = 5 * time.Second
	// replacedCheck is how long a read waits for a chunk before it checks that the object was not replaced.
	replacedCheck = 250 * time.Millisecond
	// readerInactive is how long the server keeps a read's consumer once the read stops pulling.
	readerInactive = 10 * time.Second
)

var (
	errStalled  = errors.New("no chunk within the wait")
	errReplaced = errors.New("replaced while read")
)

// readObject reads the object called name from store whole, its size and digest checked. If the object is replaced
// while it is read, it reads the new version: the result is always one whole version.
//
// It reads the chunks itself, through an ordered consumer on the bucket's stream (the object store layout of NATS
// ADR-20), rather than with ObjectStore.Get. Replacing an object purges the old version's chunks, and Get (nats.go
// v1.55) then waits for them until its context ends: 5 s without a deadline, which also caps the read of a large
// object that is not replaced at all. Instances load the checkpoint while the applier replaces it every few
// seconds, so here a read waits for each chunk at most chunkWait, and one that waits on a replaced object starts
// again on the new version within replacedCheck.
func readObject(ctx context.Context, js jetstream.JetStream, store jetstream.ObjectStore, name string) ([]byte, error) {
	for {
		info, err := store.GetInfo(ctx, name)
		if err != nil {
			return nil, err
		}
		b, err := readChunks(ctx, js, store, info)
		if !errors.Is(err, errReplaced) {
			return b, err
		}
		// Bounded by ctx. Each pass needs another replacement: one that is replaced more often than it can be read
		// (a huge checkpoint, saved every few seconds) is read until ctx ends, as nats.go's Get would.
	}
}

// readChunks reads the chunks of the object version info describes.
func readChunks(ctx context.Context, js jetstream.JetStream, store jetstream.ObjectStore, info *jetstream.ObjectInfo) ([]byte, error) {
	if info.Size == 0 {
		return []byte{}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	// Should the deletion below fail, the server drops the consumer soon after the read stops pulling (the
	// library's default keeps it 5 minutes).
	cons, err := js.OrderedConsumer(cctx, "OBJ_"+info.Bucket, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"$O." + info.Bucket + ".C." + info.NUID}, MaxResetAttempts: 1,
		InactiveThreshold: readerInactive})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read object %s: %w", info.Name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(4 << 20)) // a few chunks ahead, not the whole object
	if err != nil {
		return nil, fmt.Errorf("read object %s: %w", info.Name, err)
	}
	defer func() {
		it.Stop()
		// Stop leaves the consumer on the server; delete it now (readerInactive is the fallback).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, "OBJ_"+info.Bucket, cons.CachedInfo().Name)
	}()
	b := make([]byte, 0, info.Size)
	h := sha256.New()
	for range info.Chunks {
		msg, err := nextChunk(ctx, it, store, info)
		if err != nil {
			return nil, err
		}
		b = append(b, msg.Data()...)
		h.Write(msg.Data())
	}
	want, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return nil, fmt.Errorf("read object %s: %w", info.Name, err)
	}
	if uint64(len(b)) != info.Size || !bytes.Equal(h.Sum(nil), want) {
		return nil, fmt.Errorf("read object %s: %w", info.Name, jetstream.ErrDigestMismatch)
	}
	return b, nil
}

// nextChunk waits for the next chunk of info's version, at most chunkWait, and answers errReplaced as soon as the
// object has another version: that one's chunks are purged, and would never come.
func nextChunk(ctx context.Context, it jetstream.MessagesContext, store jetstream.ObjectStore, info *jetstream.ObjectInfo) (jetstream.Msg, error) {
	dctx, cancel := context.WithTimeout(ctx, chunkWait) // the whole wait, checks included
	defer cancel()
	for {
		wctx, cancel := context.WithTimeout(dctx, replacedCheck)
		msg, err := it.Next(jetstream.NextContext(wctx))
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err == nil:
			return msg, nil
		case !errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("read object %s: %w", info.Name, err)
		case dctx.Err() != nil:
			return nil, fmt.Errorf("read object %s: %w", info.Name, errStalled)
		}
		now, err := store.GetInfo(dctx, info.Name)
		if errors.Is(err, jetstream.ErrObjectNotFound) || err == nil && now.NUID != info.NUID {
			return nil, errReplaced
		}
	}
}
