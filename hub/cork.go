package hub

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// corkHijacker hands coder/websocket a connection whose writes can be held back and sent together: a session's
// writer corks it, writes every queued frame, and flushes them in one syscall.
type corkHijacker struct {
	http.ResponseWriter
	conn *corkConn
}

// WriteHeaderNow passes on gin's way of sending the 101 before the hijack, which coder/websocket looks for.
func (c *corkHijacker) WriteHeaderNow() {
	if w, ok := c.ResponseWriter.(interface{ WriteHeaderNow() }); ok {
		w.WriteHeaderNow()
	}
}

func (c *corkHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hub: the response writer cannot be hijacked")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	c.conn = &corkConn{Conn: nc}
	return c.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(c.conn, 4096)), nil
}

// corkConn is a net.Conn whose writes, while corked, go to a buffer that flush sends in one write.
//
// All methods may be called concurrently.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// flushChunk is the most a flush writes under one deadline.
const flushChunk = 64 << 10

// flush uncorks and writes what was held back: each flushChunk of it within timeout, and the whole within total. A
// client that reads a large snapshot slowly but steadily keeps up; one that stops reading is cut off after
// timeout. The total bound is the ping interval: a ping waits behind a flush, and coder/websocket closes the
// connection when a ping cannot be written in time, so a flush must end first, with an error that says why.
func (c *corkConn) flush(timeout, total time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	end := time.Now().Add(total)
	var err error
	for off := 0; off < len(c.buf) && err == nil; {
		deadline := time.Now().Add(timeout)
		if deadline.After(end) {
			deadline = end
		}
		_ = c.Conn.SetWriteDeadline(deadline)
		var n int
		n, err = c.Conn.Write(c.buf[off:min(len(c.buf), off+flushChunk)])
		off += n
	}
	_ = c.Conn.SetWriteDeadline(time.Time{})
	if cap(c.buf) > 64<<10 {
		c.buf = nil // a snapshot made it large: do not keep that much per idle connection
	} else {
		c.buf = c.buf[:0]
	}
	return err
}
