package edge

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// These tests send, from outside, what one ordinary client (or an unlucky
// app) can send, and assert what the other clients see.

// invalidUTF8 is the byte pair of the original report, inside a JSON string.
const invalidUTF8 = "\xff\xfe"

// watcher reads everything a subscriber receives on its own goroutine and
// checks that every text frame is valid UTF-8, as a browser would before
// failing the connection.
type watcher struct {
	c      *wsClient
	mu     sync.Mutex
	frames []wsFrame
	bad    []string
	err    error
	done   chan struct{}
}

func watch(c *wsClient) *watcher {
	w := &watcher{c: c, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			data, op, err := c.read(30 * time.Second)
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			if op == ws.OpText && !utf8.Valid(data) {
				w.bad = append(w.bad, fmt.Sprintf("%q", data))
			}
			f, _ := decodeFrame(data, op, c.v1)
			w.frames = append(w.frames, f)
			w.mu.Unlock()
		}
	}()
	return w
}

// saw reports whether a broadcast event arrived (text or binary).
func (w *watcher) saw(event string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.frames {
		if f.UserEvent == event || jsonField(f.Payload, "event") == `"`+event+`"` {
			return true
		}
	}
	return false
}

func (w *watcher) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) > 0 {
		t.Errorf("a subscriber received text frames that are not UTF-8: %v", w.bad)
	}
	if w.err != nil {
		t.Errorf("a subscriber's connection ended: %v", w.err)
	}
}

// TestInvalidUTF8NeverRelayed sends invalid UTF-8 in every way a client can
// (text frame, binary kind 3 with a JSON payload, REST batch and single,
// and as if from a peer node) and checks that v1 and v2 subscribers only
// ever get valid text frames and stay connected, and that the WebSocket
// sender is closed with 1007.
func TestInvalidUTF8NeverRelayed(t *testing.T) {
	ts := startServer(t, nil)
	const topic = "realtime:utf8"
	v2, v1 := ts.connect(t), ts.connectQuery(t, "apikey=test")
	v2.write(joinFrame("1", topic, `{}`))
	v1.write(`{"topic":"` + topic + `","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`)
	for _, c := range []*wsClient{v2, v1} {
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", f)
		}
	}
	subs := []*watcher{watch(v2), watch(v1)}

	// A text frame: the sender is closed with 1007.
	textSender := ts.connect(t)
	textSender.write(joinFrame("1", topic, `{}`))
	textSender.next()
	textSender.writeErr(ws.OpText, []byte(broadcastFrame("1", "2", topic, "bad", `{"s":"`+invalidUTF8+`"}`)))
	if code, reason, _, err := textSender.closed(testWait); err != nil || code != ws.StatusInvalidFramePayloadData {
		t.Errorf("sender of invalid UTF-8: close %d %q %v, want 1007", code, reason, err)
	}

	// Kind 3 with a JSON payload goes to v1 clients as text.
	binSender := ts.connect(t)
	binSender.write(joinFrame("1", topic, `{}`))
	binSender.next()
	binSender.writeBinary(kind3("1", "", topic, "bad", phx.EncJSON, []byte(`{"s":"`+invalidUTF8+`"}`)))
	if code, reason, _, err := binSender.closed(testWait); err != nil || code != ws.StatusUnsupportedData {
		t.Errorf("kind-3 sender of invalid UTF-8: close %d %q %v, want 1003", code, reason, err)
	}
	binSender2 := ts.connect(t)
	binSender2.write(joinFrame("1", topic, `{}`))
	binSender2.next()
	binSender2.writeBinary(kind3("1", "", topic, "bad"+invalidUTF8, phx.EncBytes, []byte("raw bytes are fine")))
	if code, _, _, err := binSender2.closed(testWait); err != nil || code != ws.StatusUnsupportedData {
		t.Errorf("kind-3 event name not UTF-8: close %d %v, want 1003", code, err)
	}

	// REST.
	for _, req := range []struct{ path, ctype, body string }{
		{"/api/broadcast", "application/json", `{"messages":[{"topic":"utf8","event":"bad","payload":{"s":"` + invalidUTF8 + `"}}]}`},
		{"/api/broadcast/utf8/events/bad", "application/json", `{"s":"` + invalidUTF8 + `"}`},
		{"/api/broadcast/utf8/events/bad%FF", "application/octet-stream", `x`},
	} {
		r, err := ts.do("POST", req.path, req.ctype, req.body)
		if err != nil || r.status != 400 {
			t.Errorf("POST %s with invalid UTF-8: %d %s %v, want 400", req.path, r.status, r.body, err)
		}
	}

	// From the cluster (a peer's broadcast, as the Cluster hands it to the
	// server).
	peer := peerSide{ts.Server}
	peer.Deliver(&Broadcast{Topic: topic, Event: "bad", Payload: []byte(`{"s":"` + invalidUTF8 + `"}`), Enc: phx.EncJSON})
	peer.Deliver(&Broadcast{Topic: topic, Event: "bad\xff", Payload: []byte(`{}`), Enc: phx.EncJSON})

	// A good broadcast after all that still reaches both subscribers.
	good := ts.connect(t)
	good.write(joinFrame("1", topic, `{}`))
	good.next()
	good.write(broadcastFrame("1", "2", topic, "good", `{"s":"é"}`))
	for i, w := range subs {
		if !waitFor(testWait, func() bool { return w.saw("good") }) {
			t.Errorf("subscriber %d never got the good broadcast", i)
		}
		if w.saw("bad") {
			t.Errorf("subscriber %d got a broadcast that should have been refused", i)
		}
	}
	v2.nc.Close()
	v1.nc.Close()
	for _, w := range subs {
		<-w.done
		w.mu.Lock()
		w.err = nil // closed by the test
		w.mu.Unlock()
		w.check(t)
	}
}

