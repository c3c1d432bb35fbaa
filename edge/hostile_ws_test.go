package edge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// hostileConfig shortens the timeouts an attacker runs into, so that the
// hostile-listener tests see them fire within seconds. The connection
// limit leaves room for the bystanders and a few probes.
func hostileConfig(c *Config) {
	// Long enough for a legitimate dial on a loaded 2-core host.
	c.HTTPReadHeaderTimeout = time.Second
	c.HTTPReadTimeout = time.Second
	c.HTTPWriteTimeout = time.Second
	c.HTTPIdleTimeout = 3 * time.Second // after the header timeout: a connection without requests meets that one
	c.MessageTimeout = time.Second
	c.IdleTimeout = time.Minute // longer than any test: a timeout seen is the one under test
	c.MaxFrameBytes = 64 << 10
	c.EventsPerSecond = 300 // the bystanders tick at 100/s
	c.MaxConnections = 40
	// The floods and the bystanders all come from 127.0.0.1: the node-wide
	// limit is under test here, the per-address share in
	// TestOneAddressGetsItsShare.
	c.AddressShare = 0
}

// rawTCP dials the node's HTTP port; the connection is closed at the end
// of the test.
func rawTCP(t *testing.T, ts *testServer) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// statusOf reads an HTTP response's status line from nc.
func statusOf(nc net.Conn) (int, error) {
	nc.SetReadDeadline(time.Now().Add(testWait))
	line, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil {
		return 0, err
	}
	var status int
	if _, err := fmt.Sscanf(line, "HTTP/1.1 %d", &status); err != nil {
		return 0, fmt.Errorf("status line %q", line)
	}
	return status, nil
}

// closedByNode waits for the node to close nc (EOF or a reset), reading
// and discarding whatever comes before, and returns how long it took.
func closedByNode(nc net.Conn, d time.Duration) (time.Duration, error) {
	start := time.Now()
	nc.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, fmt.Errorf("still open after %v", d)
	}
	return time.Since(start), nil
}

// trickle writes b one byte every gap until it is written or a write
// fails (the node closed the connection); it reports how many bytes went.
func trickle(nc net.Conn, b []byte, gap time.Duration) int {
	for i := range b {
		nc.SetWriteDeadline(time.Now().Add(testWait))
		if _, err := nc.Write(b[i : i+1]); err != nil {
			return i
		}
		time.Sleep(gap)
	}
	return len(b)
}

const upgradeRequest = "GET /realtime/v1/websocket?apikey=test&vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n" +
	"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

