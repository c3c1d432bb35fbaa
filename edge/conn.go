package edge

import (
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/meshcast/meshcast/edge/outq"
	"github.com/meshcast/meshcast/wire/phx"
)

// conn is one client connection, whatever transport carries it.
//
// Outbound, every sender (the connection's own reader, other connections'
// fan-out, timers) only pushes prepared frames onto the connection's
// outq.Queue. The push that finds the queue idle hands the connection to
// a writer: the server's write pool, which writes everything queued in one
// non-blocking writev, when the transport has a file descriptor for it (a
// WebSocket); otherwise, or when the socket is full (or the connection
// closes), a writer goroutine of its own, which may block and exits when
// the queue is empty (a WebTransport session's after a moment without
// frames, see wtwrite.go): an idle connection holds no writer goroutine. A full
// queue closes the connection (slow consumer) instead of blocking the
// sender, so one slow client never slows the others; Postgres changes
// alone wait for room instead (see DeliverChange), bounded by the stall
// time.
type conn struct {
	srv    *Server
	tr     transport
	kind   transportKind // tr.kind()
	format frameFormat
	vsn    phx.Version // format.version(), the serializer of client frames
	remote string
	tm     *transportMetrics

	// apikeyClaims are the claims of the socket's apikey (nil when open).
	apikey       string
	apikeyClaims *claims
	// headers are the x- headers of the upgrade request as a JSON object
	// (request.headers of policy checks); nil when there are none.
	headers []byte

	q          *outq.Queue
	writerDone chan struct{}   // closed when the writer has shut the transport
	writer     func()          // c.writeLoop, bound once so starting a writer allocates nothing
	raw        syscall.RawConn // non-blocking writes from the write pool; nil when the transport has none
	dg         datagramSender  // the transport's datagrams (WebTransport); nil when it has none
	// reader is the connection's state in the poller's read workers; nil
	// when a goroutine of its own reads the connection.
	reader *wsPollReader
	linger *writerLinger // a writer waiting for more (WebTransport); nil: writers exit when idle

	// Inbound state, guarded by mu: the reader goroutine and token timers
	// both change channels.
	mu       sync.Mutex
	channels map[string]*channel
	events   *rate.Limiter
	bytes    *rate.Limiter
	joins    *rate.Limiter
	notices  *rate.Limiter // dropped-datagram notices (made on the first)
	gone     bool          // torn down; channels are left
	// presenceBytes is the size of the metas this connection tracks over
	// all its channels.
	presenceBytes int
}

