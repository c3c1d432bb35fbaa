package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"

	"github.com/meshcast/meshcast/mesh/quicgate"
	"github.com/meshcast/meshcast/wire/phx"
)

// The WebTransport transport: HTTP/3 over QUIC (UDP), one session per
// client, one client-opened bidirectional stream per session carrying the
// same Phoenix frames as a WebSocket (wtframe.go), and datagrams for
// unreliable broadcasts (datagram.go). A session becomes a conn like any
// WebSocket and goes through the same channel, auth and limit code.

const (
	// WebTransportPath is where sessions are opened (extended CONNECT).
	WebTransportPath = "/realtime/v1/webtransport"
	// certHashPath answers where to connect and which certificate hashes
	// to pin.
	certHashPath = WebTransportPath + "/cert-hash"

	// streamOpenTimeout bounds the wait for a new session's stream.
	streamOpenTimeout = 10 * time.Second
	// wtCloseWait is how long a closing session waits for the client to
	// close after the close frame, before it closes the session itself:
	// closing it resets the stream, which may discard the close frame, and
	// Chromium loses the session's close code, so the frame is how a
	// browser learns why.
	wtCloseWait = time.Second
	// wtWriteChunk is the most a writer copies into one stream write.
	wtWriteChunk = 64 << 10
	// wtInitialStreamWindow is a client stream's first flow-control
	// window: what a stream the node never reads can hold.
	wtInitialStreamWindow = 64 << 10
)

// wtServer is a Server's WebTransport listener.
type wtServer struct {
	srv   *Server
	certs *certSource
	h3    *http3.Server
	wts   *webtransport.Server
	qtr   *quic.Transport
	ln    *quic.EarlyListener
	addr  *net.UDPAddr // bound

	// quicConns counts the QUIC connections being served, with a
	// session or not, against MaxConnections, once their handshake is
	// complete (before, the gate counts them); quicPerAddr bounds one
	// address's share of them.
	quicConns   atomic.Int64
	quicPerAddr *addrCounts

	// extra resets the streams sessions open beyond their one.
	extra *streamRefuser
	// coalesce spaces the writes of busy sessions (nil: the server's
	// coalescer applies).
	coalesce *coalescer

	// ctx is cancelled when Shutdown begins: sessions still waiting for
	// their stream are closed.
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{} // ends certificate rotation

	mu       sync.Mutex
	closed   bool
	sessions sync.WaitGroup // session goroutines before they are conns
	loops    sync.WaitGroup // per-QUIC-connection goroutines, rotation
	once     sync.Once
}

// ServeWebTransport serves WebTransport sessions on pc (UDP) until
// Shutdown, which drains them like WebSocket connections. It returns
// http.ErrServerClosed after Shutdown, and closes pc.
func (s *Server) ServeWebTransport(pc net.PacketConn) error {
	w, err := s.newWTServer(pc)
	if err != nil {
		pc.Close()
		return err
	}
	s.mu.Lock()
	switch {
	case s.shut:
		err = http.ErrServerClosed
	case s.wtp.Load() != nil:
		err = errors.New("edge: ServeWebTransport called twice")
	default:
		s.wtp.Store(w)
	}
	s.mu.Unlock()
	if err != nil {
		w.close()
		return err
	}
	w.loops.Add(2)
	go func() {
		defer w.loops.Done()
		w.certs.run(w.stop, func(err error) { s.log.Error("rotating the WebTransport certificate", "err", err) })
	}()
	go func() {
		defer w.loops.Done()
		w.extra.run(w.stop, wtSweepEvery)
	}()
	s.log.Info("webtransport serving", "addr", w.addr.String(), "url", w.url(nil), "self_signed", w.certs.fixed == nil)
	return w.acceptLoop()
}

