// Package testutil holds the small helpers that Usher's tests in several packages share: polling until a condition
// holds, a buffer safe for concurrent writers, a TCP proxy whose connections a test can cut, a free loopback port,
// and an embedded NATS server with JetStream.
//
// It is for tests only: production code must not import it.
package testutil
