package client

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
	"net"
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

// WTEndpoint is where a node's WebTransport sessions go and which
// certificates to trust: what its cert-hash endpoint answers.
type WTEndpoint struct {
	url    string // session URL with the WebSocket URL's query (apikey, vsn)
	hashes [][sha256.Size]byte
}

// DiscoverWT asks the node behind a meshcast WebSocket URL for its
// WebTransport endpoint, as clientjs does: GET <base>/webtransport/cert-hash.
func DiscoverWT(ctx context.Context, wsURL string) (*WTEndpoint, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(strings.Replace(u.Scheme, "wss", "https", 1), "ws", "http", 1)
	query := u.RawQuery
	u.RawQuery = ""
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/websocket") + "/webtransport/cert-hash"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: WebTransport discovery: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: GET %s: %d %s", u, resp.StatusCode, body)
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
		return nil, fmt.Errorf("client: GET %s: %w", u, err)
	}
	if ans.Enabled != nil && !*ans.Enabled {
		return nil, fmt.Errorf("client: GET %s: the node has no WebTransport: %s", u, ans.Message)
	}
	e := &WTEndpoint{url: ans.URL}
	if query != "" {
		e.url += "?" + query
	}
	for _, h := range ans.Hashes {
		b, err := base64.StdEncoding.DecodeString(h.Value)
		if h.Algorithm != "sha-256" || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("client: GET %s: bad hash %+v", u, h)
		}
		e.hashes = append(e.hashes, [sha256.Size]byte(b))
	}
	return e, nil
}

// tlsConfig trusts the pinned hashes (serverCertificateHashes), or the
// system roots when the node publishes none (a CA certificate).
func (e *WTEndpoint) tlsConfig() *tls.Config {
	if len(e.hashes) == 0 {
		return &tls.Config{NextProtos: []string{http3.NextProtoH3}}
	}
	return &tls.Config{
		NextProtos:         []string{http3.NextProtoH3},
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > 0 {
				sum := sha256.Sum256(raw[0])
				for _, h := range e.hashes {
					if h == sum {
						return nil
					}
				}
			}
			return errors.New("client: the server's certificate is not one the node published")
		},
	}
}

// WT is a client over a WebTransport session: one bidirectional stream
// with meshcast's framing (u32 N, u8 opcode, body), each session on its
// own QUIC connection and UDP socket as browsers have. With datagrams,
// ReadFrame also returns the session's datagrams (as binary frames): two
// pump goroutines feed it, so one reader still sees everything in the
// order it was read.
type WT struct {
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

// DialWT opens a session to e and its stream.
func DialWT(ctx context.Context, e *WTEndpoint, timeout time.Duration, readBuf int, datagrams bool) (*WT, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &webtransport.Transport{
		TLSClientConfig: e.tlsConfig(),
		QUICConfig:      &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true, MaxIdleTimeout: time.Minute},
	}
	_, sess, err := tr.Dial(ctx, e.url, nil)
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
	c := &WT{tr: tr, sess: sess, str: str, br: bufio.NewReaderSize(str, readBuf), rbuf: make([]byte, 0, 512),
		wbuf: make([]byte, 0, 256), done: make(chan struct{})}
	if datagrams {
		c.in = make(chan wtRead, 1024)
		c.pumps.Add(2)
		go c.pumpStream()
		go c.pumpDatagrams()
	}
	return c, nil
}

func (c *WT) WriteFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := binary.BigEndian.AppendUint32(c.wbuf[:0], uint32(1+len(p)))
	b = append(b, byte(op))
	c.wbuf = append(b, p...)
	_, err := c.str.Write(c.wbuf)
	return err
}

// SendDatagram sends one datagram (a kind-3 frame).
func (c *WT) SendDatagram(p []byte) error { return c.sess.SendDatagram(p) }

func (c *WT) ReadFrame() (ws.OpCode, []byte, error) {
	if c.in == nil {
		return c.readStream()
	}
	select {
	case r := <-c.in:
		return r.op, r.b, r.err
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

// readStream reads one frame from the stream into c.rbuf.
func (c *WT) readStream() (ws.OpCode, []byte, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(c.hdr[:4])
	if n == 0 || n-1 > maxFrame {
		return 0, nil, fmt.Errorf("client: WebTransport frame length %d", n)
	}
	if cap(c.rbuf) < int(n-1) {
		c.rbuf = make([]byte, 0, max(int(n-1), 2*cap(c.rbuf)))
	}
	b := c.rbuf[:n-1]
	if _, err := io.ReadFull(c.br, b); err != nil {
		return 0, nil, err
	}
	switch op := ws.OpCode(c.hdr[4]); op {
	case ws.OpText, ws.OpBinary:
		return op, b, nil
	case ws.OpClose:
		e := &CloseError{}
		if len(b) >= 2 {
			e.Code, e.Reason = int(binary.BigEndian.Uint16(b)), string(b[2:])
		}
		return 0, nil, e
	default:
		return 0, nil, fmt.Errorf("client: WebTransport frame opcode %d", op)
	}
}

// pumpStream copies stream frames into c.in until the stream fails.
func (c *WT) pumpStream() {
	defer c.pumps.Done()
	for {
		op, b, err := c.readStream()
		select {
		case c.in <- wtRead{op: op, b: append([]byte(nil), b...), err: err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// pumpDatagrams copies datagrams into c.in until the session ends.
func (c *WT) pumpDatagrams() {
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

func (c *WT) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *WT) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// Close closes the session without a close frame.
func (c *WT) Close() error {
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
func (c *WT) CloseGracefully() error {
	_ = c.str.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.WriteFrame(ws.OpClose, binary.BigEndian.AppendUint16(nil, uint16(ws.StatusNormalClosure)))
	return c.Close()
}