func (s *Server) newWTServer(pc net.PacketConn) (*wtServer, error) {
	var certs *certSource
	var err error
	if s.cfg.WebTransportCert != nil {
		certs, err = newFixedCerts(s.cfg.WebTransportCert)
	} else {
		certs, err = newSelfSignedCerts(s.cfg.WebTransportCertValidity, nil)
	}
	if err != nil {
		return nil, err
	}
	addr, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("edge: WebTransport needs a UDP socket, not %T", pc.LocalAddr())
	}
	w := &wtServer{srv: s, certs: certs, addr: addr, stop: make(chan struct{})}
	w.extra = newStreamRefuser(func() { s.metrics.errorReason("extra_stream") })
	if every := s.cfg.WebTransportCoalesce; every > 0 {
		w.coalesce = newCoalescer(every)
		w.coalesce.epoch = s.coalesce.epoch // one clock for the queues' last writes
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	qconf := wtQUICConfig(&s.cfg)
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: certs.getCertificate,
	})
	w.h3 = &http3.Server{
		Handler:    http.HandlerFunc(w.serveHTTP3),
		TLSConfig:  tlsConf,
		QUICConfig: qconf,
		Logger:     s.log,
		// A connection without requests is closed as an idle HTTP one;
		// one whose requests do not arrive, by its quicWatch.
		IdleTimeout: s.http.IdleTimeout,
		ConnContext: func(ctx context.Context, qc *quic.Conn) context.Context {
			if q := s.watchConn(qc); q != nil {
				ctx = context.WithValue(ctx, quicWatchKey{}, q)
			}
			return ctx
		},
	}
	w.wts = &webtransport.Server{
		H3: w.h3,
		// The origin is checked in serveSession, where a refusal can be an
		// HTTP answer that says why; the default check wants the page and
		// the session on one host:port, which a page served over TCP and
		// a session on a UDP port of another name fail.
		CheckOrigin: func(*http.Request) bool { return true },
		Config: &webtransport.Config{
			// One stream per session, none the other way; a bounded
			// window of unread stream data. (A nil Config breaks Safari.)
			MaxIncomingStreams:    1,
			MaxIncomingUniStreams: -1,
			MaxIncomingData:       8 << 20,
		},
	}
	w.qtr = &quic.Transport{Conn: pc}
	if s.cfg.MaxHandshakes > 0 {
		// A connection is counted from its first packet until its
		// handshake completes (acceptLoop admits it then).
		quicgate.New(quicgate.Config{
			Max:     s.cfg.MaxHandshakes,
			PerAddr: newAddrCounts(s.cfg.MaxHandshakes, s.cfg.AddressShare).limit,
			Metrics: s.metrics.set,
			Name:    "meshcast_webtransport_handshakes",
		}).Install(w.qtr)
	}
	w.quicPerAddr = newAddrCounts(s.cfg.MaxConnections, s.cfg.AddressShare)
	ln, err := w.qtr.ListenEarly(tlsConf, qconf)
	if err != nil {
		w.qtr.Close()
		return nil, fmt.Errorf("edge: WebTransport listener: %w", err)
	}
	w.ln = ln
	return w, nil
}

// wtQUICConfig is the WebTransport listener's QUIC config.
func wtQUICConfig(cfg *Config) *quic.Config {
	idle := 30 * time.Second
	if t := cfg.IdleTimeout; t > idle {
		idle = t
	}
	qconf := &quic.Config{
		EnableDatagrams:                  true,
		EnableStreamResetPartialDelivery: true,
		MaxIdleTimeout:                   idle,
		// What a client may open at once, enforced by QUIC whether or
		// not it sends WebTransport's flow-control settings (without
		// them webtransport-go sets no limit per session): the request
		// stream of its session (CONNECT) and the session's one stream,
		// or plain HTTP/3 requests, and HTTP/3's own unidirectional
		// streams (control, QPACK encoder and decoder). Streams past the
		// session's one are reset (refuseExtraStreams).
		MaxIncomingStreams:    2,
		MaxIncomingUniStreams: 3,
	}
	if win := cfg.WebTransportWindow; win > 0 {
		// A stream the node does not read holds its initial window at
		// most; windows grow only as the node reads.
		qconf.InitialStreamReceiveWindow = uint64(min(wtInitialStreamWindow, win))
		qconf.InitialConnectionReceiveWindow = uint64(min(2*wtInitialStreamWindow, win))
		qconf.MaxStreamReceiveWindow = uint64(win)
		qconf.MaxConnectionReceiveWindow = uint64(win)
	}
	return qconf
}

