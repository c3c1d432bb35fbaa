package edge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// readBufferSize is the per-connection read buffer. Small on purpose: idle
// connections dominate memory, and frames larger than it are read straight
// into their own payload buffer.
const readBufferSize = 1024

// serveWebSocket upgrades a request on /realtime/v1/websocket or
// /socket/websocket, after checking vsn, auth and the connection limit, so
// that refusals are HTTP answers with a {"error":…} body, as Supabase sends.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	vsn, err := phx.ParseVersion(q.Get("vsn"))
	if err != nil {
		s.metrics.errorReason("bad_vsn")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	apikey := q.Get("apikey")
	if apikey == "" {
		apikey = r.Header.Get("x-api-key")
	}
	cl, aerr := s.auth.socket(apikey)
	if aerr != nil {
		s.metrics.errorReason("unauthorized")
		writeJSONError(w, http.StatusUnauthorized, aerr.Error())
		return
	}
	if !s.admit() {
		s.metrics.errorReason("too_many_connections")
		writeJSONError(w, http.StatusTooManyRequests, "Too many connected users")
		return
	}
	if s.draining.Load() {
		s.release()
		writeJSONError(w, http.StatusServiceUnavailable, "Realtime is restarting, please standby")
		return
	}
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		s.release()
		s.metrics.errorReason("upgrade")
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	var src io.Reader = nc
	if n := rw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right behind its upgrade request.
		early, _ := rw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), nc)
	}
	c := newConn(s, nc, vsn)
	c.apikey, c.apikeyClaims = apikey, cl
	s.metrics.connectionsTotal.Inc()
	if !s.track(c) {
		nc.Close()
		s.release()
		return
	}
	// Fresh goroutines with small stacks: returning from the handler lets
	// net/http's per-request buffers be collected.
	go func() { defer s.wg.Done(); c.readLoop(src) }()
}

// readLoop reads client frames until the socket fails or closes, then
// tears the connection down.
func (c *conn) readLoop(src io.Reader) {
	defer c.teardown()
	br := bufio.NewReaderSize(src, readBufferSize)
	var frag []byte // message being reassembled from continuation frames
	var fragOp ws.OpCode
	for {
		if t := c.srv.cfg.IdleTimeout; t > 0 {
			c.nc.SetReadDeadline(time.Now().Add(t))
		}
		h, err := ws.ReadHeader(br)
		if err != nil {
			c.readFailed(err)
			return
		}
		if max := int64(c.srv.cfg.MaxFrameBytes); max > 0 && h.Length+int64(len(frag)) > max {
			c.srv.metrics.errorReason("frame_too_large")
			c.closeNow(ws.StatusMessageTooBig, fmt.Sprintf("frame exceeds %d bytes", max))
			return
		}
		if h.Rsv != 0 || !knownOpCode(h.OpCode) {
			c.srv.metrics.errorReason("protocol")
			c.closeNow(ws.StatusProtocolError, "reserved bits or opcode")
			return
		}
		if !h.Masked {
			c.srv.metrics.errorReason("protocol")
			c.closeNow(ws.StatusProtocolError, "client frames must be masked")
			return
		}
		payload, err := readPayload(br, h.Length)
		if err != nil {
			c.readFailed(err)
			return
		}
		ws.Cipher(payload, h.Mask, 0)
		c.srv.metrics.bytesIn.Add(len(payload))

		if h.OpCode.IsControl() {
			if !h.Fin || h.Length > 125 {
				c.closeNow(ws.StatusProtocolError, "bad control frame")
				return
			}
			switch h.OpCode {
			case ws.OpPing:
				c.enqueue(ws.MustCompileFrame(ws.NewPongFrame(payload)))
			case ws.OpClose:
				c.closeAfterFlush(ws.StatusNormalClosure, "")
				return
			}
			continue
		}
		switch {
		case h.OpCode == ws.OpContinuation:
			if frag == nil {
				c.closeNow(ws.StatusProtocolError, "unexpected continuation frame")
				return
			}
			frag = append(frag, payload...)
			if !h.Fin {
				continue
			}
			payload, frag = frag, nil
			h.OpCode = fragOp
		case frag != nil:
			c.closeNow(ws.StatusProtocolError, "expected continuation frame")
			return
		case !h.Fin:
			frag, fragOp = payload, h.OpCode
			continue
		}
		if !c.handleFrame(h.OpCode == ws.OpBinary, payload) {
			return
		}
	}
}

func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
	case errors.As(err, &ne) && ne.Timeout():
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

// readPayload reads a frame payload of n bytes. Large payloads grow with
// the bytes that actually arrive, so a header that merely claims a large
// length cannot make the server allocate it.
func readPayload(r io.Reader, n int64) ([]byte, error) {
	const eager = 64 << 10
	if n <= eager {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var buf bytes.Buffer
	buf.Grow(eager)
	if _, err := io.CopyN(&buf, r, n); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

func knownOpCode(op ws.OpCode) bool {
	switch op {
	case ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong:
		return true
	}
	return false
}
