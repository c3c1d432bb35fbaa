package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/meshcast/meshcast/internal/testkit"
)

// This file holds the test fixtures: a server on a real loopback socket and
// a small WebSocket client. They move bytes and decode frames; what a test
// expects of those frames is asserted in the test itself.

// wait bounds every read or poll of a test; nothing in the protocol should
// take anywhere near this long on loopback.
const testWait = 5 * time.Second

// testServer is a Server serving on 127.0.0.1:0 until the test ends.
type testServer struct {
	*Server
	addr   string
	client *http.Client // REST; no keep-alive so no transport goroutine outlives a request

	stopOnce sync.Once
	stopErr  error
	serveErr error
	served   chan error
}

// startServer starts a server with DefaultConfig changed by tweak. It is shut
// down in t.Cleanup, after the test's clients are closed.
func startServer(t *testing.T, tweak func(*Config)) *testServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ReadWorkers = testReadWorkers
	cfg.Logger = slog.New(slog.DiscardHandler)
	if os.Getenv("MESHCAST_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.RecoveryWindow = -1 // exact frames; recovery's tests turn it on
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := serve(t, s)
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if !errors.Is(ts.serveErr, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", ts.serveErr)
		}
		ts.client.CloseIdleConnections()
	})
	return ts
}

// serve makes s serve on a port of its own; stop ends it.
func serve(t *testing.T, s *Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ts := &testServer{
		Server: s,
		addr:   ln.Addr().String(),
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testWait},
		served: make(chan error, 1),
	}
	go func() { ts.served <- s.Serve(ln) }()
	return ts
}

// stop shuts the server down once and waits for Serve to return.
func (ts *testServer) stop() error {
	ts.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		ts.stopErr = ts.Shutdown(ctx)
		ts.serveErr = <-ts.served
	})
	return ts.stopErr
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }

// httpResult is a REST answer, read whole.
type httpResult struct {
	status int
	header http.Header
	body   string
}