// TestBurstOfLargeBroadcastsKeepsSubscribers is the report's burst: 20
// broadcasts of 2.9 MB from one client. The sender is limited by the
// per-connection byte rate (a system error, then phx_close); three
// subscribers that read normally are never closed as slow consumers and
// get every broadcast the node accepted.
func TestBurstOfLargeBroadcastsKeepsSubscribers(t *testing.T) {
	ts := startServer(t, nil) // defaults: 5 MiB/s per connection
	const topic = "realtime:burst"
	pub := ts.connect(t)
	var subs []*wsClient
	for range 3 {
		subs = append(subs, ts.connect(t))
	}
	for _, r := range joinAll(topic, `{}`, append([]*wsClient{pub}, subs...)...) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}
	got := make([]int, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, op, err := s.read(2 * time.Second)
				if err != nil {
					return // a timeout once the burst is over, or a close
				}
				if op == ws.OpBinary {
					got[i]++
				}
			}
		}()
	}
	payload := bytes.Repeat([]byte{'z'}, 2_900_000)
	for i := range 20 {
		if err := pub.writeErr(ws.OpBinary, kind3("1", "", topic, "big", phx.EncBytes, payload)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	var sys, closed bool
	for !sys || !closed {
		f := pub.next()
		switch f.Event {
		case "system":
			sys = jsonField(f.Payload, "message") == `"Too many bytes per second"`
		case "phx_close":
			closed = true
		}
	}
	if !sys {
		t.Error("the sender was not told it exceeded the byte rate")
	}
	wg.Wait()
	if v, _ := ts.metric("meshcast_slow_consumer_closes_total"); v != "0" {
		t.Errorf("meshcast_slow_consumer_closes_total = %s, want 0: healthy subscribers were closed", v)
	}
	for i := range subs {
		if got[i] == 0 || got[i] != got[0] {
			t.Errorf("subscriber %d got %d broadcasts, subscriber 0 got %d", i, got[i], got[0])
		}
		subs[i].write(heartbeatFrame)
		if f := subs[i].next(); !isHeartbeatReply(f) {
			t.Errorf("subscriber %d is not connected any more: %s", i, f)
		}
	}
}

// expectChannelClosed reads until the channel's system error and
// phx_close, and returns the system message.
func expectChannelClosed(t *testing.T, c *wsClient) string {
	t.Helper()
	msg := ""
	for {
		f := c.next()
		switch f.Event {
		case "system":
			msg = jsonField(f.Payload, "message")
		case "phx_close":
			return msg
		}
	}
}

func TestPresenceLimits(t *testing.T) {
	t.Run("payload bytes", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.MaxPresenceBytes = 1000 })
		c := ts.connect(t)
		c.write(joinFrame("1", "realtime:p", `{"presence":{"key":"a","enabled":true}}`))
		c.next()
		c.next() // presence_state
		c.write(trackFrame("1", "2", "realtime:p", `{"blob":"`+strings.Repeat("x", 1000)+`"}`))
		if f := c.next(); jsonField(f.Payload, "status") != `"error"` || !strings.Contains(string(f.Payload), "Track message size exceeded") {
			t.Errorf("oversized track answered %s", f)
		}
		if msg := expectChannelClosed(t, c); msg != `"Track message size exceeded"` {
			t.Errorf("system message %s", msg)
		}
	})
	t.Run("bytes per connection", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.MaxPresenceBytes, c.MaxPresenceBytesPerConn = -1, 2500 })
		c := ts.connect(t)
		blob := `{"blob":"` + strings.Repeat("x", 1000) + `"}`
		for i := range 3 {
			topic := fmt.Sprintf("realtime:p%d", i)
			c.write(joinFrame("1", topic, `{}`))
			c.next()
			c.write(trackFrame("1", "2", topic, blob))
			f := c.next()
			if i < 2 {
				if jsonField(f.Payload, "status") != `"ok"` {
					t.Fatalf("track %d within the limit: %s", i, f)
				}
				if p := c.next(); p.Event != "presence_state" {
					t.Fatalf("track %d: no presence_state after it: %s", i, p)
				}
				continue
			}
			if jsonField(f.Payload, "status") != `"error"` {
				t.Fatalf("track over the per-connection limit answered %s", f)
			}
			expectChannelClosed(t, c)
		}
		// Untracking frees room on the connection.
		c.write(`["1","9","realtime:p0","presence",{"type":"presence","event":"untrack"}]`)
		c.next()
		c.write(joinFrame("1", "realtime:p9", `{}`))
		c.next()
		c.write(trackFrame("1", "2", "realtime:p9", blob))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Errorf("track after untrack: %s", f)
		}
	})
	t.Run("keys per channel", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.MaxPresenceKeys = 3 })
		var cs []*wsClient
		for i := range 4 {
			c := ts.connect(t)
			c.write(joinFrame("1", "realtime:full", fmt.Sprintf(`{"presence":{"key":"k%d"}}`, i)))
			c.next()
			c.write(trackFrame("1", "2", "realtime:full", `{}`))
			f := c.next()
			want := `"ok"`
			if i == 3 {
				want = `"error"`
				if !strings.Contains(string(f.Payload), "Too many presence keys") {
					t.Errorf("fourth key refused with %s", f)
				}
			}
			if jsonField(f.Payload, "status") != want {
				t.Fatalf("track %d: %s, want %s", i, f, want)
			}
			cs = append(cs, c)
		}
		// The refused client is still subscribed.
		cs[0].write(broadcastFrame("1", "3", "realtime:full", "hi", `{}`))
		for f := cs[3].next(); f.Event != "broadcast"; f = cs[3].next() {
		}
	})
	t.Run("events per topic", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.PresenceEventsPerSecond = 2 })
		statuses := []string{}
		var last *wsClient
		for i := range 3 {
			c := ts.connect(t)
			c.write(joinFrame("1", "realtime:busy", fmt.Sprintf(`{"presence":{"key":"k%d"}}`, i)))
			c.next()
			c.write(trackFrame("1", "2", "realtime:busy", `{}`))
			for f := c.next(); ; f = c.next() {
				if f.Event == "phx_reply" {
					statuses = append(statuses, jsonField(f.Payload, "status"))
					break
				}
			}
			last = c
		}
		if strings.Join(statuses, " ") != `"ok" "ok" "error"` {
			t.Fatalf("three tracks within a second under a limit of 2/s: %v", statuses)
		}
		if msg := expectChannelClosed(t, last); msg != `"Too many presence messages per second"` {
			t.Errorf("system message %s", msg)
		}
	})
}