// newConn makes the connection carried by tr, whose frames look like ff.
func newConn(s *Server, tr transport, ff frameFormat, remote string) *conn {
	c := &conn{
		srv:        s,
		tr:         tr,
		kind:       tr.kind(),
		format:     ff,
		vsn:        ff.version(),
		remote:     remote,
		tm:         s.metrics.byKind[tr.kind()],
		writerDone: make(chan struct{}),
		channels:   make(map[string]*channel),
	}
	opts := outq.Options{Limit: s.cfg.queueLimit(), OverflowClose: slowConsumerCloses[ff], DatagramLimit: s.cfg.DatagramQueue,
		ChangeLimit: s.cfg.changeQueueLimit(), Stall: int64(s.cfg.changeStall()), Clock: s.coalesce.now}
	if k := s.coalescerFor(tr.kind()); k.every > 0 {
		opts.Hold = func(last int64) bool { return k.recent(last) && k.add(c) }
	}
	c.q = outq.New(opts)
	c.writer = c.writeLoop
	if s.cfg.EventsPerSecond > 0 {
		c.events = rate.NewLimiter(rate.Limit(s.cfg.EventsPerSecond), burst(s.cfg.EventsPerSecond))
	}
	if s.cfg.BytesPerSecond > 0 {
		c.bytes = rate.NewLimiter(rate.Limit(s.cfg.BytesPerSecond), s.cfg.byteBurst())
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
	r, start := c.q.Push(f)
	if start {
		c.startWriter()
	}
	switch r {
	case outq.Overflow:
		m := c.srv.metrics
		m.queueDrops.Inc()
		m.slowClose.Inc()
		m.errorReason("slow_consumer")
		c.srv.logLimited.Warn("closing slow consumer", "remote", c.remote, "queue_limit_bytes", c.srv.cfg.queueLimit(), "frame_bytes", len(f))
		return false
	case outq.Rejected:
		return false
	}
	return true
}

// flushScheduled starts the writer of a connection the coalescer held back.
func (c *conn) flushScheduled() {
	if c.q.Flush() {
		c.startWriter()
	}
}

// startWriter runs the writer role the caller was handed by the queue: on
// a writer still waiting for more (WebTransport), the write pool, or a
// goroutine of its own when the pool is full or the connection is not a
// socket.
func (c *conn) startWriter() {
	if c.linger != nil && c.linger.handOff() {
		return
	}
	if !c.srv.pool.submit(c) {
		go c.writer()
	}
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
	if c.q.Close(closeFrame(c.format, code, reason), drop) {
		go c.writer()
	}
}

// writeLoop writes until the queue is empty, then exits; a push starts it
// again. After the close frame, or a failed write, it shuts the transport
// (which stops the reader too) and no writer starts again.
func (c *conn) writeLoop() {
	var lingerTimer *time.Timer
	for {
		b := c.q.Take()
		batch := b.Frames
		if b.Close != nil {
			batch = append(batch, b.Close)
		}
		var err error
		if len(b.Datagrams) > 0 {
			err = c.sendDatagrams(b.Datagrams)
		}
		if len(batch) > 0 && err == nil {
			err = c.writePieces(batch)
		}
		if err != nil || b.Close != nil {
			clear(batch)
			if err != nil {
				if reason := c.tr.writeError(err); reason != "" {
					c.srv.metrics.errorReason(reason)
				}
			}
			c.finish()
			return
		}
		if c.q.Len() == 0 {
			// Under a steady stream the next frame is usually a moment
			// away: yield once before giving the goroutine up.
			runtime.Gosched()
		}
		if c.q.Release(b.Frames) {
			continue
		}
		if c.linger == nil {
			return
		}
		if lingerTimer == nil {
			lingerTimer = time.NewTimer(time.Hour)
		}
		if !c.linger.linger(lingerTimer, c.writerDone) {
			return
		}
	}
}

// writePiece is about how much the blocking writer writes at once.
const writePiece = 64 << 10

// writePieces writes batch in pieces of about writePiece bytes (a larger
// frame alone), so that both the write timeout and the queue's stall
// clock measure the client's progress, not the time a whole batch takes:
// a client that reads slowly but steadily is never cut off in the middle
// of a large batch; one that takes nothing for --write-timeout is.
func (c *conn) writePieces(batch [][]byte) error {
	for len(batch) > 0 {
		n, size := 0, 0
		for n < len(batch) && (n == 0 || size+len(batch[n]) <= writePiece) {
			size += len(batch[n])
			n++
		}
		if err := c.tr.writeFrames(batch[:n]); err != nil {
			return err
		}
		c.srv.metrics.wrote(c.tm, size)
		c.q.Progress()
		batch = batch[n:]
	}
	return nil
}

// finish shuts the transport once; no writer runs after it.
func (c *conn) finish() {
	if c.q.Finish() {
		c.tr.shut()
		close(c.writerDone)
	}
}

// unlockToWait lets c.mu go before a frame's handler waits for the
// cluster or the database (the caller takes it again after). A connection
// read by the poller's workers hands its worker's place to another, so
// that the other connections are not held up by the wait.
func (c *conn) unlockToWait() {
	c.mu.Unlock()
	if r := c.reader; r != nil {
		r.worker.wait()
	}
}

// send encodes and queues one frame addressed to this connection only.
func (c *conn) send(joinRef, ref, topic, event string, payload []byte) {
	c.enqueue(textFrame(c.format, joinRef, ref, topic, event, payload))
	c.srv.metrics.delivered(c.tm, 1)
}

func (c *conn) reply(joinRef, ref, topic, status string, response []byte) {
	c.send(joinRef, ref, topic, "phx_reply", phx.ReplyPayload(status, response))
}
