package edge

import (
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/meshcast/meshcast/wire/phx"
)

// conn is one client connection, whatever transport carries it.
//
// Outbound, every sender (the connection's own reader, other connections'
// fan-out, timers) only appends prepared frames to a bounded queue and, if
// no writer is at work, hands the connection to the server's write pool,
// which writes everything queued in one non-blocking writev. Only when the
// socket is full (or the connection closes) does a connection get its own
// writer goroutine, which may block and exits when the queue is empty: an
// idle connection holds no writer goroutine. A full queue closes the
// connection (slow consumer) instead of blocking the sender, so one slow
// client never slows the others.
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
	spare      [][]byte // the writer's previous batch, reused
	queued     int      // bytes in queue
	partial    bool     // queue[0] is the rest of a frame already partly written
	writing    bool     // a writer goroutine is running
	scheduled  bool     // waiting for the coalescer's next tick
	lastWrite  int64    // coalescer clock of the last write round
	closing    bool     // nothing more is queued; the writer sends closeFrame and exits
	finished   bool     // the socket is closed; no writer starts again
	closeFrame []byte
	writerDone chan struct{}   // closed when the socket has been closed by the writer
	writer     func()          // c.writeLoop, bound once so starting a writer allocates nothing
	raw        syscall.RawConn // non-blocking writes from the write pool; nil if unsupported
	deadline   time.Time       // the write deadline last set (writer only)

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
		writerDone: make(chan struct{}),
		channels:   make(map[string]*channel),
	}
	c.writer = c.writeLoop
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
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
		start := c.startWriterLocked()
		c.qmu.Unlock()
		if start {
			c.startWriter()
		}
		c.srv.metrics.queueDrops.Inc()
		c.srv.metrics.slowClose.Inc()
		c.srv.metrics.errorReason("slow_consumer")
		c.srv.log.Warn("closing slow consumer", "remote", c.remote, "queued_bytes", queued)
		return false
	}
	c.queue = append(c.queue, f)
	c.queued += len(f)
	start := false
	if !c.writing && !c.scheduled && !c.finished {
		if k := c.srv.coalesce; k.recent(c.lastWrite) && k.add(c) {
			c.scheduled = true
		} else {
			start = c.startWriterLocked()
		}
	}
	c.qmu.Unlock()
	if start {
		c.startWriter()
	}
	return true
}

// flushScheduled starts the writer of a connection the coalescer held back.
func (c *conn) flushScheduled() {
	c.qmu.Lock()
	c.scheduled = false
	start := len(c.queue) > 0 && c.startWriterLocked()
	c.qmu.Unlock()
	if start {
		c.startWriter()
	}
}

// startWriter runs the writer role the caller took with startWriterLocked:
// on the write pool, or on a goroutine of its own when the pool is full or
// the connection is not a socket.
func (c *conn) startWriter() {
	if !c.srv.pool.submit(c) {
		go c.writer()
	}
}

// takeLocked hands the writer everything queued. Called with qmu held.
func (c *conn) takeLocked() (batch [][]byte, bytes int) {
	batch, bytes = c.queue, c.queued
	c.queue, c.spare, c.queued, c.partial = c.spare[:0], nil, 0, false
	if c.srv.coalesce.every > 0 {
		c.lastWrite = c.srv.coalesce.now()
	}
	return batch, bytes
}

// recycleLocked keeps a written batch's array for the next round. Called
// with qmu held.
func (c *conn) recycleLocked(batch [][]byte) {
	clear(batch) // drop references to shared frames
	if cap(batch) <= 1024 {
		c.spare = batch[:0]
	}
}

// startWriterLocked reports whether the caller must start a writer (and
// marks it running). Called with qmu held.
func (c *conn) startWriterLocked() bool {
	if c.writing || c.finished {
		return false
	}
	c.writing = true
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
	start := c.startWriterLocked()
	c.qmu.Unlock()
	if start {
		go c.writer()
	}
}

// closeLocked marks the connection closing and prepares the close frame.
// Called with qmu held.
func (c *conn) closeLocked(code ws.StatusCode, reason string, drop bool) {
	c.closing = true
	if drop {
		keep := 0
		if c.partial && len(c.queue) > 0 {
			keep = 1 // a begun frame must be finished before the close frame
		}
		clear(c.queue[keep:])
		c.queue = c.queue[:keep]
		c.queued = 0
		if keep == 1 {
			c.queued = len(c.queue[0])
		}
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	c.closeFrame = ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
}

// writeLoop writes until the queue is empty, then exits; enqueue starts it
// again. After the close frame, or a failed write, it closes the socket
// (which stops the reader too) and no writer starts again.
func (c *conn) writeLoop() {
	var bufs net.Buffers
	lingered := false
	for {
		c.qmu.Lock()
		closing, closeFrame := c.closing, c.closeFrame
		if len(c.queue) == 0 && !closing {
			if !lingered {
				// Under a steady stream the next frame is usually a
				// moment away: yield once before giving the goroutine up.
				c.qmu.Unlock()
				lingered = true
				runtime.Gosched()
				continue
			}
			c.writing = false
			c.qmu.Unlock()
			return
		}
		lingered = false
		batch, bytes := c.takeLocked()
		c.qmu.Unlock()

		if closing {
			batch = append(batch, closeFrame)
		}
		if wt := c.srv.cfg.WriteTimeout; wt > 0 {
			// Moving the deadline on every write costs a timer update per
			// delivery; refreshing it once a quarter has passed still
			// cuts off a stuck write after ¾ to all of WriteTimeout.
			if now := time.Now(); c.deadline.Sub(now) < wt*3/4 {
				c.deadline = now.Add(wt)
				c.nc.SetWriteDeadline(c.deadline)
			}
		}
		bufs = batch
		_, err := bufs.WriteTo(c.nc)
		c.srv.metrics.bytesOut.Add(bytes)
		c.srv.metrics.writes.Inc()
		if err != nil || closing {
			clear(batch)
			if err != nil {
				c.srv.metrics.errorReason("write")
			}
			c.finish()
			return
		}
		c.qmu.Lock()
		c.recycleLocked(batch)
		c.qmu.Unlock()
	}
}

// finish closes the socket once; no writer runs after it.
func (c *conn) finish() {
	c.qmu.Lock()
	c.closing, c.finished, c.writing = true, true, false
	clear(c.queue)
	c.queue, c.spare, c.queued = nil, nil, 0
	c.qmu.Unlock()
	c.nc.Close()
	close(c.writerDone)
}

// send encodes and queues one frame addressed to this connection only.
func (c *conn) send(joinRef, ref, topic, event string, payload []byte) {
	c.enqueue(textFrame(c.vsn, joinRef, ref, topic, event, payload))
	c.srv.metrics.messagesOut.Inc()
}

func (c *conn) reply(joinRef, ref, topic, status string, response []byte) {
	c.send(joinRef, ref, topic, "phx_reply", phx.ReplyPayload(status, response))
}
