package hub

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A corked connection holds back at most one chunk: frames larger than that (snapshots) go out as they are written,
// so a client asking for snapshot after snapshot cannot make its connection hold them all. Every byte arrives, in
// order.
func TestCorkHoldsAtMostAChunk(t *testing.T) {
	client, server := tcpPair(t)
	c := &corkConn{Conn: server}
	var want bytes.Buffer
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	c.cork(5*time.Second, 30*time.Second)
	for i := range 40 {
		size := 300
		if i%4 == 0 {
			size = 1 << 20 // a 1 MiB snapshot every fourth frame
		}
		p := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		want.Write(p)
		if _, err := c.Write(p); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		c.mu.Lock()
		held := len(c.buf)
		c.mu.Unlock()
		if held > flushChunk {
			t.Fatalf("after write %d the connection holds %d bytes, more than %d", i, held, flushChunk)
		}
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	server.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("received %d bytes, not the %d written, in order", len(b), want.Len())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reader did not get everything within 30 s")
	}
	if c.slow() {
		t.Fatal("a reader that keeps up was marked slow")
	}
}

// A corked write to a client that reads nothing fails within the write timeout, and marks the connection slow.
func TestCorkedWriteToAStoppedReader(t *testing.T) {
	_, server := tcpPair(t)
	c := &corkConn{Conn: server}
	c.cork(300*time.Millisecond, 10*time.Second)
	start := time.Now()
	_, err := c.Write(make([]byte, 64<<20)) // more than the socket buffers hold
	if err == nil {
		t.Fatal("a 64 MiB write to a reader that reads nothing succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the write failed after %s, want about the 300 ms write timeout", d)
	}
	if !c.slow() {
		t.Fatalf("%v: not marked slow", err)
	}
}
