package edge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// readBufferSize is the read buffer of a connection with a reader
// goroutine of its own (a WebTransport stream; a WebSocket without the
// poller). Small on purpose: idle connections dominate memory.
const readBufferSize = 1024

// serveWebSocket upgrades a request on /realtime/v1/websocket or
// /socket/websocket, after checking vsn, the page's origin, auth and the
// connection limit, so that refusals are HTTP answers with a {"error":…}
// body, as Supabase sends.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	vsn, err := phx.ParseVersion(r.URL.Query().Get("vsn"))
	if err != nil {
		s.metrics.errorReason("bad_vsn")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if !s.checkOrigin(w, r) {
		return
	}
	apikey, cl, ok := s.admitClient(w, r)
	if !ok {
		return
	}
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		s.release(r.RemoteAddr)
		s.metrics.errorReason("upgrade")
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	var early []byte
	if n := rw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right behind its upgrade request.
		b, _ := rw.Reader.Peek(n)
		early = bytes.Clone(b)
	}
	// The HTTP server's read and write deadlines of the upgrade request
	// stay on the hijacked connection; the WebSocket sets its own.
	nc.SetDeadline(time.Time{})
	t := newWSTransport(nc, s.cfg.WriteTimeout)
	c := newConn(s, t, wsFormat(vsn), nc.RemoteAddr().String())
	c.raw = t.raw
	c.apikey, c.apikeyClaims = apikey, cl
	c.headers = headersJSON(r.Header, "x-")
	if !s.track(c) {
		// Shutdown began after the upgrade: the client hears why, as the
		// connections Shutdown found do, instead of a bare EOF.
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		ws.WriteFrame(nc, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "server shutting down")))
		nc.Close()
		s.release(c.remote)
		return
	}
	// Returning from the handler lets net/http's per-request buffers be
	// collected.
	s.startReader(c, t, early)
}

// admitClient runs the checks every transport makes before its upgrade:
// the apikey (query, or the x-api-key header), the connection limit and
// draining. A refusal is answered with the HTTP status and {"error":…}
// body Supabase sends; on success the caller holds one admitted
// connection and must release it if the upgrade fails.
func (s *Server) admitClient(w http.ResponseWriter, r *http.Request) (apikey string, cl *claims, ok bool) {
	apikey = r.URL.Query().Get("apikey")
	if apikey == "" {
		apikey = r.Header.Get("x-api-key")
	}
	cl, aerr := s.auth.socket(apikey)
	if aerr != nil {
		s.metrics.errorReason("unauthorized")
		writeJSONError(w, http.StatusUnauthorized, aerr.Error())
		return "", nil, false
	}
	if ok, reason := s.admit(r.RemoteAddr); !ok {
		s.metrics.errorReason(reason)
		writeJSONError(w, http.StatusTooManyRequests, tooManyMessage(reason))
		return "", nil, false
	}
	if s.draining.Load() {
		s.release(r.RemoteAddr)
		writeJSONError(w, http.StatusServiceUnavailable, "Realtime is restarting, please standby")
		return "", nil, false
	}
	return apikey, cl, true
}

// wsTransport carries a conn over a WebSocket: frames are written with
// one writev per batch, and the socket's file descriptor gives the write
// pool its non-blocking path.
type wsTransport struct {
	nc           net.Conn
	raw          syscall.RawConn // nil if the socket has no descriptor
	writeTimeout time.Duration
	deadline     time.Time // the write deadline last set (writer only)
	bufs         net.Buffers
	// reader is the connection's reader when the poller's workers read
	// it: closing the socket must wake it, as it wakes a goroutine
	// blocked in read.
	reader atomic.Pointer[wsPollReader]
}

func newWSTransport(nc net.Conn, writeTimeout time.Duration) *wsTransport {
	t := &wsTransport{nc: nc, writeTimeout: writeTimeout}
	if sc, ok := nc.(syscall.Conn); ok {
		t.raw, _ = sc.SyscallConn()
	}
	return t
}

func (t *wsTransport) kind() transportKind { return kindWebSocket }

func (t *wsTransport) writeFrames(batch [][]byte) error {
	if wt := t.writeTimeout; wt > 0 {
		// Moving the deadline on every write costs a timer update per
		// delivery; refreshing it once a quarter has passed still cuts
		// off a stuck write after ¾ to all of WriteTimeout.
		if now := time.Now(); t.deadline.Sub(now) < wt*3/4 {
			t.deadline = now.Add(wt)
			t.nc.SetWriteDeadline(t.deadline)
		}
	}
	t.bufs = batch
	_, err := t.bufs.WriteTo(t.nc)
	t.bufs = nil
	return err
}

// writeError counts every failed write: a WebSocket client that leaves
// normally sends a close frame, which is answered before the socket closes.
func (t *wsTransport) writeError(error) string { return "write" }

// shut closes the socket, which ends the reader's read (a poller's reader
// is woken to find that out).
func (t *wsTransport) shut() {
	t.nc.Close()
	if r := t.reader.Load(); r != nil {
		r.kick()
	}
}