// acceptLoop serves each QUIC connection on a goroutine of its own.
func (w *wtServer) acceptLoop() error {
	for {
		qc, err := w.ln.Accept(context.Background())
		w.mu.Lock()
		closed := w.closed
		if err == nil && !closed {
			w.loops.Add(1)
		}
		w.mu.Unlock()
		if err != nil {
			if closed {
				return http.ErrServerClosed
			}
			return err
		}
		if closed {
			qc.CloseWithError(0, "server shutting down")
			return http.ErrServerClosed
		}
		go func() {
			defer w.loops.Done()
			// The listener accepts connections before their handshake
			// ends. Serving starts after it: the quicWatch's header
			// timeout runs from there (the gate and quic-go bound the
			// handshake itself), and a close sent before it ends would
			// reach the client without its code and reason.
			select {
			case <-qc.HandshakeComplete():
			case <-qc.Context().Done():
				return
			case <-w.ctx.Done():
				qc.CloseWithError(0, "server shutting down")
				return
			}
			quicgate.Admit(qc)
			// Every QUIC connection holds goroutines and memory before it
			// opens a session: once its handshake is complete it counts
			// against the connection limit too.
			remote := qc.RemoteAddr().String()
			if reason := w.admitQUIC(remote); reason != "" {
				w.srv.metrics.errorReason(reason)
				qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), tooManyMessage(reason))
				return
			}
			defer w.releaseQUIC(remote)
			if err := w.wts.ServeQUICConn(qc); err != nil && !errors.Is(err, http.ErrServerClosed) {
				w.srv.logLimited.Debug("webtransport connection", "remote", qc.RemoteAddr().String(), "err", err)
			}
			// Returned with the connection open only on an error.
			qc.CloseWithError(0, "")
		}()
	}
}

// admitQUIC counts a QUIC connection whose handshake completed against
// MaxConnections and its address's share; the refusal's reason, or "".
func (w *wtServer) admitQUIC(remote string) string {
	max := w.srv.cfg.MaxConnections
	if n := w.quicConns.Add(1); max > 0 && n > int64(max) {
		w.quicConns.Add(-1)
		return "too_many_connections"
	}
	if !w.quicPerAddr.take(remote) {
		w.quicConns.Add(-1)
		return "too_many_from_address"
	}
	return ""
}

func (w *wtServer) releaseQUIC(remote string) {
	w.quicPerAddr.give(remote)
	w.quicConns.Add(-1)
}

// drain begins Shutdown: sessions that opened no stream yet are closed.
func (w *wtServer) drain() { w.cancel() }

// close closes every QUIC connection and the listener, and waits for the
// goroutines of the listener. Sessions that are conns are not waited for
// here (Shutdown waits for them).
func (w *wtServer) close() {
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.cancel()
		close(w.stop)
		w.wts.Close() // closes the connections while the socket still sends
		w.ln.Close()
		w.loops.Wait()
		if w.coalesce != nil {
			// Sessions still scheduled are written by their own close.
			w.coalesce.close()
		}
		w.qtr.Close()
		w.qtr.Conn.Close()
	})
}

// hold registers a session goroutine; false once the listener closes.
func (w *wtServer) hold() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.sessions.Add(1)
	return true
}

// serveHTTP3 is the HTTP/3 handler: WebTransport sessions, and every other
// route as over TCP (a browser told by Alt-Svc may send those here), with
// the HTTP read and write timeouts applied per request.
func (w *wtServer) serveHTTP3(rw http.ResponseWriter, r *http.Request) {
	watchOf(r.Context()).request()
	if r.Method == http.MethodConnect {
		if r.URL.Path != WebTransportPath {
			http.NotFound(rw, r)
			return
		}
		w.serveSession(rw, r)
		return
	}
	rc := http.NewResponseController(rw)
	now := time.Now()
	if t := w.srv.cfg.HTTPReadTimeout; t > 0 {
		rc.SetReadDeadline(now.Add(t))
	}
	if t := w.srv.cfg.HTTPWriteTimeout; t > 0 {
		rc.SetWriteDeadline(now.Add(t))
	}
	w.srv.handler.ServeHTTP(rw, r)
}

