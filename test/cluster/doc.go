// Package cluster holds Usher's scale-out tests: a real 3-node NATS cluster (the nats-server binary built from the
// version in go.mod) on loopback, several real `usher serve` processes behind a small HTTP load balancer, an
// Agora-like sender that resends on a non-200 or a timeout, and WebSocket watchers; usher processes and NATS nodes
// are killed with -9 in the middle of bursts. `go test -short` skips them.
package cluster
