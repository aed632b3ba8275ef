// Package hub will hold Usher's WebSocket side: client sessions authorised by auth tokens, subscriptions to the
// channels a token grants, and fan-out of presence events from one NATS subscription per channel per instance.
// It is built with the WebSocket issue; until then it has no code.
package hub
