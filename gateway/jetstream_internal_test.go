package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/test/testutil"
)

// testJetStream starts an in-process NATS server with JetStream for the package's internal tests and returns a
// JetStream context on it, with a context that ends after within. Both are stopped when the test ends.
func testJetStream(t *testing.T, within time.Duration) (jetstream.JetStream, context.Context) {
	t.Helper()
	_, js := testutil.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	return js, ctx
}
