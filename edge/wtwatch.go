package edge

import (
	"context"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// quicWatch bounds how long a QUIC connection of the WebTransport
// listener may hold the node without a session: quic-go's HTTP/3 server
// reads request headers without a deadline, and client pings keep a QUIC
// connection alive forever, so a connection that sends no request, or
// trickles the headers of one, would stay. The HTTP timeouts apply
// instead, as over TCP: the first request must arrive within the header
// timeout of the handshake; after each request the next one (or a
// session) must come within header + read/write + idle timeouts. A live
// session stops the watch (its own timeouts apply).
type quicWatch struct {
	qc    *quic.Conn
	first time.Duration // to the first request
	again time.Duration // after a request; 0: unbounded

	mu       sync.Mutex
	timer    *time.Timer
	sessions int
	ended    bool
}

type quicWatchKey struct{}

// watchConn starts the watch of qc, stopped when qc ends; nil when the
// header timeout is off.
func (s *Server) watchConn(qc *quic.Conn) *quicWatch {
	cfg := &s.cfg
	if cfg.HTTPReadHeaderTimeout <= 0 {
		return nil
	}
	q := &quicWatch{qc: qc, first: cfg.HTTPReadHeaderTimeout}
	if cfg.HTTPReadTimeout > 0 && cfg.HTTPWriteTimeout > 0 {
		q.again = cfg.HTTPReadHeaderTimeout + max(cfg.HTTPReadTimeout, cfg.HTTPWriteTimeout) + s.http.IdleTimeout
	}
	q.timer = time.AfterFunc(q.first, q.expire)
	context.AfterFunc(qc.Context(), func() {
		q.mu.Lock()
		q.ended = true
		q.timer.Stop()
		q.mu.Unlock()
	})
	return q
}

func (q *quicWatch) expire() {
	q.mu.Lock()
	idle := q.sessions == 0 && !q.ended
	q.mu.Unlock()
	if idle {
		q.qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeRequestIncomplete), "request not received in time")
	}
}

// watchOf is the watch of the connection a request came on (nil: none).
func watchOf(ctx context.Context) *quicWatch {
	q, _ := ctx.Value(quicWatchKey{}).(*quicWatch)
	return q
}

// request re-arms the watch when a request's headers have arrived.
func (q *quicWatch) request() {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sessions == 0 && !q.ended {
		q.arm()
	}
}

// arm (re)starts the timer for the next request. Called with q.mu held.
func (q *quicWatch) arm() {
	q.timer.Stop()
	if q.again > 0 {
		q.timer.Reset(q.again)
	}
}

func (q *quicWatch) sessionOpened() {
	if q == nil {
		return
	}
	q.mu.Lock()
	q.sessions++
	q.timer.Stop()
	q.mu.Unlock()
}

func (q *quicWatch) sessionClosed() {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sessions--; q.sessions == 0 && !q.ended {
		q.arm()
	}
}
