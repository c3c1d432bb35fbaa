package edge

import (
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/meshcast/meshcast/wire/phx"
)

// conn is one client connection, whatever transport carries it.
//
// Outbound, every sender (the connection's own reader, other connections'
// fan-out, timers) only appends prepared frames to a bounded queue; one
// writer goroutine drains everything queued into one vectored write. A full
// queue closes the connection (slow consumer) instead of blocking the
// sender, so one slow client never slows the others.
type conn struct {
	srv    *Server
	nc     net.Conn
	vsn    phx.Version
	remote string

	// apikeyClaims are the claims of the socket's apikey (nil when open).
	apikey       string
	apikeyClaims *claims

	// Outbound queue, guarded by qmu.
	qmu        sync.Mutex
	queue      [][]byte
	queued     int  // bytes in queue
	signaled   bool // a wake-up is pending
	closing    bool // nothing more is queued; the writer sends closeFrame and exits
	closeFrame []byte
	wake       chan struct{}
	writerDone chan struct{}

	// Inbound state, guarded by mu: the reader goroutine and token timers
	// both change channels.
	mu       sync.Mutex
	channels map[string]*channel
	events   *rate.Limiter
	joins    *rate.Limiter
	gone     bool // torn down; channels are left
}

func newConn(s *Server, nc net.Conn, vsn phx.Version) *conn {
	c := &conn{
		srv:        s,
		nc:         nc,
		vsn:        vsn,
		remote:     nc.RemoteAddr().String(),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		channels:   make(map[string]*channel),
	}
	if s.cfg.EventsPerSecond > 0 {
		c.events = rate.NewLimiter(rate.Limit(s.cfg.EventsPerSecond), burst(s.cfg.EventsPerSecond))
	}
	if s.cfg.JoinsPerSecond > 0 {
		c.joins = rate.NewLimiter(rate.Limit(s.cfg.JoinsPerSecond), burst(s.cfg.JoinsPerSecond))
	}
	return c
}

func burst(perSecond float64) int {
	if perSecond < 1 {
		return 1
	}
	return int(perSecond)
}

// enqueue queues a prepared frame. It never blocks; it reports false when
// the connection is closing or the frame overflowed the queue (which
// closes the connection).
func (c *conn) enqueue(f []byte) bool {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return false
	}
	if limit := c.srv.cfg.QueueBytes; limit > 0 && c.queued+len(f) > limit && c.queued > 0 {
		queued := c.queued
		c.closeLocked(ws.StatusPolicyViolation, "slow consumer: outbound queue full", true)
		c.qmu.Unlock()
		c.wakeWriter()
		c.srv.metrics.queueDrops.Inc()
		c.srv.metrics.slowClose.Inc()
		c.srv.metrics.errorReason("slow_consumer")
		c.srv.log.Warn("closing slow consumer", "remote", c.remote, "queued_bytes", queued)
		return false
	}
	c.queue = append(c.queue, f)
	c.queued += len(f)
	wake := !c.signaled
	c.signaled = true
	c.qmu.Unlock()
	if wake {
		c.wake <- struct{}{} // never blocks: capacity 1 and signaled guards it
	}
	return true
}

// closeAfterFlush lets everything queued so far go out, then closes the
// socket with a close frame.
func (c *conn) closeAfterFlush(code ws.StatusCode, reason string) {
	c.startClose(code, reason, false)
}

// closeNow drops what is queued and closes with a close frame.
func (c *conn) closeNow(code ws.StatusCode, reason string) {
	c.startClose(code, reason, true)
}

func (c *conn) startClose(code ws.StatusCode, reason string, drop bool) {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return
	}
	c.closeLocked(code, reason, drop)
	c.qmu.Unlock()
	c.wakeWriter()
}

// closeLocked marks the connection closing and prepares the close frame.
// Called with qmu held; the caller wakes the writer after unlocking.
func (c *conn) closeLocked(code ws.StatusCode, reason string, drop bool) {
	c.closing = true
	if drop {
		clear(c.queue)
		c.queue = c.queue[:0]
		c.queued = 0
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	c.closeFrame = ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
}

// wakeWriter makes sure the writer runs (it checks closing after a wake).
func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop is the connection's only writer. It exits after the close
// frame is written or a write fails, and then closes the socket so that the
// reader stops too.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer c.nc.Close()
	var spare [][]byte
	var bufs net.Buffers // declared once: WriteTo makes it escape
	for range c.wake {
		c.qmu.Lock()
		batch, bytes, closing, closeFrame := c.queue, c.queued, c.closing, c.closeFrame
		c.queue, c.queued, c.signaled = spare[:0], 0, false
		c.qmu.Unlock()

		if closing && closeFrame != nil {
			batch = append(batch, closeFrame)
		}
		if len(batch) > 0 {
			if wt := c.srv.cfg.WriteTimeout; wt > 0 {
				c.nc.SetWriteDeadline(time.Now().Add(wt))
			}
			bufs = batch
			_, err := bufs.WriteTo(c.nc)
			c.srv.metrics.bytesOut.Add(bytes)
			clear(batch) // drop references to shared frames
			spare = batch[:0]
			if err != nil {
				c.srv.metrics.errorReason("write")
				c.markClosing()
				return
			}
		}
		if closing {
			return
		}
	}
}

// markClosing stops further enqueues without a close frame (the socket is
// already unusable).
func (c *conn) markClosing() {
	c.qmu.Lock()
	c.closing = true
	clear(c.queue)
	c.queue = nil
	c.queued = 0
	c.qmu.Unlock()
}

// send encodes and queues one frame addressed to this connection only.
func (c *conn) send(joinRef, ref, topic, event string, payload []byte) {
	c.enqueue(textFrame(c.vsn, joinRef, ref, topic, event, payload))
	c.srv.metrics.messagesOut.Inc()
}

func (c *conn) reply(joinRef, ref, topic, status string, response []byte) {
	c.send(joinRef, ref, topic, "phx_reply", phx.ReplyPayload(status, response))
}
