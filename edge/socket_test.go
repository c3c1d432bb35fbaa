package edge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestHeartbeatV2(t *testing.T) {
	ts := startServer(t, nil)
	for _, path := range []string{"/realtime/v1/websocket", "/socket/websocket"} {
		c, err := ts.dial(t, path, "apikey=k&vsn=2.0.0")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		c.write(`[null,"9","phoenix","heartbeat",{}]`)
		data, op, err := c.read(testWait)
		if err != nil {
			t.Fatalf("%s: no heartbeat reply: %v", path, err)
		}
		const want = `[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]`
		if op != ws.OpText || string(data) != want {
			t.Errorf("%s: heartbeat reply = %v %s, want text %s", path, op, data, want)
		}
	}
}

func TestHeartbeatV1(t *testing.T) {
	ts := startServer(t, nil)
	for _, query := range []string{"apikey=k&vsn=1.0.0", "apikey=k"} {
		c := ts.connectQuery(t, query)
		c.write(`{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}`)
		f := c.next()
		if f.Raw[0] != '{' {
			t.Errorf("?%s: reply %s is not a JSON object", query, f.Raw)
		}
		if !jsonEq(f.Raw, `{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"9"}`) {
			t.Errorf("?%s: heartbeat reply = %s", query, f.Raw)
		}
	}
}

func TestUnsupportedVsnRefused(t *testing.T) {
	ts := startServer(t, nil)
	for _, vsn := range []string{"3", "2.0", "3.0.0"} {
		_, err := ts.dial(t, "/realtime/v1/websocket", "apikey=k&vsn="+vsn)
		var refused *upgradeRefused
		if !errors.As(err, &refused) || refused.status != http.StatusForbidden {
			t.Errorf("vsn=%s: dial error %v, want HTTP 403", vsn, err)
		}
	}
}

func TestMaxConnections(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxConnections = 1 })
	first := ts.connect(t)

	_, err := ts.dial(t, "/realtime/v1/websocket", "apikey=k&vsn=2.0.0")
	var refused *upgradeRefused
	if !errors.As(err, &refused) {
		t.Fatalf("second connection: %v, want a refused upgrade", err)
	}
	if refused.status != http.StatusTooManyRequests || !jsonEq([]byte(refused.body), `{"error":"Too many connected users"}`) {
		t.Errorf("second connection refused with %d %s, want 429 {\"error\":\"Too many connected users\"}", refused.status, refused.body)
	}

	// The slot frees when the first client goes away.
	first.nc.Close()
	var third *wsClient
	ok := waitFor(testWait, func() bool {
		third, err = ts.dial(t, "/realtime/v1/websocket", "apikey=k&vsn=2.0.0")
		return err == nil
	})
	if !ok {
		t.Fatalf("no connection admitted after the first closed: %v", err)
	}
	third.write(heartbeatFrame)
	if f := third.next(); !isHeartbeatReply(f) {
		t.Errorf("got %s, want the heartbeat reply", f)
	}
}

// A broken client gets a close frame and a closed socket, not a hang, and
// the server goes on serving everyone else.
func TestBadInputClosesSocket(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxFrameBytes = 1024 })
	bystander := ts.connect(t)

	cases := []struct {
		name string
		send func(c *wsClient) error
		code ws.StatusCode
	}{
		{"invalid JSON", func(c *wsClient) error { return c.writeErr(ws.OpText, []byte(`[null,"1","phoenix",`)) }, ws.StatusUnsupportedData},
		{"not a 5-element array", func(c *wsClient) error { return c.writeErr(ws.OpText, []byte(`{"topic":"phoenix"}`)) }, ws.StatusUnsupportedData},
		{"unknown binary kind", func(c *wsClient) error { return c.writeErr(ws.OpBinary, []byte{9, 0, 0, 0, 0, 0, 1}) }, ws.StatusUnsupportedData},
		{"truncated kind 3", func(c *wsClient) error { return c.writeErr(ws.OpBinary, []byte{3, 5, 5, 5}) }, ws.StatusUnsupportedData},
		{"frame over MaxFrameBytes", func(c *wsClient) error {
			return c.writeErr(ws.OpText, []byte(`[null,"1","phoenix","heartbeat",{"pad":"`+strings.Repeat("x", 2000)+`"}]`))
		}, ws.StatusMessageTooBig},
		{"unmasked frame", func(c *wsClient) error {
			c.nc.SetWriteDeadline(time.Now().Add(testWait))
			return ws.WriteFrame(c.nc, ws.NewTextFrame([]byte(heartbeatFrame)))
		}, ws.StatusProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.connect(t)
			if err := tc.send(c); err != nil {
				t.Fatalf("send: %v", err)
			}
			code, reason, skipped, err := c.closed(testWait)
			if err != nil {
				t.Fatalf("no close frame: %v", err)
			}
			if skipped != 0 {
				t.Errorf("%d data frames before the close frame", skipped)
			}
			if code != tc.code {
				t.Errorf("close code %d (%q), want %d", code, reason, tc.code)
			}
			if err := c.eof(testWait); err != nil {
				t.Errorf("after the close frame: %v", err)
			}
		})
	}

	bystander.write(heartbeatFrame)
	if f := bystander.next(); !isHeartbeatReply(f) {
		t.Errorf("bystander got %s, want the heartbeat reply", f)
	}
	fresh := ts.connect(t)
	fresh.write(heartbeatFrame)
	if f := fresh.next(); !isHeartbeatReply(f) {
		t.Errorf("new client got %s, want the heartbeat reply", f)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	ts := startServer(t, nil)

	r, err := ts.do("GET", "/healthz", "", "")
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("/healthz = %d %q, %v; want 200", r.status, r.body, err)
	}

	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:m", `{}`))
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join reply %s", f)
	}
	c.write(heartbeatFrame)
	if f := c.next(); !isHeartbeatReply(f) {
		t.Fatalf("got %s, want the heartbeat reply", f)
	}

	for name, want := range map[string]string{
		"meshcast_connections":       "1",
		"meshcast_joins_total":       "1",
		"meshcast_messages_in_total": "2",
	} {
		got, err := ts.metric(name)
		if err != nil {
			t.Fatalf("/metrics: %v", err)
		}
		if got != want {
			t.Errorf("%s = %q, want %s", name, got, want)
		}
	}

	// The gauge follows disconnects.
	c.nc.Close()
	var conns string
	if !waitFor(testWait, func() bool { conns, _ = ts.metric("meshcast_connections"); return conns == "0" }) {
		t.Errorf("meshcast_connections = %q after the client left, want 0", conns)
	}

	if err := ts.stop(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The listener is closed now; ask the handler directly, as a load
	// balancer's probe that raced the shutdown would.
	rec := httptest.NewRecorder()
	ts.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/healthz after Shutdown = %d, want 503", rec.Code)
	}
}

