package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
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

// A PubAck that never comes (here, a subscriber that swallows the publish, as a stream leader lost mid-publish
// would) does not stay in the JetStream client's pending publishes: enough of those would make every publish fail.
func TestLostPubAcksAreForgotten(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for the library to forget a PubAck (10 s)")
	}
	dir := t.TempDir()
	g, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", NCSSecrets: []string{"s"}, JWTSecret: "jwt-secret-0123456789abcdef",
		DataDir: dir, NATSListen: bus.ListenOff, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	sub, err := g.nc.SubscribeSync("swallowed")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	f, err := g.js.PublishAsync("swallowed", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-f.Err():
		t.Logf("forgotten: %v", err)
	case <-f.Ok():
		t.Fatal("a PubAck came from nowhere")
	case <-time.After(pubAckForget + 5*time.Second):
		t.Fatalf("no outcome %s after the publish; %d publishes pending", pubAckForget+5*time.Second, g.js.PublishAsyncPending())
	}
	if n := g.js.PublishAsyncPending(); n != 0 {
		t.Fatalf("%d publishes still pending", n)
	}
}
