package testutil

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/usher-presence/usher/gateway/bus"
)

// NATSServer starts an embedded NATS server with JetStream, storing under a temporary directory of the test, and
// shuts it down when the test ends. listen is as bus.EmbeddedConfig.Listen has it: bus.ListenOff for in-process
// clients only, "127.0.0.1:-1" for a free loopback port (its address is then the server's ClientURL).
func NATSServer(t testing.TB, listen string) *server.Server {
	t.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// NATSServerWith starts a NATS server with opts (for settings StartEmbedded does not take: TLS, accounts) and
// waits until it takes connections; it is shut down when the test ends.
func NATSServerWith(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	return ns
}

// JetStream starts an in-process NATS server with JetStream (NATSServer with bus.ListenOff) and returns a
// connection to it and a JetStream context on that connection. The connection is closed, then the server shut
// down, when the test ends.
func JetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := bus.ConnectEmbedded(NATSServer(t, bus.ListenOff), "test")
	return nc, jetStreamOn(t, nc, err)
}

// JetStreamAt is JetStream through a client connection to the NATS server at url, closed when the test ends.
func JetStreamAt(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	return jetStreamOn(t, nc, err)
}

// jetStreamOn is JetStream on nc (closed when the test ends), or the test's end when err, nc's connect error, is not nil.
func jetStreamOn(t testing.TB, nc *nats.Conn, err error) jetstream.JetStream {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