// A client that connected but has sent nothing yet is shut down like any
// other. Under -race this reports the data race between the upgrade
// handler's s.wg.Add(2) (ws.go), which runs after track() released s.mu,
// and Shutdown's s.wg.Wait() (server.go): nothing orders the Add before the
// Wait, so Shutdown can also return before that connection's goroutines
// have started.
func TestShutdownSilentClient(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	done := make(chan error, 1)
	go func() { done <- ts.stop() }()
	code, reason, skipped, err := c.closed(testWait)
	if err != nil || code != ws.StatusGoingAway || skipped != 0 {
		t.Errorf("close %d %q after %d frames, %v; want 1001", code, reason, skipped, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(testWait):
		t.Fatal("Shutdown did not return")
	}
}

// Shutdown tells each client to reconnect elsewhere (close 1001) and
// returns once they are gone.
func TestShutdownGoingAway(t *testing.T) {
	ts := startServer(t, nil)
	joined := ts.connect(t)
	joined.write(joinFrame("1", "realtime:s", `{}`))
	if f := joined.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join reply %s", f)
	}
	idle := ts.connect(t)
	idle.write(heartbeatFrame)
	if f := idle.next(); !isHeartbeatReply(f) {
		t.Fatalf("got %s, want the heartbeat reply", f)
	}

	done := make(chan error, 1)
	go func() { done <- ts.stop() }()

	// A joined channel hears why first.
	f := joined.next()
	if f.Event != "system" || jsonField(f.Payload, "message") != `"Server requested disconnect"` {
		t.Errorf("joined client got %s, want the system \"Server requested disconnect\"", f)
	}
	for name, c := range map[string]*wsClient{"joined": joined, "idle": idle} {
		code, reason, skipped, err := c.closed(testWait)
		if err != nil {
			t.Errorf("%s client: no close frame: %v", name, err)
			continue
		}
		if code != ws.StatusGoingAway || skipped != 0 {
			t.Errorf("%s client: close %d %q after %d frames, want 1001 right away", name, code, reason, skipped)
		}
	}

	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(testWait):
		t.Fatal("Shutdown did not return")
	}
	if _, err := ts.dial(t, "/realtime/v1/websocket", "apikey=k&vsn=2.0.0"); err == nil {
		t.Error("a new connection was accepted after Shutdown")
	}
}

