package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// Transports of the meshcast target.
const (
	TransportWebSocket    = "websocket"
	TransportWebTransport = "webtransport"
)

// clientConn is one benchmark client connection, WebSocket or WebTransport:
// whole Phoenix frames in and out, with the WebSocket opcodes (text,
// binary) naming their kind on both.
type clientConn interface {
	// WriteFrame writes one frame; safe for concurrent use.
	WriteFrame(op ws.OpCode, p []byte) error
	// ReadFrame returns the next data frame; the slice is valid until the
	// next call. A close from the server is ErrClosed.
	ReadFrame() (ws.OpCode, []byte, error)
	SetDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	Close() error
	CloseGracefully() error
}

func (c *wsConn) SetDeadline(t time.Time) error      { return c.nc.SetDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// wtTarget is where WebTransport sessions go and which certificates to
// trust: what the node's cert-hash endpoint answers.
type wtTarget struct {
	url    string // session URL with the WebSocket URL's query (apikey, vsn)
	hashes [][sha256.Size]byte
}

// discoverWT asks the node behind a meshcast WebSocket URL for its
// WebTransport endpoint, as clientjs does: GET <base>/webtransport/cert-hash.
func discoverWT(ctx context.Context, wsURL string) (*wtTarget, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	query := u.RawQuery
	u.RawQuery = ""
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/websocket") + "/webtransport/cert-hash"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: WebTransport discovery: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: GET %s: %d %s", u, resp.StatusCode, body)
	}
	var ans struct {
		Enabled *bool  `json:"enabled"`
		Message string `json:"message"`
		URL     string `json:"url"`
		Hashes  []struct {
			Algorithm string `json:"algorithm"`
			Value     string `json:"value"`
		} `json:"hashes"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("bench: GET %s: %w", u, err)
	}
	if ans.Enabled != nil && !*ans.Enabled {
		return nil, fmt.Errorf("bench: GET %s: the node has no WebTransport: %s", u, ans.Message)
	}
	t := &wtTarget{url: ans.URL}
	if query != "" {
		t.url += "?" + query
	}
	for _, h := range ans.Hashes {
		b, err := base64.StdEncoding.DecodeString(h.Value)
		if h.Algorithm != "sha-256" || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("bench: GET %s: bad hash %+v", u, h)
		}
		t.hashes = append(t.hashes, [sha256.Size]byte(b))
	}
	return t, nil
}

// tlsConfig trusts the pinned hashes (serverCertificateHashes), or the
// system roots when the node publishes none (a CA certificate).
func (t *wtTarget) tlsConfig() *tls.Config {
	if len(t.hashes) == 0 {
		return &tls.Config{NextProtos: []string{http3.NextProtoH3}}
	}
	return &tls.Config{
		NextProtos:         []string{http3.NextProtoH3},
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > 0 {
				sum := sha256.Sum256(raw[0])
				for _, h := range t.hashes {
					if h == sum {
						return nil
					}
				}
			}
			return errors.New("bench: the server's certificate is not one the node published")
		},
	}
}

// wtConn is a benchmark client over a WebTransport session: one
// bidirectional stream with meshcast's framing (u32 N, u8 opcode, body).
// With datagrams, ReadFrame also returns the session's datagrams (as binary
// frames): two pump goroutines feed it, so one reader still sees
// everything in the order it was read.
type wtConn struct {
	tr   *webtransport.Transport
	sess *webtransport.Session
	str  *webtransport.Stream
	br   *bufio.Reader

	hdr  [5]byte
	rbuf []byte

	wmu  sync.Mutex
	wbuf []byte

	in    chan wtRead // datagram mode only
	done  chan struct{}
	close sync.Once
	pumps sync.WaitGroup
}

type wtRead struct {
	op  ws.OpCode
	b   []byte
	err error
}

// dialWT opens a session and its stream.
func dialWT(ctx context.Context, t *wtTarget, timeout time.Duration, readBuf int, datagrams bool) (*wtConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &webtransport.Transport{
		TLSClientConfig: t.tlsConfig(),
		QUICConfig:      &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true, MaxIdleTimeout: time.Minute},
	}
	_, sess, err := tr.Dial(ctx, t.url, nil)
	if err != nil {
		tr.Close()
		return nil, err
	}
	str, err := sess.OpenStreamSync(ctx)
	if err != nil {
		sess.CloseWithError(0, "")
		tr.Close()
		return nil, err
	}
	c := &wtConn{
		tr: tr, sess: sess, str: str,
		br:   bufio.NewReaderSize(str, readBuf),
		rbuf: make([]byte, 0, 512),
		wbuf: make([]byte, 0, 256),
		done: make(chan struct{}),
	}
	if datagrams {
		c.in = make(chan wtRead, 1024)
		c.pumps.Add(2)
		go c.pumpStream()
		go c.pumpDatagrams()
	}
	return c, nil
}

func (c *wtConn) WriteFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := binary.BigEndian.AppendUint32(c.wbuf[:0], uint32(1+len(p)))
	b = append(b, byte(op))
	b = append(b, p...)
	c.wbuf = b
	_, err := c.str.Write(b)
	return err
}

// SendDatagram sends one datagram (a kind-3 frame).
func (c *wtConn) SendDatagram(p []byte) error { return c.sess.SendDatagram(p) }

func (c *wtConn) ReadFrame() (ws.OpCode, []byte, error) {
	if c.in == nil {
		return c.readStream()
	}
	select {
	case r := <-c.in:
		return r.op, r.b, r.err
	case <-c.done:
		return 0, nil, errConnClosed
	}
}

// errConnClosed is what reads return after Close.
var errConnClosed = errors.New("bench: connection closed")

// readStream reads one frame from the stream into c.rbuf.
func (c *wtConn) readStream() (ws.OpCode, []byte, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(c.hdr[:4])
	if n == 0 || n-1 > maxFrame {
		return 0, nil, fmt.Errorf("bench: WebTransport frame length %d", n)
	}
	if cap(c.rbuf) < int(n-1) {
		c.rbuf = make([]byte, 0, max(int(n-1), 2*cap(c.rbuf)))
	}
	b := c.rbuf[:n-1]
	if _, err := io.ReadFull(c.br, b); err != nil {
		return 0, nil, err
	}
	switch op := c.hdr[4]; op {
	case byte(ws.OpText), byte(ws.OpBinary):
		return ws.OpCode(op), b, nil
	case byte(ws.OpClose):
		code, reason := ws.StatusCode(0), ""
		if len(b) >= 2 {
			code, reason = ws.StatusCode(binary.BigEndian.Uint16(b)), string(b[2:])
		}
		return 0, nil, fmt.Errorf("%w (code %d %q)", ErrClosed, code, reason)
	default:
		return 0, nil, fmt.Errorf("bench: WebTransport frame opcode %d", op)
	}
}

// pumpStream copies stream frames into c.in until the stream fails.
func (c *wtConn) pumpStream() {
	defer c.pumps.Done()
	for {
		op, b, err := c.readStream()
		r := wtRead{op: op, b: append([]byte(nil), b...), err: err}
		select {
		case c.in <- r:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// pumpDatagrams copies datagrams into c.in until the session ends.
func (c *wtConn) pumpDatagrams() {
	defer c.pumps.Done()
	for {
		d, err := c.sess.ReceiveDatagram(c.sess.Context())
		if err != nil {
			return
		}
		select {
		case c.in <- wtRead{op: ws.OpBinary, b: d}:
		case <-c.done:
			return
		}
	}
}

func (c *wtConn) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *wtConn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// Close closes the session without a close frame.
func (c *wtConn) Close() error {
	c.close.Do(func() {
		close(c.done)
		c.sess.CloseWithError(0, "")
		c.tr.Close()
		c.pumps.Wait()
	})
	return nil
}

// CloseGracefully sends a close frame (best effort), then closes the
// session, as clientjs does.
func (c *wtConn) CloseGracefully() error {
	_ = c.str.SetWriteDeadline(time.Now().Add(time.Second))
	body := binary.BigEndian.AppendUint16(nil, uint16(ws.StatusNormalClosure))
	_ = c.WriteFrame(ws.OpClose, body)
	return c.Close()
}

// datagramCounters reads the node's datagram counters from /metrics (the
// node behind a meshcast WebSocket URL): sent, and dropped for any reason.
func datagramCounters(ctx context.Context, wsURL string) (sent, dropped float64, err error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return 0, 0, err
	}
	u.Scheme = strings.Replace(strings.Replace(u.Scheme, "wss", "https", 1), "ws", "http", 1)
	u.Path, u.RawQuery = "/metrics", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		var f float64
		if _, err := fmt.Sscan(v, &f); err != nil {
			continue
		}
		switch {
		case name == "meshcast_datagrams_sent_total":
			sent += f
		case strings.HasPrefix(name, "meshcast_datagrams_dropped_total{"):
			dropped += f
		}
	}
	return sent, dropped, nil
}
