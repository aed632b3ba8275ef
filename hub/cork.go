package hub

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
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

// corkConn is a net.Conn whose writes, while corked, go to a buffer that is sent in one write: when it would pass
// flushChunk, and at flush. It never holds more than flushChunk: a large frame (a snapshot) is sent as it is
// written, not copied, so a client that asks for many snapshots cannot make the server hold them all at once.
//
// All methods may be called concurrently.
type corkConn struct {
	net.Conn
	mu       sync.Mutex
	corked   bool
	buf      []byte
	timeout  time.Duration // while corked: the most one flushChunk may take
	end      time.Time     // while corked: when everything written until flush must be sent
	timedOut bool          // a write missed its deadline: the client does not read
}

// flushChunk is the most the connection holds back, and the most it writes under one deadline.
const flushChunk = 64 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) <= flushChunk {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	_, err := c.send(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		return 0, err
	}
	return c.send(p)
}

// cork holds writes back until flush. Each flushChunk sent meanwhile, or by flush, must go within timeout, and all
// of them within total. A client that reads a large snapshot slowly but steadily keeps up; one that stops reading
// is cut off after timeout. The total bound is the ping interval: a ping waits behind a batch, and coder/websocket
// closes the connection when a ping cannot be written in time, so a batch must end first, with an error that says
// why.
func (c *corkConn) cork(timeout, total time.Duration) {
	c.mu.Lock()
	c.corked, c.timeout, c.end = true, timeout, time.Now().Add(total)
	c.mu.Unlock()
}

// flush uncorks and sends what was held back.
func (c *corkConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	_, err := c.send(c.buf)
	if cap(c.buf) > flushChunk {
		c.buf = nil // do not keep more than a chunk per idle connection
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// send writes p a flushChunk at a time under the cork's deadlines. The caller holds c.mu.
func (c *corkConn) send(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	off := 0
	var err error
	for off < len(p) && err == nil {
		var n int
		deadline := time.Now().Add(c.timeout)
		if deadline.After(c.end) {
			deadline = c.end
		}
		_ = c.Conn.SetWriteDeadline(deadline)
		n, err = c.Conn.Write(p[off:min(len(p), off+flushChunk)])
		off += n
	}
	_ = c.Conn.SetWriteDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.timedOut = true
	}
	return off, err
}

// slow reports whether a write missed its deadline.
func (c *corkConn) slow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timedOut
}