func (t *wsTransport) kill() { t.shut() }

// startReader reads c's frames: through the poller's workers where the
// system has a poller and the socket a descriptor, else on a goroutine of
// its own.
func (s *Server) startReader(c *conn, t *wsTransport, early []byte) {
	if p := s.wsReaders(); p != nil && t.raw != nil && p.add(c, t, early) {
		return
	}
	go func() {
		defer s.wg.Done()
		c.readLoop(t, early)
	}()
}

// wsReaders returns the server's poller and reader workers, made for the
// first WebSocket; nil where the system has no poller, when
// Config.ReadWorkers is negative, or once Shutdown has closed them.
func (s *Server) wsReaders() *readPool {
	s.readersMu.Lock()
	defer s.readersMu.Unlock()
	if s.readers == nil && !s.readersDone && s.cfg.ReadWorkers >= 0 {
		p, err := newReadPool(readWorkers(s.cfg.ReadWorkers), s.log, s.metrics.readHandoff)
		if err != nil {
			s.log.Info("no socket poller: a reader goroutine per WebSocket", "err", err)
			s.readersDone = true
		}
		s.readers = p
	}
	return s.readers
}

// readWorkersNow is the number of reader workers (0 without the poller).
func (s *Server) readWorkersNow() int {
	s.readersMu.Lock()
	p := s.readers
	s.readersMu.Unlock()
	if p == nil {
		return 0
	}
	return p.work.running()
}

// closeReaders stops the poller and its workers; called by Shutdown once
// no connection is left.
func (s *Server) closeReaders() {
	s.readersMu.Lock()
	p := s.readers
	s.readers, s.readersDone = nil, true
	s.readersMu.Unlock()
	if p != nil {
		p.close()
	}
}

// wsInput is a WebSocket's inbound side, whichever goroutine reads it: the
// frame decoder and when the client was last heard from.
type wsInput struct {
	wsReader
	// quietSince is when the last frame ended (at first, the upgrade):
	// the idle timeout runs from it.
	quietSince time.Time
}

func (c *conn) newWSInput() wsInput {
	return wsInput{wsReader: wsReader{max: int64(c.srv.cfg.MaxFrameBytes)}, quietSince: time.Now()}
}

// readLoop is a WebSocket's reader where there is no poller (or the
// socket has no descriptor): a goroutine of its own reads the client's
// frames until the socket fails or closes, then tears the connection down.
func (c *conn) readLoop(t *wsTransport, early []byte) {
	defer c.teardown()
	in := c.newWSInput()
	if !c.wsInput(&in, early, time.Now()) {
		return
	}
	buf := make([]byte, readBufferSize)
	for {
		t.nc.SetReadDeadline(c.wsDeadline(&in))
		n, err := t.nc.Read(buf)
		if n > 0 && !c.wsInput(&in, buf[:n], time.Now()) {
			return
		}
		if err != nil {
			c.readFailed(err, &in.msg)
			return
		}
	}
}

// wsInput handles p, the next bytes from the client (which arrived at
// now): every frame they complete, in order. It reports false when the
// connection must stop reading.
func (c *conn) wsInput(in *wsInput, p []byte, now time.Time) bool {
	for len(p) > 0 {
		n, ev := in.next(p, now)
		p = p[n:]
		if ev.kind == wsNone {
			continue
		}
		in.quietSince = now
		if !c.wsEvent(ev) {
			return false
		}
	}
	return true
}

// wsEvent acts on what the decoder found; false when the connection must
// stop reading.
func (c *conn) wsEvent(ev wsEvent) bool {
	if ev.kind == wsError {
		c.srv.metrics.errorReason(ev.metric)
		c.closeNow(ev.code, ev.reason)
		return false
	}
	c.srv.metrics.read(c.tm, ev.frameBytes)
	switch ev.kind {
	case wsControl:
		switch ev.op {
		case ws.OpPing:
			c.enqueue(ws.MustCompileFrame(ws.NewPongFrame(ev.payload)))
		case ws.OpClose:
			c.answerClose(ev.payload)
			return false
		}
	case wsMessage:
		return c.handleFrame(ev.op == ws.OpBinary, ev.payload)
	}
	return true
}

// wsDeadline is when the client's silence ends the connection: the idle
// timeout after its last frame, and while a message is arriving no later
// than the message's own time limit. Zero: never.
func (c *conn) wsDeadline(in *wsInput) time.Time {
	cfg := &c.srv.cfg
	var d time.Time
	if t := cfg.IdleTimeout; t > 0 {
		d = in.quietSince.Add(t)
	}
	if t := cfg.MessageTimeout; t > 0 && in.msg.started {
		if end := in.msg.start.Add(t); d.IsZero() || end.Before(d) {
			d = end
		}
	}
	return d
}