// serveSession opens a session after the checks a WebSocket upgrade makes
// (auth, connection limit, draining) and the origin check, so that
// refusals are HTTP answers with a {"error":…} body.
func (w *wtServer) serveSession(rw http.ResponseWriter, r *http.Request) {
	s := w.srv
	if v := r.URL.Query().Get("vsn"); v != "" && v != "2.0.0" {
		s.metrics.errorReason("bad_vsn")
		writeJSONError(rw, http.StatusForbidden, "WebTransport speaks vsn 2.0.0 only")
		return
	}
	if !s.checkOrigin(rw, r) {
		return
	}
	apikey, cl, ok := s.admitClient(rw, r)
	if !ok {
		return
	}
	sess, err := w.wts.Upgrade(rw, r)
	if err != nil {
		s.release(r.RemoteAddr)
		s.metrics.errorReason("upgrade")
		s.logLimited.Debug("webtransport upgrade failed", "remote", r.RemoteAddr, "err", err)
		writeJSONError(rw, http.StatusBadRequest, "WebTransport upgrade failed: "+err.Error())
		return
	}
	if !w.hold() {
		s.release(r.RemoteAddr)
		sess.CloseWithError(webtransport.SessionErrorCode(ws.StatusGoingAway), "server shutting down")
		return
	}
	// The session outlives the handler.
	q := watchOf(r.Context())
	q.sessionOpened()
	go w.runSession(sess, r.RemoteAddr, apikey, cl, q)
}

// runSession waits for the session's stream, then is the conn's reader
// until the session ends.
func (w *wtServer) runSession(sess *webtransport.Session, remote, apikey string, cl *claims, q *quicWatch) {
	defer w.sessions.Done()
	defer q.sessionClosed()
	s := w.srv
	ctx, cancel := context.WithTimeout(w.ctx, streamOpenTimeout)
	str, err := sess.AcceptStream(ctx)
	cancel()
	if err != nil {
		s.release(remote)
		code, reason := ws.StatusPolicyViolation, "no stream opened within "+streamOpenTimeout.String()
		if w.ctx.Err() != nil {
			code, reason = ws.StatusGoingAway, "server shutting down"
		} else if sess.Context().Err() == nil {
			s.metrics.errorReason("no_stream")
		}
		sess.CloseWithError(webtransport.SessionErrorCode(code), reason)
		return
	}
	t := newWTTransport(sess, str, s.cfg.WriteTimeout)
	c := newConn(s, t, formatWTv2, sess.RemoteAddr().String())
	c.apikey, c.apikeyClaims = apikey, cl
	c.dg = t
	if !s.track(c) {
		s.release(remote)
		t.closeWith(ws.StatusGoingAway, "server shutting down")
		t.kill()
		t.shut()
		return
	}
	defer s.wg.Done()
	c.linger = newWriterLinger()
	w.extra.add(sess)
	defer w.extra.remove(sess)
	datagrams := make(chan struct{})
	go func() {
		defer close(datagrams)
		c.readDatagrams(sess)
	}()
	c.readWebTransport(t)
	// The writer closed the session before teardown returned, so the
	// datagram reader is ending.
	<-datagrams
}

// readWebTransport reads client frames from the stream until it ends or
// fails, then tears the connection down.
func (c *conn) readWebTransport(t *wtTransport) {
	defer c.teardown()
	cfg := &c.srv.cfg
	fr := wtFrameReader{r: bufio.NewReaderSize(t.str, readBufferSize), max: cfg.MaxFrameBytes}
	for {
		c.setReadDeadline(t.str, &fr.msg)
		err := fr.header()
		var body []byte
		var op byte
		if err == nil {
			// The message deadline applies from its first bytes.
			c.setReadDeadline(t.str, &fr.msg)
			body, op, err = fr.body()
		}
		var fe *wtFrameError
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &fe):
			if fe.code == ws.StatusMessageTooBig {
				c.srv.metrics.errorReason("frame_too_large")
			} else {
				c.srv.metrics.errorReason("protocol")
			}
			c.closeNow(fe.code, fe.reason)
			return
		case errors.As(err, &ne) && ne.Timeout():
			c.readFailed(err, &fr.msg)
			return
		default:
			// The stream ended (io.EOF, between frames or not), or the
			// client reset it or closed the session.
			return
		}
		c.srv.metrics.read(c.tm, len(body))
		if op == wtOpClose {
			c.answerClose(body)
			return
		}
		if !c.handleFrame(op == wtOpBinary, body) {
			return
		}
	}
}

