package edge

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
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// Fixtures for WebTransport: the test server also serving WebTransport on
// a UDP port of 127.0.0.1, and a webtransport-go client that speaks the
// stream framing. As in client_test.go, they move and decode bytes; tests
// assert what they expect themselves.

// wtTestServer is a testServer with a WebTransport listener.
type wtTestServer struct {
	*testServer
	udp string // host:port of the WebTransport listener
}

// startWTServer starts a server (DefaultConfig changed by tweak) serving
// WebSocket on TCP and WebTransport on UDP until the test ends.
func startWTServer(t *testing.T, tweak func(*Config)) *wtTestServer {
	t.Helper()
	return serveWT(t, startServer(t, tweak))
}

// serveWT adds a WebTransport listener to a running test server; the
// server is shut down in t.Cleanup.
func serveWT(t *testing.T, ts *testServer) *wtTestServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- ts.ServeWebTransport(pc) }()
	if !waitFor(testWait, func() bool { return ts.webTransport() != nil }) {
		t.Fatal("ServeWebTransport did not start")
	}
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeWebTransport returned %v, want http.ErrServerClosed", err)
		}
	})
	return &wtTestServer{testServer: ts, udp: pc.LocalAddr().String()}
}

// certHash is the cert-hash endpoint's answer.
type certHash struct {
	URL    string `json:"url"`
	Hashes []struct {
		Algorithm string `json:"algorithm"`
		Value     string `json:"value"`
	} `json:"hashes"`
	NotAfter string `json:"not_after"`
}

func (ts *wtTestServer) certHash(t *testing.T) (certHash, httpResult) {
	t.Helper()
	r, err := ts.do("GET", certHashPath, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var ch certHash
	if r.status == http.StatusOK {
		if err := json.Unmarshal([]byte(r.body), &ch); err != nil {
			t.Fatalf("cert-hash body %q: %v", r.body, err)
		}
	}
	return ch, r
}

// pinnedTLS trusts exactly the certificates whose SHA-256 the node
// publishes at the time of the handshake, as a browser given
// serverCertificateHashes does; seen receives the hash of the leaf
// presented.
func (ts *wtTestServer) pinnedTLS(seen *[32]byte) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if seen != nil {
				*seen = sum
			}
			hashes, _ := ts.webTransport().certs.published()
			for _, h := range hashes {
				if h == sum {
					return nil
				}
			}
			return fmt.Errorf("certificate %s is not published at cert-hash", base64.StdEncoding.EncodeToString(sum[:]))
		},
	}
}

// wtClient is one WebTransport session with its stream.
type wtClient struct {
	t    *testing.T
	tr   *webtransport.Transport
	qc   *quic.Conn // the session's QUIC connection
	sess *webtransport.Session
	str  *webtransport.Stream
	br   *bufio.Reader
	cert [32]byte // hash of the certificate the server presented
	// close ends the session, its connection and its transports (also
	// done in t.Cleanup).
	close func()
}

// wtQUIC is the client's QUIC config: datagrams and partial-delivery
// resets are what WebTransport requires.
func wtQUIC() *quic.Config {
	return &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true}
}

// dialWT opens a session on WebTransportPath with the raw query and its
// stream. A refused session returns *upgradeRefused. The session is
// closed in t.Cleanup.
func (ts *wtTestServer) dialWT(t *testing.T, query string, hdr http.Header) (*wtClient, error) {
	c, err := ts.dialSession(t, WebTransportPath, query, hdr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if c.str, err = c.sess.OpenStreamSync(ctx); err != nil {
		return nil, err
	}
	c.br = bufio.NewReader(c.str)
	return c, nil
}

// dialWTPath opens a session on another path than WebTransportPath.
func (ts *wtTestServer) dialWTPath(t *testing.T, path, query string) (*webtransport.Session, error) {
	c, err := ts.dialSession(t, path, query, nil)
	if err != nil {
		return nil, err
	}
	return c.sess, nil
}

// dialWTNoStream opens a session and no stream.
func (ts *wtTestServer) dialWTNoStream(t *testing.T) (*webtransport.Session, error) {
	return ts.dialWTPath(t, WebTransportPath, "apikey=test&vsn=2.0.0")
}

// dialSession opens a session on path, without its stream.
func (ts *wtTestServer) dialSession(t *testing.T, path, query string, hdr http.Header) (*wtClient, error) {
	return ts.dialSessionFrom(t, "", path, query, hdr)
}

// dialSessionFrom is dialSession from the local IP from (any when empty).
func (ts *wtTestServer) dialSessionFrom(t *testing.T, from, path, query string, hdr http.Header) (*wtClient, error) {
	c := &wtClient{t: t}
	c.tr = &webtransport.Transport{QUICConfig: wtQUIC()}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	u := "https://" + ts.udp + path
	if query != "" {
		u += "?" + query
	}
	// Transport.Dial closes the connection on a refusal before its body
	// can be read: dial the QUIC connection here and own it.
	tlsConf := ts.pinnedTLS(&c.cert)
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	qc, closeTr, err := dialQUICFrom(ctx, from, ts.udp, tlsConf)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*wtClient, error) {
		qc.CloseWithError(0, "")
		c.tr.Close()
		closeTr()
		return nil, err
	}
	cc, err := c.tr.NewClientConn(qc)
	if err != nil {
		return fail(err)
	}
	rsp, sess, err := cc.Dial(ctx, u, hdr)
	if err != nil {
		if rsp != nil {
			b, _ := io.ReadAll(io.LimitReader(rsp.Body, 1<<16))
			rsp.Body.Close()
			return fail(&upgradeRefused{status: rsp.StatusCode, body: string(b)})
		}
		return fail(err)
	}
	c.sess, c.qc = sess, qc
	context.AfterFunc(sess.Context(), func() { qc.CloseWithError(0, "") })
	var once sync.Once
	c.close = func() {
		once.Do(func() {
			sess.CloseWithError(0, "")
			qc.CloseWithError(0, "")
			c.tr.Close()
			closeTr()
		})
	}
	t.Cleanup(c.close)
	return c, nil
}