// TestHostileWebSocket attacks the WebSocket listener with garbage,
// truncated, oversized, slow and flood input while the bystanders use the
// node: each attacker gets its HTTP status or close code, the bystanders
// get every tick, and nothing of the attack stays behind.
func TestHostileWebSocket(t *testing.T) {
	ts := startWTServer(t, hostileConfig)
	b := startBystanders(t, ts)

	t.Run("garbage request", func(t *testing.T) {
		nc := rawTCP(t, ts.testServer)
		junk := make([]byte, 4096)
		for i := range junk {
			junk[i] = byte(rand.IntN(256))
		}
		nc.Write(append(junk, "\r\n\r\n"...))
		if st, err := statusOf(nc); err != nil || st != 400 {
			t.Errorf("garbage instead of a request: %d %v, want 400", st, err)
		}
	})
	t.Run("not an upgrade", func(t *testing.T) {
		r, err := ts.do("GET", "/realtime/v1/websocket?apikey=test&vsn=2.0.0", "", "")
		if err != nil || r.status != 400 {
			t.Errorf("GET without Upgrade: %d %q %v, want 400", r.status, r.body, err)
		}
	})
	t.Run("oversized headers", func(t *testing.T) {
		nc := rawTCP(t, ts.testServer)
		go func() {
			fmt.Fprintf(nc, "GET /realtime/v1/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 2<<20))
		}()
		// The node answers before it has read everything, and closes: the
		// answer may be lost to the reset that closing with unread bytes
		// makes, which ends the attack just as well.
		if st, err := statusOf(nc); st != 431 && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
			t.Errorf("2 MiB of headers: %d %v, want 431 or the connection closed", st, err)
		}
	})
	t.Run("garbage frames", func(t *testing.T) {
		cases := []struct {
			name  string
			bytes []byte
			code  ws.StatusCode
		}{
			{"unmasked", ws.MustCompileFrame(ws.NewTextFrame([]byte(heartbeatFrame))), ws.StatusProtocolError},
			{"reserved bits", []byte{0xf1, 0x80, 1, 2, 3, 4}, ws.StatusProtocolError},
			{"unknown opcode", []byte{0x83, 0x80, 0, 0, 0, 0}, ws.StatusProtocolError},
			{"long ping", append([]byte{0x89, 0xfe, 0, 200, 0, 0, 0, 0}, make([]byte, 200)...), ws.StatusProtocolError},
			{"not JSON", maskedText("\x00not json at all"), ws.StatusUnsupportedData},
			{"lying length", []byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, ws.StatusMessageTooBig},
			{"one byte too many", maskedText(strings.Repeat("x", 64<<10+1)), ws.StatusMessageTooBig},
		}
		for _, tc := range cases {
			c := ts.connect(t)
			c.nc.SetWriteDeadline(time.Now().Add(testWait))
			c.nc.Write(tc.bytes)
			if code, reason, _, err := c.closed(testWait); err != nil || code != tc.code {
				t.Errorf("%s: close %d %q %v, want %d", tc.name, code, reason, err, tc.code)
			}
			c.nc.Close()
		}
	})
	t.Run("truncated", func(t *testing.T) {
		// A frame header alone, a header and part of its body, part of an
		// upgrade request: the client goes away and the node lets go.
		for _, cut := range [][]byte{{0x81}, append([]byte{0x81, 0xfe, 0x03, 0xe8, 1, 2, 3, 4}, "[null"...)} {
			c := ts.connect(t)
			c.nc.Write(cut)
			c.nc.Close()
		}
		nc := rawTCP(t, ts.testServer)
		nc.Write([]byte(upgradeRequest[:40]))
		nc.Close()
		b.progress(t, "truncated input")
	})
	t.Run("slow headers", func(t *testing.T) {
		// Ten upgrade requests trickled at 20 bytes a second: each would
		// take 9 s to arrive. The node cuts them at the header timeout
		// (1 s), long before.
		var wg sync.WaitGroup
		for i := range 10 {
			nc := rawTCP(t, ts.testServer)
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				n := trickle(nc, []byte(upgradeRequest), 50*time.Millisecond)
				if n == len(upgradeRequest) {
					t.Errorf("slow-loris %d: the node took the whole request trickled over %v", i, time.Since(start))
				}
			}()
			go func() {
				if _, err := closedByNode(nc, testWait); err != nil {
					t.Errorf("slow-loris %d: %v, want it cut at the 1 s header timeout", i, err)
				}
				nc.Close()
			}()
		}
		b.progress(t, "slow-loris headers")
		wg.Wait()
	})
	t.Run("slow message", func(t *testing.T) {
		// One frame of 200 bytes, its body trickled at 10 bytes a second:
		// closed when the message timeout (1 s) passes, not the idle one.
		c := ts.connect(t)
		frame := maskedText(`[null,"1","phoenix","heartbeat",{"pad":"` + strings.Repeat("x", 160) + `"}]`)
		go trickle(c.nc, frame, 100*time.Millisecond)
		start := time.Now()
		code, reason, _, err := c.closed(testWait)
		if err != nil || code != ws.StatusPolicyViolation || reason != "message not completed in time" {
			t.Errorf("trickled frame: close %d %q %v, want 1008 message not completed in time", code, reason, err)
		}
		t.Logf("trickled frame closed after %v", time.Since(start))
	})
	t.Run("event flood", func(t *testing.T) {
		// On the bystanders' own topic: the flood is cut at the sender.
		c := ts.connect(t)
		mustJoin(t, c, "1", bystanderTopic, `{}`)
		var frames bytes.Buffer
		for i := range 1000 {
			frames.Write(maskedText(broadcastFrame("1", strconv.Itoa(i), bystanderTopic, "flood", `{}`)))
		}
		c.nc.SetWriteDeadline(time.Now().Add(testWait))
		c.nc.Write(frames.Bytes())
		f := awaitFrame(t, c, "system", func(f wsFrame) bool { return f.Event == "system" })
		if jsonField(f.Payload, "message") != `"Too many messages per second"` {
			t.Errorf("flood answered %s", f)
		}
		if f := awaitFrame(t, c, "phx_close", notTick); f.Event != "phx_close" {
			t.Errorf("after the flood limit: %s, want phx_close", f)
		}
		b.progress(t, "an event flood")
	})
	t.Run("join flood", func(t *testing.T) {
		c := ts.connect(t)
		var frames bytes.Buffer
		for i := range 300 {
			frames.Write(maskedText(joinFrame(strconv.Itoa(i), "realtime:j"+strconv.Itoa(i%50), `{}`)))
		}
		c.nc.SetWriteDeadline(time.Now().Add(testWait))
		c.nc.Write(frames.Bytes())
		if code, reason, _, err := c.closed(testWait); err != nil || code != ws.StatusPolicyViolation {
			t.Errorf("join flood: close %d %q %v, want 1008", code, reason, err)
		}
	})
	t.Run("connection flood", func(t *testing.T) {
		dial := func() (func(), error) {
			c, err := ts.dial(t, "/realtime/v1/websocket", "apikey=test&vsn=2.0.0")
			if err != nil {
				return nil, err
			}
			return func() { c.nc.Close() }, nil
		}
		b.alone(t, ts)
		release := connectionFlood(t, dial)
		b.progress(t, "a connection flood")
		release()
		// The places are free again.
		if !waitFor(testWait, func() bool {
			closeIt, err := dial()
			if err == nil {
				closeIt()
			}
			return err == nil
		}) {
			t.Error("no connection admitted after the flood ended")
		}
	})
	b.check(t)
}

// maskedText is one masked client text frame.
func maskedText(s string) []byte {
	return ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewTextFrame([]byte(s))))
}

// connectionFlood dials until the node refuses with 429 Too many
// connected users, and checks that it keeps refusing; at most 200 tries.
func connectionFlood(t *testing.T, dial func() (func(), error)) (release func()) {
	t.Helper()
	var open []func()
	release = func() {
		for _, c := range open {
			c()
		}
	}
	t.Cleanup(release)
	for range 200 {
		closeIt, err := dial()
		if err == nil {
			open = append(open, closeIt)
			continue
		}
		var ref *upgradeRefused
		if !errors.As(err, &ref) || ref.status != 429 || !jsonEq([]byte(ref.body), `{"error":"Too many connected users"}`) {
			t.Fatalf("connection %d: %v, want 429 Too many connected users", len(open)+1, err)
		}
		for range 5 {
			if _, err := dial(); !errors.As(err, &ref) || ref.status != 429 {
				t.Errorf("past the limit: %v, want 429", err)
			}
		}
		t.Logf("%d connections admitted, then 429", len(open))
		return release
	}
	t.Fatalf("200 connections admitted: the limit did not apply")
	return release
}