// A channel joined with presence disabled (realtime-js does so when the app
// registered no presence listener) that tracks gets a presence_state, so
// members tracked before it are not invisible to it.
func TestTrackEnablesPresenceWithState(t *testing.T) {
	ts := startServer(t, nil)
	const topic = "realtime:late"
	alice, bob := ts.connect(t), ts.connect(t)
	alice.write(joinFrame("1", topic, `{"presence":{"key":"alice","enabled":true}}`))
	alice.next()
	alice.next()
	alice.write(trackFrame("1", "2", topic, `{"name":"alice"}`))
	alice.next()
	bob.write(joinFrame("1", topic, `{"presence":{"key":"bob","enabled":false}}`))
	if f := bob.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}
	bob.write(trackFrame("1", "2", topic, `{"name":"bob"}`))
	if f := bob.next(); f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("track reply: %s", f)
	}
	f := bob.next()
	if f.Event != "presence_state" || refOf(f.JoinRef) != "1" {
		t.Fatalf("after the track: %s, want presence_state for this join", f)
	}
	if jsonField(f.Payload, "alice.metas") == "" || jsonField(f.Payload, "bob.metas") == "" {
		t.Errorf("presence_state %s lacks alice (tracked before) or bob", f.Payload)
	}
	// A second track is an update: no second presence_state.
	bob.write(trackFrame("1", "3", topic, `{"name":"bob2"}`))
	bob.write(heartbeatFrame)
	var events []string
	for f := bob.next(); !isHeartbeatReply(f); f = bob.next() {
		events = append(events, f.Event)
	}
	if strings.Join(events, " ") != "presence_diff phx_reply" {
		t.Errorf("after an update: %v, want a presence_diff and the reply only", events)
	}
}