// do sends one HTTP request; header holds "Name: value" pairs.
func (ts *testServer) do(method, path, contentType, body string, header ...string) (httpResult, error) {
	req, err := http.NewRequest(method, ts.url(path), strings.NewReader(body))
	if err != nil {
		return httpResult{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, header: resp.Header, body: string(b)}, err
}

// metric returns the value of a metric line "name value" from /metrics, or
// "" when the line is missing.
func (ts *testServer) metric(name string) (string, error) {
	r, err := ts.do("GET", "/metrics", "", "")
	if err != nil {
		return "", err
	}
	return testkit.Metric(r.body, name), nil
}

// upgradeRefused is a WebSocket upgrade the server answered with a plain
// HTTP response.
type upgradeRefused struct {
	status int
	body   string
}

func (e *upgradeRefused) Error() string {
	return fmt.Sprintf("upgrade refused: %d %s", e.status, e.body)
}

// wsClient is one WebSocket client connection. It writes masked frames and
// reads whole messages with a deadline; control frames from the server are
// handled by wsutil (a close frame ends a read with wsutil.ClosedError).
type wsClient struct {
	t  *testing.T
	nc net.Conn
	rw io.ReadWriter
	v1 bool // the socket speaks vsn 1.0.0 (JSON objects)
}

// quietWriter swallows write errors: wsutil echoes a server's close frame,
// and the server may already have closed the socket by then.
type quietWriter struct{ w io.Writer }

func (q quietWriter) Write(p []byte) (int, error) {
	q.w.Write(p)
	return len(p), nil
}

// dial opens a WebSocket on path with the raw query string. A refused
// upgrade returns *upgradeRefused. The client is closed in t.Cleanup.
func (ts *testServer) dial(t *testing.T, path, query string) (*wsClient, error) {
	return ts.dialHeader(t, path, query, nil)
}

// dialHeader is dial with extra upgrade request headers.
func (ts *testServer) dialHeader(t *testing.T, path, query string, h http.Header) (*wsClient, error) {
	var refused *upgradeRefused
	d := ws.Dialer{
		Timeout: testWait,
		Header:  ws.HandshakeHeaderHTTP(h),
		OnStatusError: func(status int, _ []byte, r io.Reader) {
			refused = &upgradeRefused{status: status}
			resp, err := http.ReadResponse(bufio.NewReader(r), nil)
			if err != nil {
				refused.body = "unreadable response: " + err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			refused.body = string(b)
		},
	}
	u := "ws://" + ts.addr + path
	if query != "" {
		u += "?" + query
	}
	nc, br, _, err := d.Dial(context.Background(), u)
	if refused != nil {
		return nil, refused
	}
	if err != nil {
		return nil, err
	}
	var r io.Reader = nc
	if br != nil {
		r = io.MultiReader(br, nc)
	}
	c := &wsClient{
		t:  t,
		nc: nc,
		rw: struct {
			io.Reader
			io.Writer
		}{r, quietWriter{nc}},
		v1: !strings.Contains(query, "vsn=2.0.0"),
	}
	t.Cleanup(func() { nc.Close() })
	return c, nil
}

// connect opens a v2 socket on /realtime/v1/websocket, as supabase-js does,
// and fails the test if the server refuses it.
func (ts *testServer) connect(t *testing.T) *wsClient {
	t.Helper()
	return ts.connectQuery(t, "apikey=test&vsn=2.0.0")
}

func (ts *testServer) connectQuery(t *testing.T, query string) *wsClient {
	t.Helper()
	c, err := ts.dial(t, "/realtime/v1/websocket", query)
	if err != nil {
		t.Fatalf("dial ?%s: %v", query, err)
	}
	return c
}

// write sends a masked text frame.
func (c *wsClient) write(text string) {
	c.t.Helper()
	if err := c.writeErr(ws.OpText, []byte(text)); err != nil {
		c.t.Fatalf("write %s: %v", text, err)
	}
}

// writeBinary sends a masked binary frame.
func (c *wsClient) writeBinary(b []byte) {
	c.t.Helper()
	if err := c.writeErr(ws.OpBinary, b); err != nil {
		c.t.Fatalf("write binary: %v", err)
	}
}

func (c *wsClient) writeErr(op ws.OpCode, p []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(testWait))
	return wsutil.WriteClientMessage(c.nc, op, p)
}

// read reads the next data message within d. It is safe to call from any
// goroutine (it does not touch t).
func (c *wsClient) read(d time.Duration) ([]byte, ws.OpCode, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return wsutil.ReadServerData(c.rw)
}

// next reads the next message and decodes it; a read error (timeout, close)
// fails the test, since the test expected a message.
func (c *wsClient) next() wsFrame {
	c.t.Helper()
	data, op, err := c.read(testWait)
	if err != nil {
		c.t.Fatalf("reading the next frame: %v", err)
	}
	f, err := decodeFrame(data, op, c.v1)
	if err != nil {
		c.t.Fatalf("decoding %q: %v", data, err)
	}
	return f
}

// closed reads until the server's close frame and returns its code and
// reason; err is set if the connection ended without one (or the deadline
// passed). Data messages before the close frame are returned in skipped.
func (c *wsClient) closed(d time.Duration) (code ws.StatusCode, reason string, skipped int, err error) {
	deadline := time.Now().Add(d)
	for {
		_, _, err := c.read(time.Until(deadline))
		var ce wsutil.ClosedError
		switch {
		case errors.As(err, &ce):
			return ce.Code, ce.Reason, skipped, nil
		case err != nil:
			return 0, "", skipped, err
		}
		skipped++
	}
}

// eof reports whether the socket is closed by the server: a read ends with
// an error other than a timeout.
func (c *wsClient) eof(d time.Duration) error {
	c.nc.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	n, err := c.nc.Read(b[:])
	if n > 0 {
		return fmt.Errorf("read a byte %#x after the close frame", b[0])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("socket still open after %v", d)
	}
	return nil
}

// frame is one decoded server message. Refs are nil for JSON null.
type wsFrame struct {
	Op      ws.OpCode
	Raw     []byte
	JoinRef *string
	Ref     *string
	Topic   string
	Event   string
	Payload json.RawMessage

	// Kind-4 binary broadcast fields.
	Kind      byte
	UserEvent string
	Meta      string
	Enc       byte
	Data      []byte
}

func (f wsFrame) String() string {
	if f.Op == ws.OpBinary {
		return fmt.Sprintf("binary kind=%d topic=%q event=%q meta=%q enc=%d data=%q", f.Kind, f.Topic, f.UserEvent, f.Meta, f.Enc, f.Data)
	}
	return string(f.Raw)
}

// decodeFrame decodes a v2 array, a v1 object, or a kind-4 binary frame.
func decodeFrame(data []byte, op ws.OpCode, v1 bool) (wsFrame, error) {
	f := wsFrame{Op: op, Raw: data}
	if op == ws.OpBinary {
		if len(data) < 5 {
			return f, fmt.Errorf("short binary frame")
		}
		f.Kind = data[0]
		lt, le, lm := int(data[1]), int(data[2]), int(data[3])
		f.Enc = data[4]
		rest := data[5:]
		if len(rest) < lt+le+lm {
			return f, fmt.Errorf("binary fields overrun the frame")
		}
		f.Topic, rest = string(rest[:lt]), rest[lt:]
		f.UserEvent, rest = string(rest[:le]), rest[le:]
		f.Meta, f.Data = string(rest[:lm]), rest[lm:]
		return f, nil
	}
	if v1 {
		var o struct {
			Topic   string          `json:"topic"`
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
			Ref     *string         `json:"ref"`
			JoinRef *string         `json:"join_ref"`
		}
		if err := json.Unmarshal(data, &o); err != nil {
			return f, err
		}
		f.Topic, f.Event, f.Payload, f.Ref, f.JoinRef = o.Topic, o.Event, o.Payload, o.Ref, o.JoinRef
		return f, nil
	}
	var a []json.RawMessage
	if err := json.Unmarshal(data, &a); err != nil {
		return f, err
	}
	if len(a) != 5 {
		return f, fmt.Errorf("%d elements, want 5", len(a))
	}
	for i, dst := range []**string{&f.JoinRef, &f.Ref} {
		if err := json.Unmarshal(a[i], dst); err != nil {
			return f, fmt.Errorf("ref %d: %v", i, err)
		}
	}
	if err := json.Unmarshal(a[2], &f.Topic); err != nil {
		return f, err
	}
	if err := json.Unmarshal(a[3], &f.Event); err != nil {
		return f, err
	}
	f.Payload = a[4]
	return f, nil
}

// ref renders a ref for messages: the string, or null.
func refOf(p *string) string {
	if p == nil {
		return "null"
	}
	return *p
}

// jsonEq reports whether two JSON texts hold the same value (object key
// order and white space aside).
func jsonEq(a []byte, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// jsonField extracts one field of a JSON object (by a dotted path) as its
// JSON text; "" when missing.
func jsonField(raw []byte, path string) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		if v, ok = m[k]; !ok {
			return ""
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// The frames realtime-js sends (internal/testkit): a v2 phx_join with
// join_ref = ref, a v2 text broadcast push, a binary broadcast push
// (kind 3), a heartbeat.
var (
	joinFrame      = testkit.JoinFrame
	broadcastFrame = testkit.BroadcastFrame
	kind3          = testkit.Kind3
)

const heartbeatFrame = testkit.HeartbeatFrame

// isHeartbeatReply reports whether f answers the heartbeat above. The
// server answers a socket's frames in order, so a heartbeat is a barrier:
// anything the server queued for this socket before handling it arrives
// first.
func isHeartbeatReply(f wsFrame) bool {
	return f.Topic == "phoenix" && f.Event == "phx_reply" && refOf(f.Ref) == "hb"
}

// waitFor polls cond until it is true or d passes.
var waitFor = testkit.WaitFor
