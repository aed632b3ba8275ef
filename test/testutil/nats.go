package testutil

import (
	"testing"

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

// JetStream starts an in-process NATS server with JetStream (NATSServer with bus.ListenOff) and returns a
// connection to it and a JetStream context on that connection. The connection is closed, then the server shut
// down, when the test ends.
func JetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns := NATSServer(t, bus.ListenOff)
	nc, err := bus.ConnectEmbedded(ns, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