// dialQUICFrom dials a WebTransport client's QUIC connection from the
// local IP from, or from any address when from is empty.
// closeTr closes the transport dialed on (a no-op for DialAddrEarly's,
// which closes with its connection).
func dialQUICFrom(ctx context.Context, from, to string, tlsConf *tls.Config) (qc *quic.Conn, closeTr func(), err error) {
	if from == "" {
		qc, err = quic.DialAddrEarly(ctx, to, tlsConf, wtQUIC())
		return qc, func() {}, err
	}
	pc, err := net.ListenPacket("udp", net.JoinHostPort(from, "0"))
	if err != nil {
		return nil, nil, err
	}
	tr := &quic.Transport{Conn: pc}
	var once sync.Once
	closeTr = func() { once.Do(func() { tr.Close(); pc.Close() }) }
	addr, err := net.ResolveUDPAddr("udp", to)
	if err == nil {
		qc, err = tr.DialEarly(ctx, addr, tlsConf, wtQUIC())
	}
	if err != nil {
		closeTr()
		return nil, nil, err
	}
	return qc, closeTr, nil
}

// connectWT opens a v2 session and fails the test if it is refused.
func (ts *wtTestServer) connectWT(t *testing.T) *wtClient {
	t.Helper()
	c, err := ts.dialWT(t, "apikey=test&vsn=2.0.0", nil)
	if err != nil {
		t.Fatalf("dial WebTransport: %v", err)
	}
	return c
}

// wtFrame encodes one stream frame.
func wtFrame(op byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(b, uint32(1+len(body)))
	b[4] = op
	return append(b, body...)
}

func (c *wtClient) writeRaw(b []byte) error {
	c.str.SetWriteDeadline(time.Now().Add(testWait))
	_, err := c.str.Write(b)
	return err
}

func (c *wtClient) write(text string) {
	c.t.Helper()
	if err := c.writeRaw(wtFrame(wtOpText, []byte(text))); err != nil {
		c.t.Fatalf("write %s: %v", text, err)
	}
}

func (c *wtClient) writeBinary(b []byte) {
	c.t.Helper()
	if err := c.writeRaw(wtFrame(wtOpBinary, b)); err != nil {
		c.t.Fatalf("write binary: %v", err)
	}
}

// wtClosed is the server's close frame, as an error of read.
type wtClosed struct {
	code   ws.StatusCode
	reason string
}

func (e *wtClosed) Error() string { return fmt.Sprintf("close frame %d %q", e.code, e.reason) }

// read reads the next frame within d. A close frame is *wtClosed. Safe
// from any goroutine.
func (c *wtClient) read(d time.Duration) ([]byte, byte, error) {
	c.str.SetReadDeadline(time.Now().Add(d))
	var h [5]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return nil, 0, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n == 0 || n > 64<<20 {
		return nil, 0, fmt.Errorf("server frame length %d", n)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, 0, err
	}
	switch h[4] {
	case wtOpText, wtOpBinary:
		return body, h[4], nil
	case wtOpClose:
		if len(body) < 2 {
			return nil, 0, fmt.Errorf("close frame body %q", body)
		}
		return nil, wtOpClose, &wtClosed{ws.StatusCode(binary.BigEndian.Uint16(body)), string(body[2:])}
	}
	return nil, 0, fmt.Errorf("server frame opcode %d", h[4])
}

// next reads and decodes the next frame; anything else fails the test.
func (c *wtClient) next() wsFrame {
	c.t.Helper()
	data, op, err := c.read(testWait)
	if err != nil {
		c.t.Fatalf("reading the next frame: %v", err)
	}
	f, err := decodeFrame(data, ws.OpCode(op), false)
	if err != nil {
		c.t.Fatalf("decoding %q: %v", data, err)
	}
	return f
}

// closed reads until the server's close frame and returns it, with the
// number of frames skipped before it.
func (c *wtClient) closed(d time.Duration) (*wtClosed, int, error) {
	deadline := time.Now().Add(d)
	skipped := 0
	for {
		_, _, err := c.read(time.Until(deadline))
		var cl *wtClosed
		switch {
		case errors.As(err, &cl):
			return cl, skipped, nil
		case err != nil:
			return nil, skipped, err
		}
		skipped++
	}
}

// ended waits for the session to end and returns the server's session
// error (nil when it ended without one).
func (c *wtClient) ended(d time.Duration) (*webtransport.SessionError, error) {
	select {
	case <-c.sess.Context().Done():
	case <-time.After(d):
		return nil, fmt.Errorf("session still open after %v", d)
	}
	// A closed session answers AcceptStream with why it closed.
	_, err := c.sess.AcceptStream(context.Background())
	var se *webtransport.SessionError
	if errors.As(err, &se) {
		return se, nil
	}
	return nil, nil
}

// streamEnds reports whether the server ended its side of the stream
// (FIN) after what was read: the next read is io.EOF.
func (c *wtClient) streamEnds(d time.Duration) error {
	c.str.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	n, err := c.br.Read(b[:])
	if n > 0 {
		return fmt.Errorf("read a byte %#x after the close frame", b[0])
	}
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("stream did not end cleanly: %v", err)
	}
	return nil
}