// wtTransport carries a conn over a WebTransport session's stream.
type wtTransport struct {
	sess         *webtransport.Session
	str          *webtransport.Stream
	writeTimeout time.Duration

	// Writer only.
	deadline    time.Time
	closeCode   ws.StatusCode
	closeReason string

	killed   chan struct{}
	killOnce sync.Once
}

func newWTTransport(sess *webtransport.Session, str *webtransport.Stream, writeTimeout time.Duration) *wtTransport {
	return &wtTransport{
		sess:         sess,
		str:          str,
		writeTimeout: writeTimeout,
		closeCode:    ws.StatusNormalClosure,
		killed:       make(chan struct{}),
	}
}

func (t *wtTransport) kind() transportKind { return kindWebTransport }

// wtWriteBufs pool the buffers that turn a batch of frames into few
// stream writes: each write hands data to the QUIC connection's loop, so
// one per batch beats one per frame, and an idle session keeps no buffer.
var wtWriteBufs = sync.Pool{New: func() any { b := make([]byte, 0, wtWriteChunk); return &b }}

func (t *wtTransport) writeFrames(batch [][]byte) error {
	if wt := t.writeTimeout; wt > 0 {
		if now := time.Now(); t.deadline.Sub(now) < wt*3/4 {
			t.deadline = now.Add(wt)
			t.str.SetWriteDeadline(t.deadline)
		}
	}
	if last := batch[len(batch)-1]; len(last) >= wtHeader+2 && last[4] == wtOpClose {
		t.closeCode = ws.StatusCode(uint16(last[5])<<8 | uint16(last[6]))
		t.closeReason = string(last[wtHeader+2:])
	}
	if len(batch) == 1 {
		_, err := t.str.Write(batch[0])
		return err
	}
	bp := wtWriteBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; wtWriteBufs.Put(bp) }()
	for _, f := range batch {
		if len(buf) > 0 && len(buf)+len(f) > wtWriteChunk {
			if _, err := t.str.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if len(f) >= wtWriteChunk {
			if _, err := t.str.Write(f); err != nil {
				return err
			}
			continue
		}
		buf = append(buf, f...)
	}
	if len(buf) > 0 {
		_, err := t.str.Write(buf)
		return err
	}
	return nil
}

// writeError classifies a failed write to a session. A client that ends
// its session or its QUIC connection (a browser tab closing, clientjs's
// disconnect() right after its close frame, which the server's echo then
// finds gone) is no error: the stream fails with the peer's session or
// connection close, or with the http3.Error (H3_DATAGRAM_ERROR) that
// webtransport-go makes of its CONNECT stream ending. A connection gone
// silent is an idle timeout, as on a WebSocket. Anything else (a write
// timeout, a local reset) is a write error.
func (t *wtTransport) writeError(err error) string {
	var (
		se   *webtransport.SessionError
		ste  *webtransport.StreamError
		ae   *quic.ApplicationError
		h3e  *http3.Error
		idle *quic.IdleTimeoutError
	)
	switch {
	case errors.As(err, &se) && se.Remote, errors.As(err, &ste) && ste.Remote,
		errors.As(err, &ae) && ae.Remote, errors.As(err, &h3e) && h3e.ErrorCode == http3.ErrCodeDatagramError:
		return ""
	case errors.As(err, &idle):
		return "idle_timeout"
	}
	return "write"
}

// sendDatagram sends one datagram.
func (t *wtTransport) sendDatagram(d []byte) error { return t.sess.SendDatagram(d) }

// closeWith sets the session close code for a shut without a close frame.
func (t *wtTransport) closeWith(code ws.StatusCode, reason string) {
	t.closeCode, t.closeReason = code, reason
}