func TestTopicLength(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	long := "realtime:" + strings.Repeat("t", 247) // 256 bytes
	c.write(joinFrame("1", long, `{}`))
	if f := c.next(); jsonField(f.Payload, "status") != `"error"` || !strings.Contains(string(f.Payload), "at most 255 bytes") {
		t.Errorf("join of a 256-byte topic answered %s", f)
	}
	c.write(joinFrame("2", long[:255], `{}`))
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("join of a 255-byte topic answered %s", f)
	}
}

// writeRaw writes raw masked frames.
func (c *wsClient) writeRaw(frames ...ws.Frame) error {
	c.nc.SetWriteDeadline(time.Now().Add(testWait))
	for _, f := range frames {
		if err := ws.WriteFrame(c.nc, ws.MaskFrameInPlace(f)); err != nil {
			return err
		}
	}
	return nil
}

// TestUnfinishedFragmentsBounded holds unfinished fragmented messages open
// with pings: the buffer each takes stays what was declared (not double),
// and the node closes them when the message timeout passes.
func TestUnfinishedFragmentsBounded(t *testing.T) {
	// The timeout leaves room for writing 32 MiB to 8 sockets first, which
	// takes over 2 s under -race on 2 cores.
	const timeout = 6 * time.Second
	ts := startServer(t, func(c *Config) { c.MessageTimeout = timeout })
	// 8 sockets, each with the first 4 MiB of a message declared and sent
	// (one frame, then a 1 KiB continuation), none finished.
	const conns, part = 8, 1 << 20
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var cs []*wsClient
	chunk := bytes.Repeat([]byte{'a'}, part)
	for range conns {
		c := ts.connect(t)
		frames := []ws.Frame{
			ws.NewFrame(ws.OpText, false, bytes.Repeat(chunk, 4)),
			ws.NewFrame(ws.OpContinuation, false, bytes.Repeat([]byte{'b'}, 1<<10)),
		}
		if err := c.writeRaw(frames...); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	// Every socket's fragments have been read once a ping behind them is
	// answered.
	for _, c := range cs {
		if err := c.writeRaw(ws.NewPingFrame([]byte("p"))); err != nil {
			t.Fatal(err)
		}
		c.nc.SetReadDeadline(time.Now().Add(testWait))
		h, err := ws.ReadHeader(c.rw)
		if err != nil || h.OpCode != ws.OpPong {
			t.Fatalf("pong: %+v %v", h, err)
		}
		io.CopyN(io.Discard, c.rw, h.Length)
	}
	runtime.GC() // the test's own frames are garbage now; the node's buffers are not
	var now runtime.MemStats
	runtime.ReadMemStats(&now)
	declared := uint64(conns * (4*part + 1<<10))
	if grown := now.HeapAlloc - min(now.HeapAlloc, before.HeapAlloc); grown > declared*13/10 {
		t.Errorf("heap grew by %d MiB holding %d MiB of unfinished messages, want at most 1.3×", grown>>20, declared>>20)
	}
	// Pings keep them alive, but the message must finish in time.
	start := time.Now()
	for _, c := range cs {
		go func() {
			for time.Since(start) < timeout+3*time.Second && c.writeRaw(ws.NewPingFrame(nil)) == nil {
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	for i, c := range cs {
		code, reason, _, err := c.closed(timeout + 5*time.Second)
		if err != nil || code != ws.StatusPolicyViolation {
			t.Errorf("socket %d: close %d %q %v, want 1008 for a message not completed in time", i, code, reason, err)
		}
	}
	if d := time.Since(start); d > timeout+2*time.Second {
		t.Errorf("closed after %v; the message timeout is %v", d, timeout)
	}
}

// TestCloseCodes answers close frames: valid codes are echoed, invalid ones
// (and a 1-byte body) get 1002, a reason that is not UTF-8 gets 1007.
func TestCloseCodes(t *testing.T) {
	ts := startServer(t, nil)
	body := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	tests := []struct {
		name string
		body []byte
		want ws.StatusCode
	}{
		{"empty", nil, 1000},
		{"1000", body(1000, "bye"), 1000},
		{"1001", body(1001, ""), 1001},
		{"3000", body(3000, ""), 3000},
		{"4999", body(4999, ""), 4999},
		{"one byte", []byte{3}, 1002},
		{"0", body(0, ""), 1002},
		{"999", body(999, ""), 1002},
		{"1004", body(1004, ""), 1002},
		{"1005", body(1005, ""), 1002},
		{"1006", body(1006, ""), 1002},
		{"1015", body(1015, ""), 1002},
		{"2999", body(2999, ""), 1002},
		{"5000", body(5000, ""), 1002},
		{"bad reason", body(1000, invalidUTF8), 1007},
	}
	for _, tt := range tests {
		c := ts.connect(t)
		if err := c.writeRaw(ws.NewCloseFrame(tt.body)); err != nil {
			t.Fatal(err)
		}
		// Read the raw close frame: wsutil would judge the code itself.
		c.nc.SetReadDeadline(time.Now().Add(testWait))
		h, err := ws.ReadHeader(c.rw)
		if err != nil || h.OpCode != ws.OpClose {
			t.Errorf("%s: no close frame: %+v %v", tt.name, h, err)
			continue
		}
		p := make([]byte, h.Length)
		io.ReadFull(c.rw, p)
		var got ws.StatusCode
		if len(p) >= 2 {
			got = ws.StatusCode(binary.BigEndian.Uint16(p))
		}
		if got != tt.want {
			t.Errorf("close %s answered with %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestHTTPTimeouts: an idle keep-alive connection and a request body
// trickled byte by byte are both closed by the node; a WebSocket outlives
// both timeouts.
func TestHTTPTimeouts(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.HTTPIdleTimeout = 300 * time.Millisecond
		c.HTTPReadTimeout = 500 * time.Millisecond
		c.HTTPWriteTimeout = 500 * time.Millisecond
	})
	ws1 := ts.connect(t)

	idle, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	idle.SetReadDeadline(time.Now().Add(testWait))
	if resp, err := readResponse(br); err != nil || resp != 200 {
		t.Fatalf("healthz: %d %v", resp, err)
	}
	start := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle keep-alive connection: %v, want the node to close it", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle connection closed after %v", d)
	}

	slow, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
	closed := make(chan error, 1)
	go func() {
		for i := 0; i < 50; i++ {
			if _, err := slow.Write([]byte("{")); err != nil {
				closed <- err
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		closed <- errors.New("still open after 5 s of trickling")
	}()
	slow.SetReadDeadline(time.Now().Add(testWait))
	io.Copy(io.Discard, slow) // returns when the node closes
	if err := <-closed; err != nil && strings.Contains(err.Error(), "still open") {
		t.Error(err)
	}

	// The WebSocket lived through both.
	ws1.write(heartbeatFrame)
	if f := ws1.next(); !isHeartbeatReply(f) {
		t.Errorf("WebSocket after the HTTP timeouts: %s", f)
	}
}

func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, err
	}
	var status int
	fmt.Sscanf(line, "HTTP/1.1 %d", &status)
	length := 0
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if h == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(strings.ToLower(h), "content-length: "); ok {
			fmt.Sscanf(v, "%d", &length)
		}
	}
	_, err = io.CopyN(io.Discard, br, int64(length))
	return status, err
}