// setReadDeadline arms a WebTransport stream's read deadline: the idle
// timeout between messages, and while a message is arriving no later than
// its own time limit too.
func (c *conn) setReadDeadline(nc interface{ SetReadDeadline(time.Time) error }, msg *message) {
	cfg := &c.srv.cfg
	var d time.Time
	if t := cfg.IdleTimeout; t > 0 {
		d = time.Now().Add(t)
	}
	if t := cfg.MessageTimeout; t > 0 && msg.started {
		if end := msg.start.Add(t); d.IsZero() || end.Before(d) {
			d = end
		}
	}
	nc.SetReadDeadline(d)
}

func (c *conn) protocolError(reason string) {
	c.srv.metrics.errorReason("protocol")
	c.closeNow(ws.StatusProtocolError, reason)
}

// answerClose answers a client's close frame (RFC 6455 §5.5.1, §7.4): a
// valid code is echoed; a 1-byte body or a code no endpoint may send is a
// protocol error (1002); a reason that is not UTF-8 is 1007.
func (c *conn) answerClose(body []byte) {
	switch {
	case len(body) == 0:
		c.closeAfterFlush(ws.StatusNormalClosure, "")
	case len(body) == 1:
		c.protocolError("close frame with a 1-byte body")
	default:
		code := ws.StatusCode(binary.BigEndian.Uint16(body))
		switch {
		case !validCloseCode(code):
			c.protocolError(fmt.Sprintf("invalid close code %d", code))
		case !utf8.Valid(body[2:]):
			c.srv.metrics.errorReason("protocol")
			c.closeNow(ws.StatusInvalidFramePayloadData, "close reason is not valid UTF-8")
		default:
			c.closeAfterFlush(code, "")
		}
	}
}

// validCloseCode reports whether an endpoint may send code in a close
// frame: the codes RFC 6455 and the IANA registry define for use on the
// wire, and the ranges for libraries and applications.
func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

func (c *conn) readFailed(err error, msg *message) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
	case errors.As(err, &ne) && ne.Timeout():
		if msg.started && c.srv.cfg.MessageTimeout > 0 && time.Since(msg.start) >= c.srv.cfg.MessageTimeout {
			c.srv.metrics.errorReason("message_timeout")
			c.closeNow(ws.StatusPolicyViolation, "message not completed in time")
			return
		}
		c.srv.metrics.errorReason("idle_timeout")
		c.closeNow(ws.StatusGoingAway, "idle timeout")
	default:
		c.srv.metrics.errorReason("read")
		c.closeNow(ws.StatusProtocolError, "bad frame")
	}
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(append([]byte(`{"error":`), phx.AppendString(nil, msg)...), '}'))
}

// message is one client message being read, from one frame or from a
// fragment and its continuations.
type message struct {
	started bool
	op      ws.OpCode
	start   time.Time
	buf     []byte
}

// growStep is how far ahead of the bytes that have arrived the buffer may
// grow: a header that merely claims a large length cannot make the server
// allocate it, and the buffer never exceeds what the frames declared.
const growStep = 64 << 10

func (m *message) begin(op ws.OpCode) {
	m.started, m.op, m.start = true, op, time.Now()
}

// read appends n payload bytes from r. The buffer grows by a quarter at a
// time (so many small fragments copy little), but never beyond the bytes
// declared so far, nor more than growStep beyond the bytes received.
func (m *message) read(r io.Reader, n int) error {
	declared := len(m.buf) + n
	if m.buf == nil && n <= growStep {
		m.buf = make([]byte, 0, n)
	}
	for len(m.buf) < declared {
		if len(m.buf) == cap(m.buf) {
			grown := make([]byte, len(m.buf), min(declared, len(m.buf)+max(growStep, len(m.buf)/4)))
			copy(grown, m.buf)
			m.buf = grown
		}
		k, err := io.ReadFull(r, m.buf[len(m.buf):min(cap(m.buf), declared)])
		m.buf = m.buf[:len(m.buf)+k]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// add appends b, the next bytes of a frame of which rest bytes (b
// included) are still to come, with read's growth rule: never beyond the
// bytes declared so far, nor more than growStep beyond those received.
func (m *message) add(b []byte, rest int64) {
	if need := len(m.buf) + len(b); need > cap(m.buf) {
		c := int64(len(m.buf) + max(growStep, len(m.buf)/4))
		if m.buf == nil && rest <= growStep {
			c = rest // one frame's body, allocated once, exactly
		}
		c = max(min(c, int64(len(m.buf))+rest), int64(need))
		grown := make([]byte, len(m.buf), c)
		copy(grown, m.buf)
		m.buf = grown
	}
	m.buf = append(m.buf, b...)
}

// finish returns the whole message and resets m for the next one.
func (m *message) finish() ([]byte, ws.OpCode) {
	b, op := m.buf, m.op
	if b == nil {
		b = []byte{}
	}
	*m = message{}
	return b, op
}

func knownOpCode(op ws.OpCode) bool {
	switch op {
	case ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong:
		return true
	}
	return false
}
