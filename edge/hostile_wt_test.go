package edge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// dialQUIC opens a bare QUIC connection speaking h3's ALPN to the node's
// WebTransport port, kept alive by pings, that sends nothing of HTTP/3
// by itself. It is closed at the end of the test.
func (ts *wtTestServer) dialQUIC(t *testing.T) (*quic.Conn, error) {
	t.Helper()
	tlsConf := ts.pinnedTLS(nil)
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	conf := wtQUIC()
	conf.KeepAlivePeriod = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	qc, err := quic.DialAddr(ctx, ts.udp, tlsConf, conf)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc, nil
}

// quicClosedBy waits for the node to close qc and returns its error.
func quicClosedBy(qc *quic.Conn, d time.Duration) (*quic.ApplicationError, time.Duration, error) {
	start := time.Now()
	select {
	case <-qc.Context().Done():
	case <-time.After(d):
		return nil, 0, fmt.Errorf("QUIC connection still open after %v", d)
	}
	var ae *quic.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || !ae.Remote {
		return nil, 0, fmt.Errorf("QUIC connection ended with %v, not closed by the node", err)
	}
	return ae, time.Since(start), nil
}

// TestHostileWebTransport attacks the WebTransport listener — the QUIC
// port, the CONNECT handshake, the stream framing and datagrams — with
// garbage, truncated, oversized, slow and flood input while the
// bystanders use the node: each attacker gets its status, close code or
// QUIC error, the bystanders every tick, and nothing of the attack stays
// behind.
func TestHostileWebTransport(t *testing.T) {
	ts := startWTServer(t, hostileConfig)
	b := startBystanders(t, ts)

	t.Run("garbage packets", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		to, _ := net.ResolveUDPAddr("udp", ts.udp)
		p := make([]byte, 1200)
		for i := range 500 {
			for j := range p {
				p[j] = byte(rand.IntN(256))
			}
			if i%2 == 0 {
				p[0] |= 0xc0 // a long header: looks like an Initial
			}
			pc.WriteTo(p, to)
		}
		b.progress(t, "garbage UDP packets")
	})
	t.Run("wrong path", func(t *testing.T) {
		_, err := ts.dialWTPath(t, "/realtime/v1/nope", "apikey=test&vsn=2.0.0")
		var ref *upgradeRefused
		if !errors.As(err, &ref) || ref.status != 404 {
			t.Errorf("CONNECT to another path: %v, want 404", err)
		}
	})
	t.Run("no request", func(t *testing.T) {
		// A QUIC connection that never sends a request is closed after
		// the header timeout, however busy it keeps the connection.
		qc, err := ts.dialQUIC(t)
		if err != nil {
			t.Fatal(err)
		}
		ae, d, err := quicClosedBy(qc, testWait)
		if err != nil || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeRequestIncomplete) {
			t.Errorf("a connection without a request: %v after %v (%v), want H3_REQUEST_INCOMPLETE at the 1 s header timeout", ae, d, err)
		}
	})
	t.Run("slow headers", func(t *testing.T) {
		// A request stream whose HEADERS frame announces 100 bytes and
		// trickles them: the connection is closed at the header timeout.
		qc, err := ts.dialQUIC(t)
		if err != nil {
			t.Fatal(err)
		}
		str, err := qc.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		str.Write([]byte{0x01, 0x40, 100}) // HEADERS, length 100
		go func() {
			for range 100 {
				if _, err := str.Write([]byte{0}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		ae, d, err := quicClosedBy(qc, testWait)
		if err != nil || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeRequestIncomplete) {
			t.Errorf("trickled request headers: %v after %v (%v), want H3_REQUEST_INCOMPLETE at the 1 s header timeout", ae, d, err)
		}
	})
	t.Run("no stream", func(t *testing.T) {
		// A session that ends before it opens its stream.
		c, err := ts.dialWTNoStream(t)
		if err != nil {
			t.Fatal(err)
		}
		c.CloseWithError(0, "")
		b.progress(t, "a session without a stream")
	})
	t.Run("truncated", func(t *testing.T) {
		// Half a frame, then the client resets its stream. (The heartbeat
		// first makes sure the node has the stream: a stream reset before
		// its first byte is never seen, and the session is closed when no
		// stream comes within streamOpenTimeout.)
		c := ts.connectWT(t)
		c.write(heartbeatFrame)
		expectFrame(t, c, "heartbeat reply", isHeartbeatReply)
		c.writeRaw(append(binary.BigEndian.AppendUint32(nil, 100), wtOpText, '[', 'n'))
		c.str.CancelWrite(0)
		if _, err := c.ended(testWait); err != nil {
			t.Errorf("after a reset mid-frame: %v", err)
		}
	})
	t.Run("garbage frames", func(t *testing.T) {
		cases := []struct {
			name  string
			bytes []byte
			code  ws.StatusCode
		}{
			{"random", []byte{0xde, 0xad, 0xbe, 0xef, 0x01}, ws.StatusMessageTooBig},
			{"length 0", []byte{0, 0, 0, 0}, ws.StatusProtocolError},
			{"one byte too many", wtFrame(wtOpText, []byte(strings.Repeat("x", 64<<10+1))), ws.StatusMessageTooBig},
			{"not JSON", wtFrame(wtOpText, []byte("\x01garbage")), ws.StatusUnsupportedData},
		}
		for _, tc := range cases {
			c := ts.connectWT(t)
			c.writeRaw(tc.bytes)
			if cl, _, err := c.closed(testWait); err != nil || cl.code != tc.code {
				t.Errorf("%s: %v %v, want close %d", tc.name, cl, err, tc.code)
			}
			c.sess.CloseWithError(0, "")
		}
	})
	t.Run("slow message", func(t *testing.T) {
		c := ts.connectWT(t)
		frame := wtFrame(wtOpText, []byte(`[null,"1","phoenix","heartbeat",{"pad":"`+strings.Repeat("x", 160)+`"}]`))
		go func() {
			for i := range frame {
				if c.writeRaw(frame[i:i+1]) != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		start := time.Now()
		cl, _, err := c.closed(testWait)
		if err != nil || cl.code != ws.StatusPolicyViolation || cl.reason != "message not completed in time" {
			t.Errorf("trickled frame: %v %v, want 1008 message not completed in time", cl, err)
		}
		t.Logf("trickled frame closed after %v", time.Since(start))
		c.sess.CloseWithError(0, "")
	})
	t.Run("garbage datagrams", func(t *testing.T) {
		c := ts.connectWT(t)
		mustJoin(t, c, "1", bystanderTopic, unreliableConfig)
		d := make([]byte, 800)
		for range 300 {
			for j := range d {
				d[j] = byte(rand.IntN(256))
			}
			c.sess.SendDatagram(d)
		}
		// Told (a few times, not 300), and still connected.
		f := awaitFrame(t, c, "system", func(f wsFrame) bool { return f.Event == "system" })
		if !strings.HasPrefix(jsonField(f.Payload, "message"), `"Datagram dropped: `) {
			t.Errorf("garbage datagram answered %s", f)
		}
		c.write(heartbeatFrame)
		awaitFrame(t, c, "heartbeat reply", isHeartbeatReply)
		b.progress(t, "garbage datagrams")
		c.sess.CloseWithError(0, "")
	})
	t.Run("event flood", func(t *testing.T) {
		c := ts.connectWT(t)
		mustJoin(t, c, "1", bystanderTopic, `{}`)
		var frames []byte
		for i := range 1000 {
			frames = append(frames, wtFrame(wtOpText, []byte(broadcastFrame("1", strconv.Itoa(i), bystanderTopic, "flood", `{}`)))...)
		}
		if err := c.writeRaw(frames); err != nil {
			t.Fatal(err)
		}
		f := awaitFrame(t, c, "system", func(f wsFrame) bool { return f.Event == "system" })
		if jsonField(f.Payload, "message") != `"Too many messages per second"` {
			t.Errorf("flood answered %s", f)
		}
		if f := awaitFrame(t, c, "phx_close", notTick); f.Event != "phx_close" {
			t.Errorf("after the flood limit: %s, want phx_close", f)
		}
		b.progress(t, "an event flood")
		c.sess.CloseWithError(0, "")
	})
	t.Run("session flood", func(t *testing.T) {
		b.alone(t, ts)
		release := connectionFlood(t, func() (func(), error) {
			c, err := ts.dialWT(t, "apikey=test&vsn=2.0.0", nil)
			if err != nil {
				return nil, err
			}
			return func() { c.sess.CloseWithError(0, "") }, nil
		})
		b.progress(t, "a session flood")
		release()
		if !waitFor(testWait, func() bool {
			c, err := ts.dialWT(t, "apikey=test&vsn=2.0.0", nil)
			if err == nil {
				c.sess.CloseWithError(0, "")
			}
			return err == nil
		}) {
			t.Error("no session admitted after the flood ended")
		}
	})
	b.check(t)
}

// TestWebTransportQUICConnectionLimit: QUIC connections count against
// --max-connections before they open a session: past it the node closes
// new ones at once with H3_EXCESSIVE_LOAD, the sessions it has go on,
// and the places come back when the connections go.
func TestWebTransportQUICConnectionLimit(t *testing.T) {
	ts := startWTServer(t, func(c *Config) {
		c.MaxConnections = 8
		c.AddressShare = 0                    // every client is 127.0.0.1
		c.HTTPReadHeaderTimeout = time.Minute // bare connections stay while the test dials
	})
	b := startBystanders(t, ts) // two sockets and one session
	b.alone(t, ts)
	// Twelve bare connections, one after the other: seven fit beside the
	// bystanders' session, five are refused (right after their handshake,
	// which may be after the dial returned).
	var conns []*quic.Conn
	refusedAtDial := 0
	for range 12 {
		qc, err := ts.dialQUIC(t)
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && ae.ErrorCode == quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) {
			refusedAtDial++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, qc)
	}
	refused := func() (n int, other []error) {
		for _, qc := range conns {
			if qc.Context().Err() == nil {
				continue
			}
			var ae *quic.ApplicationError
			if err := context.Cause(qc.Context()); errors.As(err, &ae) && ae.Remote &&
				ae.ErrorCode == quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) && ae.ErrorMessage == "Too many connected users" {
				n++
			} else {
				other = append(other, err)
			}
		}
		return n + refusedAtDial, other
	}
	var n int
	var other []error
	waitFor(testWait, func() bool { n, other = refused(); return n >= 5 || len(other) > 0 })
	if n != 5 || len(other) > 0 {
		t.Fatalf("of 12 QUIC connections beside one session under a limit of 8, %d refused with H3_EXCESSIVE_LOAD Too many connected users (want 5), others closed with %v", n, other)
	}
	b.progress(t, "a QUIC connection flood")
	if n, other = refused(); n != 5 || len(other) > 0 {
		t.Errorf("later, %d refused and others closed with %v: the admitted seven must stay", n, other)
	}
	for _, qc := range conns {
		qc.CloseWithError(0, "")
	}
	if !waitFor(testWait, func() bool {
		c, err := ts.dialWT(t, "apikey=test&vsn=2.0.0", nil)
		if err == nil {
			c.sess.CloseWithError(0, "")
		}
		return err == nil
	}) {
		t.Error("no session admitted after the QUIC connections closed")
	}
	b.check(t)
}