// shut ends the stream after the close frame, gives the client a moment
// to read it and close the session itself, then closes the session with
// the frame's code (which Go clients see; browsers lose it). Closing the
// session resets the stream, and a client drops what it has not read of
// a reset stream: so even after the client's own close frame, the echo
// waits for the client (clientjs closes the session right after its
// frame) rather than being cut short.
func (t *wtTransport) shut() {
	t.str.Close()
	timer := time.NewTimer(wtCloseWait)
	select {
	case <-t.sess.Context().Done():
	case <-t.killed:
	case <-timer.C:
	}
	timer.Stop()
	t.sess.CloseWithError(webtransport.SessionErrorCode(t.closeCode), cutReason(t.closeReason))
}

// kill resets the stream both ways at once: the reader and a blocked
// writer return, and shut does not wait for the client.
func (t *wtTransport) kill() {
	t.killOnce.Do(func() {
		close(t.killed)
		t.str.CancelRead(webtransport.StreamErrorCode(ws.StatusGoingAway))
		t.str.CancelWrite(webtransport.StreamErrorCode(ws.StatusGoingAway))
	})
}

// url is the session URL clients are told to dial (README, "WebTransport":
// which host is advertised). r is the cert-hash request (nil: for logs).
func (w *wtServer) url(r *http.Request) string {
	if adv := w.srv.cfg.WebTransportAdvertise; adv != "" {
		if strings.Contains(adv, "://") {
			return adv
		}
		return "https://" + adv + WebTransportPath
	}
	port := strconv.Itoa(w.addr.Port)
	host := "127.0.0.1"
	switch {
	case !w.addr.IP.IsUnspecified():
		host = w.addr.IP.String()
	case r == nil:
	case w.certs.fixed != nil:
		// A CA certificate names hosts: the one the client asked for.
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		} else if r.Host != "" {
			host = r.Host
		}
	default:
		// Bound to every address: the one the client's request reached is
		// one it can reach (a pinned certificate names no host).
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if h, _, err := net.SplitHostPort(a.String()); err == nil && h != "" {
				host = h
			}
		}
	}
	return "https://" + net.JoinHostPort(host, port) + WebTransportPath
}

// altSvc is the Alt-Svc header value announcing HTTP/3 on the UDP port.
func (w *wtServer) altSvc() string {
	if adv := w.srv.cfg.WebTransportAdvertise; adv != "" && !strings.Contains(adv, "://") {
		return `h3="` + adv + `"; ma=86400`
	}
	return `h3=":` + strconv.Itoa(w.addr.Port) + `"; ma=86400`
}

// serveCertHash answers GET /realtime/v1/webtransport/cert-hash: where to
// connect and the SHA-256 of the certificates to pin. A node without
// WebTransport says so in a 200 too ({"enabled":false,…}): every page on
// such a node asks, and a 404 would be an error in its browser console.
func (s *Server) serveCertHash(rw http.ResponseWriter, r *http.Request) {
	h := rw.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "application/json")
	w := s.webTransport()
	if w == nil {
		rw.Write([]byte(`{"enabled":false,"message":"WebTransport is off on this node"}`))
		return
	}
	hashes, notAfter := w.certs.published()
	b := []byte(`{"enabled":true,"url":`)
	b = phx.AppendString(b, w.url(r))
	b = append(b, `,"hashes":[`...)
	for i, sum := range hashes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"algorithm":"sha-256","value":"`...)
		b = base64.StdEncoding.AppendEncode(b, sum[:])
		b = append(b, `"}`...)
	}
	b = append(b, `],"not_after":`...)
	b = phx.AppendString(b, notAfter.UTC().Format(time.RFC3339))
	b = append(b, '}')
	rw.Write(b)
}

// coalescerFor is the coalescer of a new connection of kind k.
func (s *Server) coalescerFor(k transportKind) *coalescer {
	if w := s.webTransport(); k == kindWebTransport && w != nil && w.coalesce != nil {
		return w.coalesce
	}
	return s.coalesce
}

// webTransport returns the WebTransport listener, nil when there is none.
func (s *Server) webTransport() *wtServer { return s.wtp.Load() }

// withAltSvc adds the Alt-Svc header to every HTTP response once the
// WebTransport listener runs.
func (s *Server) withAltSvc(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w := s.webTransport(); w != nil {
			rw.Header().Set("Alt-Svc", w.altSvc())
		}
		h.ServeHTTP(rw, r)
	})
}
