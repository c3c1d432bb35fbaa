package edge

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/webtransport-go"
)

// peer is a test client of either transport.
type peer interface {
	write(text string)
	writeBinary(b []byte)
	next() wsFrame
}

// expectFrame reads frames until one satisfies ok, skipping at most skip
// others, and fails the test otherwise.
func expectFrame(t *testing.T, c peer, what string, ok func(wsFrame) bool) wsFrame {
	t.Helper()
	for range 10 {
		if f := c.next(); ok(f) {
			return f
		}
	}
	t.Fatalf("no %s in the next 10 frames", what)
	return wsFrame{}
}

func mustJoin(t *testing.T, c peer, joinRef, topic, config string) {
	t.Helper()
	c.write(joinFrame(joinRef, topic, config))
	f := c.next()
	if f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` || !jsonEq([]byte(jsonField(f.Payload, "response")), `{"postgres_changes":[]}`) {
		t.Fatalf("join %s: %s", topic, f)
	}
}

// TestWebTransportSameChannelAsWebSocket: a WebTransport session joins,
// broadcasts (text and binary) and tracks presence on a channel shared
// with a WebSocket client, through the same code: each sees the other.
func TestWebTransportSameChannelAsWebSocket(t *testing.T) {
	ts := startWTServer(t, nil)
	wt, wsc := ts.connectWT(t), ts.connect(t)

	wt.write(heartbeatFrame)
	if f := wt.next(); !isHeartbeatReply(f) {
		t.Fatalf("heartbeat: %s", f)
	}
	cfg := `{"broadcast":{"self":true},"presence":{"enabled":true,"key":"%s"}}`
	mustJoin(t, wt, "1", "realtime:mixed", fmt.Sprintf(cfg, "wt"))
	if f := wt.next(); f.Event != "presence_state" || !jsonEq(f.Payload, `{}`) {
		t.Fatalf("WebTransport presence_state: %s", f)
	}
	mustJoin(t, wsc, "1", "realtime:mixed", fmt.Sprintf(cfg, "ws"))
	if f := wsc.next(); f.Event != "presence_state" {
		t.Fatalf("WebSocket presence_state: %s", f)
	}

	// Presence from the WebTransport session reaches both.
	wt.write(trackFrame("1", "2", "realtime:mixed", `{"who":"wt"}`))
	for name, c := range map[string]peer{"wt": wt, "ws": wsc} {
		f := expectFrame(t, c, "presence_diff", func(f wsFrame) bool { return f.Event == "presence_diff" })
		if jsonField(f.Payload, "joins.wt.metas") == "" {
			t.Errorf("%s: diff %s has no join of wt", name, f)
		}
	}
	expectFrame(t, wt, "track reply", func(f wsFrame) bool { return f.Event == "phx_reply" && refOf(f.Ref) == "2" })

	// A binary kind-3 broadcast from WebTransport reaches the WebSocket
	// client as kind 4, and the sender (self) too.
	wt.writeBinary(kind3("1", "", "realtime:mixed", "cursor", 1, []byte(`{"x":1}`)))
	for name, c := range map[string]peer{"wt": wt, "ws": wsc} {
		f := expectFrame(t, c, "kind 4", func(f wsFrame) bool { return f.Op == ws.OpBinary })
		if f.Kind != 4 || f.Topic != "realtime:mixed" || f.UserEvent != "cursor" || string(f.Data) != `{"x":1}` {
			t.Errorf("%s got %s", name, f)
		}
	}
	// A text broadcast from WebSocket reaches WebTransport as text.
	wsc.write(broadcastFrame("1", "3", "realtime:mixed", "chat", `{"t":"hi"}`))
	f := expectFrame(t, wt, "broadcast", func(f wsFrame) bool { return f.Event == "broadcast" })
	if !jsonEq(f.Raw, `[null,null,"realtime:mixed","broadcast",{"type":"broadcast","event":"chat","payload":{"t":"hi"}}]`) {
		t.Errorf("WebTransport got %s", f)
	}

	// Leave: reply and phx_close with ref = join_ref, as on WebSocket.
	wt.write(`["1","4","realtime:mixed","phx_leave",{}]`)
	expectFrame(t, wt, "leave reply", func(f wsFrame) bool { return f.Event == "phx_reply" && refOf(f.Ref) == "4" })
	if f := wt.next(); f.Event != "phx_close" || refOf(f.Ref) != "1" {
		t.Fatalf("after leave: %s", f)
	}
	expectFrame(t, wsc, "presence leave", func(f wsFrame) bool { return f.Event == "presence_diff" && jsonField(f.Payload, "leaves.wt") != "" })

	for _, name := range []string{
		`meshcast_connections{transport="webtransport"}`,
		`meshcast_connections{transport="websocket"}`,
	} {
		if v, _ := ts.metric(name); v != "1" {
			t.Errorf("%s = %q, want 1", name, v)
		}
	}
	if v, _ := ts.metric(`meshcast_messages_in_total{transport="webtransport"}`); v == "" || v == "0" {
		t.Errorf("no WebTransport messages counted: %q", v)
	}
}

func TestWebTransportRefusals(t *testing.T) {
	secret := []byte("wt-secret")
	ts := startWTServer(t, func(c *Config) {
		c.JWTSecret = secret
		c.MaxConnections = 2
		c.AddressShare = 0 // every client is 127.0.0.1
		c.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
	})
	good := mintWith(t, secret, jwt.MapClaims{"role": "anon", "exp": time.Now().Add(time.Hour).Unix()})
	origin := func(o string) http.Header { return http.Header{"Origin": {o}} }
	cases := []struct {
		name   string
		query  string
		hdr    http.Header
		status int
		body   string
	}{
		{"no apikey", "vsn=2.0.0", nil, 401, `{"error":"API key is missing"}`},
		{"bad apikey", "apikey=nope&vsn=2.0.0", nil, 401, `{"error":"The token provided is not a valid JWT"}`},
		{"vsn 1", "apikey=" + good + "&vsn=1.0.0", nil, 403, `{"error":"WebTransport speaks vsn 2.0.0 only"}`},
		{"other origin", "apikey=" + good + "&vsn=2.0.0", origin("https://evil.example.com"), 403, `{"error":"Origin not allowed: https://evil.example.com"}`},
		{"suffix is no subdomain", "apikey=" + good + "&vsn=2.0.0", origin("https://evilexample.org"), 403, `{"error":"Origin not allowed: https://evilexample.org"}`},
	}
	for _, tc := range cases {
		_, err := ts.dialWT(t, tc.query, tc.hdr)
		var ref *upgradeRefused
		if !errors.As(err, &ref) || ref.status != tc.status || !jsonEq([]byte(ref.body), tc.body) {
			t.Errorf("%s: %v, want %d %s", tc.name, err, tc.status, tc.body)
		}
	}
	// Allowed origins and no origin at all (not a browser) get in; the
	// connection limit is shared with WebSocket.
	if _, err := ts.dialWT(t, "apikey="+good+"&vsn=2.0.0", origin("https://app.example.com")); err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	if _, err := ts.dial(t, "/realtime/v1/websocket", "apikey="+good+"&vsn=2.0.0"); err != nil {
		t.Fatalf("websocket: %v", err)
	}
	_, err := ts.dialWT(t, "apikey="+good, origin("https://a.b.example.org"))
	var ref *upgradeRefused
	if !errors.As(err, &ref) || ref.status != 429 || !jsonEq([]byte(ref.body), `{"error":"Too many connected users"}`) {
		t.Fatalf("third connection: %v, want 429 Too many connected users", err)
	}
}

// expectClose reads the server's close frame and checks that the server
// ends the stream after it. With wait the client then waits for the
// server to close the session, which it must do within wtCloseWait with
// the same code (Go clients see it, browsers do not); without, the client
// closes the session itself, as clientjs does. It returns the close frame.
func expectClose(t *testing.T, c *wtClient, code ws.StatusCode, wait bool) *wtClosed {
	t.Helper()
	cl, _, err := c.closed(testWait)
	if err != nil {
		t.Fatalf("no close frame: %v", err)
	}
	if cl.code != code {
		t.Errorf("close %d %q, want %d", cl.code, cl.reason, code)
	}
	if err := c.streamEnds(testWait); err != nil {
		t.Errorf("after the close frame: %v", err)
	}
	if !wait {
		c.sess.CloseWithError(webtransport.SessionErrorCode(code), "")
		return cl
	}
	start := time.Now()
	se, err := c.ended(wtCloseWait + testWait)
	if err != nil {
		t.Fatal(err)
	}
	if se == nil || se.ErrorCode != webtransport.SessionErrorCode(code) {
		t.Errorf("session closed with %+v, want code %d", se, code)
	}
	if d := time.Since(start); d > wtCloseWait+time.Second {
		t.Errorf("session closed %v after the close frame, want about %v", d, wtCloseWait)
	}
	return cl
}

// TestWebTransportBadFrames: framing violations and bad content get the
// close code and a reason, and the sender alone is closed.
func TestWebTransportBadFrames(t *testing.T) {
	ts := startWTServer(t, func(c *Config) { c.MaxFrameBytes = 1 << 16 })
	watcher := ts.connect(t)
	mustJoin(t, watcher, "1", "realtime:bad", `{}`)
	prefix := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	cases := []struct {
		name   string
		bytes  []byte
		code   ws.StatusCode
		reason string
	}{
		{"length 0", prefix(0), ws.StatusProtocolError, "frame length 0"},
		{"lying length", append(prefix(1<<31), wtOpText, '['), ws.StatusMessageTooBig, "message exceeds 65536 bytes"},
		{"one byte over", append(prefix(1<<16+2), wtOpText), ws.StatusMessageTooBig, "message exceeds 65536 bytes"},
		{"unknown opcode", wtFrame(9, []byte("x")), ws.StatusProtocolError, "unknown frame opcode 9"},
		{"ping opcode", wtFrame(byte(ws.OpPing), nil), ws.StatusProtocolError, "unknown frame opcode 9"},
		{"invalid UTF-8", wtFrame(wtOpText, []byte("[null,\"1\",\"realtime:bad\",\"broadcast\",{\"x\":\"\xff\"}]")), ws.StatusInvalidFramePayloadData, "text frame is not valid UTF-8"},
		{"not JSON", wtFrame(wtOpText, []byte("{{")), ws.StatusUnsupportedData, "invalid frame"},
		{"binary kind 9", wtFrame(wtOpBinary, []byte{9, 0}), ws.StatusUnsupportedData, "invalid frame"},
		{"long close body", wtFrame(wtOpClose, make([]byte, 126)), ws.StatusProtocolError, "close frame body of 126 bytes"},
		{"invalid close code", wtFrame(wtOpClose, []byte{0x03, 0xed}), ws.StatusProtocolError, "invalid close code 1005"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.connectWT(t)
			mustJoin(t, c, "1", "realtime:bad", `{}`)
			if err := c.writeRaw(tc.bytes); err != nil {
				t.Fatal(err)
			}
			cl := expectClose(t, c, tc.code, i == 0)
			if !strings.HasPrefix(cl.reason, tc.reason) {
				t.Errorf("reason %q, want %q…", cl.reason, tc.reason)
			}
		})
	}
	// Nothing reached the other client of the channel, which still works.
	watcher.write(heartbeatFrame)
	if f := watcher.next(); !isHeartbeatReply(f) {
		t.Fatalf("the other client got %s", f)
	}
}

// TestWebTransportClientClose: the client's close frame is answered like a
// WebSocket's, and the session ends.
func TestWebTransportClientClose(t *testing.T) {
	ts := startWTServer(t, nil)
	c := ts.connectWT(t)
	body := binary.BigEndian.AppendUint16(nil, 4000)
	if err := c.writeRaw(wtFrame(wtOpClose, append(body, "bye"...))); err != nil {
		t.Fatal(err)
	}
	expectClose(t, c, 4000, true)
}

// TestWebTransportTimeouts: the idle timeout and the message timeout apply
// to sessions as to sockets; a stream never opened is closed too.
func TestWebTransportTimeouts(t *testing.T) {
	ts := startWTServer(t, func(c *Config) {
		c.IdleTimeout = 400 * time.Millisecond
		c.MessageTimeout = 300 * time.Millisecond
	})
	idle := ts.connectWT(t)
	idle.write(heartbeatFrame)
	idle.next()
	start := time.Now()
	if cl := expectClose(t, idle, ws.StatusGoingAway, true); cl.reason != "idle timeout" {
		t.Errorf("idle close reason %q", cl.reason)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle session closed after %v", d)
	}

	// A frame announced but never finished, while the client keeps the
	// session busy with nothing else: closed when the message timeout runs.
	slow := ts.connectWT(t)
	if err := slow.writeRaw(append(binary.BigEndian.AppendUint32(nil, 100), wtOpText, '[')); err != nil {
		t.Fatal(err)
	}
	if cl := expectClose(t, slow, ws.StatusPolicyViolation, false); cl.reason != "message not completed in time" {
		t.Errorf("message timeout reason %q", cl.reason)
	}
}

// TestWebTransportCertHash: the discovery endpoint names the session URL
// and the hash of the certificate the listener presents; CORS is open and
// nothing is cached. A node without WebTransport says so, in a 200 (a
// 404 would be an error in the console of every page on it).
func TestWebTransportCertHash(t *testing.T) {
	ts := startWTServer(t, nil)
	ch, r := ts.certHash(t)
	if r.status != 200 || !strings.HasPrefix(r.body, `{"enabled":true,`) {
		t.Fatalf("cert-hash: %d %s", r.status, r.body)
	}
	if want := "https://" + ts.udp + WebTransportPath; ch.URL != want {
		t.Errorf("url %q, want %q", ch.URL, want)
	}
	if r.header.Get("Access-Control-Allow-Origin") != "*" || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", r.header)
	}
	na, err := time.Parse(time.RFC3339, ch.NotAfter)
	if err != nil || time.Until(na) < 12*24*time.Hour || time.Until(na) > 14*24*time.Hour {
		t.Errorf("not_after %q (%v)", ch.NotAfter, err)
	}
	c := ts.connectWT(t)
	if len(ch.Hashes) != 1 || ch.Hashes[0].Algorithm != "sha-256" || ch.Hashes[0].Value != base64.StdEncoding.EncodeToString(c.cert[:]) {
		t.Errorf("hashes %+v, presented %x", ch.Hashes, c.cert)
	}
	_, port, _ := strings.Cut(ts.udp, ":")
	if h, _ := ts.do("GET", "/healthz", "", ""); h.header.Get("Alt-Svc") != `h3=":`+port+`"; ma=86400` {
		t.Errorf("Alt-Svc %q", h.header.Get("Alt-Svc"))
	}

	off := startServer(t, nil)
	r, err = off.do("GET", certHashPath, "", "")
	if err != nil || r.status != 200 || !jsonEq([]byte(r.body), `{"enabled":false,"message":"WebTransport is off on this node"}`) || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("without WebTransport: %d %s %v", r.status, r.body, err)
	}
	if r.header.Get("Alt-Svc") != "" {
		t.Errorf("Alt-Svc without WebTransport: %q", r.header.Get("Alt-Svc"))
	}
}

// TestWebTransportCertRotation: with a short validity the node rotates its
// certificate while serving: the next hash is published before the switch,
// sessions opened before keep working, new ones get the new certificate,
// and the endpoint follows.
func TestWebTransportCertRotation(t *testing.T) {
	const validity = 4 * time.Second // serves 2 s each, next published 0.4 s before
	ts := startWTServer(t, func(c *Config) { c.WebTransportCertValidity = validity })
	first, _ := ts.certHash(t)
	old := ts.connectWT(t)
	mustJoin(t, old, "1", "realtime:rot", `{}`)

	var both certHash
	if !waitFor(3*validity, func() bool { both, _ = ts.certHash(t); return len(both.Hashes) == 2 }) {
		t.Fatal("the next certificate was never published")
	}
	if both.Hashes[0] != first.Hashes[0] {
		t.Fatalf("published %+v before the switch, want the current one first", both.Hashes)
	}
	var after certHash
	if !waitFor(3*validity, func() bool { after, _ = ts.certHash(t); return len(after.Hashes) == 1 }) {
		t.Fatal("the switch never happened")
	}
	if after.Hashes[0] != both.Hashes[1] {
		t.Fatalf("serving %+v, want the published next %+v", after.Hashes, both.Hashes[1])
	}
	fresh := ts.connectWT(t)
	if got := base64.StdEncoding.EncodeToString(fresh.cert[:]); got == first.Hashes[0].Value {
		t.Fatal("a new session got the old certificate")
	}
	// The old session is unaffected: the two exchange a broadcast.
	mustJoin(t, fresh, "1", "realtime:rot", `{}`)
	fresh.write(broadcastFrame("1", "2", "realtime:rot", "e", `{"n":1}`))
	if f := expectFrame(t, old, "broadcast", func(f wsFrame) bool { return f.Event == "broadcast" }); jsonField(f.Payload, "payload.n") != "1" {
		t.Fatalf("old session got %s", f)
	}
}

// TestWebTransportShutdownDrains: Shutdown tells sessions to go away
// (system message, close 1001) within its deadline, and new sessions are
// refused meanwhile.
func TestWebTransportShutdownDrains(t *testing.T) {
	ts := startWTServer(t, nil)
	c := ts.connectWT(t)
	mustJoin(t, c, "1", "realtime:drain", `{}`)
	idle := ts.connectWT(t) // a session that never joined goes too
	idle.write(heartbeatFrame)
	idle.next()

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- ts.stop() }()
	// Both read at once: a session the server closed drops what the
	// client has not read.
	idleDone := make(chan *wtClosed, 1)
	go func() {
		cl, _, err := idle.closed(testWait)
		if err != nil {
			t.Errorf("idle session: %v", err)
		}
		idleDone <- cl
	}()
	f := c.next()
	if f.Event != "system" || jsonField(f.Payload, "message") != `"Server requested disconnect"` {
		t.Fatalf("before close: %s", f)
	}
	// (The session's own close code may lose the race with the QUIC
	// connection closing at the end of Shutdown: not checked here.)
	expectClose(t, c, ws.StatusGoingAway, false)
	if cl := <-idleDone; cl == nil || cl.code != ws.StatusGoingAway {
		t.Errorf("idle session closed with %+v, want 1001", cl)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("drained in %v", d)
	}
}

// TestWebTransportShutdownDeadline: sessions that do not close are cut
// when Shutdown's deadline passes.
func TestWebTransportShutdownDeadline(t *testing.T) {
	ts := startWTServer(t, nil)
	c := ts.connectWT(t)
	mustJoin(t, c, "1", "realtime:cut", `{}`)
	// The client reads nothing: its window fills, the close frame cannot
	// be flushed and the writer blocks.
	pub := ts.connect(t)
	mustJoin(t, pub, "1", "realtime:cut", `{}`)
	big := `{"s":"` + strings.Repeat("x", 60000) + `"}`
	for i := range 40 { // 2.4 MB: more than the stream window, less than the queue
		pub.write(broadcastFrame("1", strconv.Itoa(i), "realtime:cut", "e", big))
	}
	pub.write(heartbeatFrame)
	expectFrame(t, pub, "heartbeat", isHeartbeatReply)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want the deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %v with a 500 ms deadline", d)
	}
	if _, err := c.ended(testWait); err != nil {
		t.Fatal(err)
	}
}

// TestWebTransportLimits: the per-connection limits apply to sessions as
// to WebSockets: a flood of broadcasts closes the channel with Supabase's
// message, and a session that stops reading is closed as a slow consumer
// without holding anyone else up.
func TestWebTransportLimits(t *testing.T) {
	ts := startWTServer(t, func(c *Config) { c.EventsPerSecond = 5 })
	flood := ts.connectWT(t)
	mustJoin(t, flood, "1", "realtime:lim", `{}`)
	for i := range 10 {
		flood.write(broadcastFrame("1", strconv.Itoa(i+2), "realtime:lim", "e", `{}`))
	}
	f := expectFrame(t, flood, "system", func(f wsFrame) bool { return f.Event == "system" })
	if jsonField(f.Payload, "message") != `"Too many messages per second"` {
		t.Fatalf("system %s", f)
	}
	if f := flood.next(); f.Event != "phx_close" || refOf(f.Ref) != "1" {
		t.Fatalf("after the limit: %s", f)
	}

	// A reader that never reads, and a publisher with 3 MB for it: the
	// stream window fills, the queue overflows, the session goes. The
	// write timeout is the other way a blocked session goes: long enough
	// that a publisher slowed by a busy host still overflows the queue
	// first, short enough that the blocked writer lets the session end
	// within testWait.
	ts = startWTServer(t, func(c *Config) {
		c.BytesPerSecond = 0
		c.QueueBytes = 256 << 10
		c.WriteTimeout = 2 * time.Second
	})
	stuck := ts.connectWT(t)
	mustJoin(t, stuck, "1", "realtime:slow", `{}`)
	pub := ts.connect(t)
	mustJoin(t, pub, "1", "realtime:slow", `{}`)
	big := `{"s":"` + strings.Repeat("x", 60000) + `"}`
	for range 50 {
		pub.write(broadcastFrame("1", "9", "realtime:slow", "e", big))
	}
	ts.metricIs(t, "meshcast_slow_consumer_closes_total", "1")
	if _, err := stuck.ended(testWait); err != nil {
		t.Fatal(err)
	}
	pub.write(heartbeatFrame)
	expectFrame(t, pub, "heartbeat", isHeartbeatReply)
}