// Fragmented messages are reassembled, control frames may come between the
// fragments, and pings are answered with the same payload.
func TestFragmentsAndPing(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	msg := []byte(`[null,"frag","phoenix","heartbeat",{}]`)
	frames := []ws.Frame{
		ws.NewFrame(ws.OpText, false, msg[:10]),
		ws.NewPingFrame([]byte("are you there")),
		ws.NewFrame(ws.OpContinuation, false, msg[10:20]),
		ws.NewFrame(ws.OpContinuation, true, msg[20:]),
	}
	c.nc.SetWriteDeadline(time.Now().Add(testWait))
	for _, f := range frames {
		if err := ws.WriteFrame(c.nc, ws.MaskFrameInPlace(f)); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	// Read raw frames: wsutil would swallow the pong.
	c.nc.SetReadDeadline(time.Now().Add(testWait))
	readFrame := func() (ws.OpCode, []byte, error) {
		h, err := ws.ReadHeader(c.rw)
		if err != nil || h.Length > 1<<10 {
			return 0, nil, fmt.Errorf("header %+v: %v", h, err)
		}
		p := make([]byte, h.Length)
		_, err = io.ReadFull(c.rw, p)
		return h.OpCode, p, err
	}
	op, p, err := readFrame()
	if err != nil {
		t.Fatalf("reading the pong: %v", err)
	}
	if op != ws.OpPong || string(p) != "are you there" {
		t.Errorf("got %v %q, want a pong echoing the ping", op, p)
	}
	op, p, err = readFrame()
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	if want := `[null,"frag","phoenix","phx_reply",{"status":"ok","response":{}}]`; op != ws.OpText || string(p) != want {
		t.Errorf("reply to the fragmented heartbeat = %v %s, want %s", op, p, want)
	}

	// A continuation without a start is a protocol error.
	bad := ts.connect(t)
	bad.nc.SetWriteDeadline(time.Now().Add(testWait))
	if err := ws.WriteFrame(bad.nc, ws.MaskFrameInPlace(ws.NewFrame(ws.OpContinuation, true, msg))); err != nil {
		t.Fatalf("write: %v", err)
	}
	if code, reason, _, err := bad.closed(testWait); err != nil || code != ws.StatusProtocolError {
		t.Errorf("stray continuation: close %d %q %v, want 1002", code, reason, err)
	}
}

// A client's close frame is answered with a close frame, then the socket
// closes.
func TestClientClose(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.nc.SetWriteDeadline(time.Now().Add(testWait))
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")
	if err := ws.WriteFrame(c.nc, ws.MaskFrameInPlace(ws.NewCloseFrame(body))); err != nil {
		t.Fatalf("write: %v", err)
	}
	code, _, skipped, err := c.closed(testWait)
	if err != nil || code != ws.StatusNormalClosure || skipped != 0 {
		t.Errorf("close answered with %d after %d frames, %v; want 1000", code, skipped, err)
	}
	if err := c.eof(testWait); err != nil {
		t.Error(err)
	}
	var conns string
	if !waitFor(testWait, func() bool { conns, _ = ts.metric("meshcast_connections"); return conns == "0" }) {
		t.Errorf("meshcast_connections = %q after the client closed, want 0", conns)
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	c := ts.connect(t)
	start := time.Now()
	code, reason, _, err := c.closed(testWait)
	if err != nil {
		t.Fatalf("silent socket not closed: %v", err)
	}
	if code != ws.StatusGoingAway {
		t.Errorf("close %d %q, want 1001", code, reason)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
}

// maskedHeader is a client frame header claiming length bytes of text.
func maskedHeader(length uint64) []byte {
	h := []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
	binary.BigEndian.PutUint64(h[2:10], length)
	return h
}

// With the frame limit off (MaxFrameBytes -1, "--max-frame-bytes 0"), a
// header claiming 2^62 bytes must not take the server down.
func TestHugeDeclaredLengthWithoutLimit(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxFrameBytes = -1 })
	c := ts.connect(t)
	c.nc.SetWriteDeadline(time.Now().Add(testWait))
	if _, err := c.nc.Write(maskedHeader(1 << 62)); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.nc.Close()
	other := ts.connect(t)
	other.write(heartbeatFrame)
	if f := other.next(); !isHeartbeatReply(f) {
		t.Errorf("got %s, want the heartbeat reply", f)
	}
}

// A frame header alone must not make the server allocate the length it
// declares: otherwise each connection pins MaxFrameBytes (5 MB by
// default) of memory for 14 bytes sent.
func TestDeclaredLengthNotPreallocated(t *testing.T) {
	ts := startServer(t, nil) // MaxFrameBytes 5 MiB
	const conns, claim = 16, 5 << 20
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for range conns {
		c := ts.connect(t)
		// A heartbeat first, so that this test does not depend on
		// TestShutdownSilentClient's bug.
		c.write(heartbeatFrame)
		if f := c.next(); !isHeartbeatReply(f) {
			t.Fatalf("got %s, want the heartbeat reply", f)
		}
		c.nc.SetWriteDeadline(time.Now().Add(testWait))
		if _, err := c.nc.Write(maskedHeader(claim - 1000)); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	// Nothing to wait for when the server behaves, so give it a bounded
	// second to show the growth.
	var grown uint64
	if waitFor(time.Second, func() bool {
		var now runtime.MemStats
		runtime.ReadMemStats(&now)
		grown = now.HeapAlloc - min(now.HeapAlloc, before.HeapAlloc)
		return grown > conns*claim/2
	}) {
		t.Errorf("heap grew by %d MiB after %d connections sent only a frame header each", grown>>20, conns)
	}
}
