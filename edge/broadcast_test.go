package edge

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// joinAll joins every client to topic with config and returns the join
// replies, for the test to check.
func joinAll(topic, config string, clients ...*wsClient) []wsFrame {
	var replies []wsFrame
	for _, c := range clients {
		c.t.Helper()
		c.write(joinFrame("1", topic, config))
		replies = append(replies, c.next())
	}
	return replies
}

func TestBroadcastSelfFalse(t *testing.T) {
	ts := startServer(t, nil)
	pub, sub := ts.connect(t), ts.connect(t)
	for _, r := range joinAll("realtime:room1", `{"broadcast":{"self":false,"ack":false}}`, pub, sub) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}
	pub.write(broadcastFrame("1", "2", "realtime:room1", "cursor", `{"x":42}`))
	f := sub.next()
	if !jsonEq(f.Raw, `[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"cursor","payload":{"x":42}}]`) {
		t.Errorf("subscriber got %s", f)
	}
	// Neither an echo nor a reply reaches the publisher.
	pub.write(heartbeatFrame)
	if f := pub.next(); !isHeartbeatReply(f) {
		t.Errorf("publisher without self or ack got %s", f)
	}
}

func TestBroadcastSelfAndAck(t *testing.T) {
	ts := startServer(t, nil)
	pub, sub := ts.connect(t), ts.connect(t)
	if r := joinAll("realtime:room1", `{"broadcast":{"self":true,"ack":true}}`, pub); jsonField(r[0].Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", r[0])
	}
	// The subscriber asks for neither; the defaults are false.
	if r := joinAll("realtime:room1", `{"broadcast":{}}`, sub); jsonField(r[0].Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", r[0])
	}

	pub.write(broadcastFrame("1", "2", "realtime:room1", "e", `{"a":1}`))
	var echo, ack int
	for range 2 {
		f := pub.next()
		switch {
		case jsonEq(f.Raw, `[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"e","payload":{"a":1}}]`):
			echo++
		case jsonEq(f.Raw, `["1","2","realtime:room1","phx_reply",{"status":"ok","response":{}}]`):
			ack++
		default:
			t.Errorf("publisher got %s", f)
		}
	}
	if echo != 1 || ack != 1 {
		t.Errorf("publisher got %d echoes and %d acks, want 1 of each", echo, ack)
	}
	if f := sub.next(); !jsonEq(f.Payload, `{"type":"broadcast","event":"e","payload":{"a":1}}`) {
		t.Errorf("subscriber got %s", f)
	}

	// The subscriber's own send (no ack, no self) gets no reply.
	sub.write(broadcastFrame("1", "3", "realtime:room1", "back", `{}`))
	sub.write(heartbeatFrame)
	if f := sub.next(); !isHeartbeatReply(f) {
		t.Errorf("subscriber without ack got %s", f)
	}
	if f := pub.next(); jsonField(f.Payload, "event") != `"back"` {
		t.Errorf("publisher got %s, want the subscriber's broadcast", f)
	}
}

func TestBroadcastPublicAndPrivateAreSeparate(t *testing.T) {
	ts := startServer(t, nil) // open: anyone may join private channels
	pub, priv := ts.connect(t), ts.connect(t)
	if r := joinAll("realtime:room1", `{"broadcast":{"ack":true}}`, pub); jsonField(r[0].Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", r[0])
	}
	if r := joinAll("realtime:room1", `{"private":true}`, priv); jsonField(r[0].Payload, "status") != `"ok"` {
		t.Fatalf("private join: %s", r[0])
	}
	pub.write(broadcastFrame("1", "2", "realtime:room1", "e", `{}`))
	if f := pub.next(); refOf(f.Ref) != "2" {
		t.Fatalf("ack = %s", f)
	}
	priv.write(heartbeatFrame)
	if f := priv.next(); !isHeartbeatReply(f) {
		t.Errorf("private subscriber got a public broadcast: %s", f)
	}
}

func TestBroadcastOrderPerPublisher(t *testing.T) {
	ts := startServer(t, nil)
	pub, a, b := ts.connect(t), ts.connect(t), ts.connect(t)
	for _, r := range joinAll("realtime:order", `{}`, pub, a, b) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}
	const n = 500
	for i := range n {
		pub.write(broadcastFrame("1", fmt.Sprint(i+2), "realtime:order", "seq", fmt.Sprintf(`{"i":%d}`, i)))
	}
	for name, c := range map[string]*wsClient{"a": a, "b": b} {
		for i := range n {
			f := c.next()
			if got := jsonField(f.Payload, "payload.i"); got != fmt.Sprint(i) {
				t.Fatalf("subscriber %s: message %d is %s", name, i, f)
			}
		}
	}
}

// Kind-3 input goes out as kind 4 to v2 subscribers and as a text object
// to v1 subscribers.
func TestBinaryBroadcast(t *testing.T) {
	ts := startServer(t, nil)
	pub := ts.connect(t)
	v2 := ts.connect(t)
	v1 := ts.connectQuery(t, "apikey=k&vsn=1.0.0")
	for _, r := range joinAll("realtime:room1", `{"broadcast":{"ack":true}}`, pub, v2) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}
	v1.write(`{"topic":"realtime:room1","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}`)
	if f := v1.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("v1 join: %s", f)
	}

	payload := []byte(`{"x":42,"s":"é"}`)
	pub.writeBinary(kind3("1", "7", "realtime:room1", "cursor", 1, payload))
	if f := pub.next(); !jsonEq(f.Raw, `["1","7","realtime:room1","phx_reply",{"status":"ok","response":{}}]`) {
		t.Errorf("ack of a kind-3 push = %s", f)
	}

	f := v2.next()
	if f.Op != ws.OpBinary || f.Kind != 4 || f.Topic != "realtime:room1" || f.UserEvent != "cursor" || f.Meta != "" || f.Enc != 1 || !bytes.Equal(f.Data, payload) {
		t.Errorf("v2 subscriber got %s, want kind 4 enc 1 cursor %s", f, payload)
	}
	want := append([]byte{4, 14, 6, 0, 1}, "realtime:room1cursor"...)
	if !bytes.Equal(f.Raw, append(want, payload...)) {
		t.Errorf("v2 frame bytes = %x", f.Raw)
	}

	f = v1.next()
	if f.Op != ws.OpText || f.Raw[0] != '{' {
		t.Fatalf("v1 subscriber got %s, want a JSON object", f)
	}
	if !jsonEq(f.Raw, `{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"cursor","payload":{"x":42,"s":"é"}},"ref":null}`) {
		t.Errorf("v1 subscriber got %s", f)
	}
}

// Raw bytes (enc 0) reach v2 subscribers as they are and never v1 ones.
func TestBinaryRawBytesSkipV1(t *testing.T) {
	ts := startServer(t, nil)
	pub := ts.connect(t)
	v2 := ts.connect(t)
	v1 := ts.connectQuery(t, "apikey=k&vsn=1.0.0")
	for _, r := range joinAll("realtime:room1", `{}`, pub, v2) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}
	v1.write(`{"topic":"realtime:room1","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}`)
	if f := v1.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("v1 join: %s", f)
	}

	raw := []byte{0x00, 0xff, 0x10, '{'}
	pub.writeBinary(kind3("1", "2", "realtime:room1", "blob", 0, raw))
	pub.writeBinary(kind3("1", "3", "realtime:room1", "json", 1, []byte(`{"after":true}`)))

	f := v2.next()
	if f.Op != ws.OpBinary || f.Kind != 4 || f.UserEvent != "blob" || f.Enc != 0 || !bytes.Equal(f.Data, raw) {
		t.Errorf("v2 subscriber got %s, want kind 4 enc 0 with the raw bytes", f)
	}
	if f := v2.next(); f.UserEvent != "json" {
		t.Errorf("v2 subscriber got %s second", f)
	}
	// Per-publisher order holds, so the JSON message coming first proves the
	// raw one was skipped.
	if f := v1.next(); jsonField(f.Payload, "event") != `"json"` {
		t.Errorf("v1 subscriber got %s, want only the JSON broadcast", f)
	}
}

func TestBroadcastPayloadTooLarge(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxPayloadBytes = 100 })
	pub, sub := ts.connect(t), ts.connect(t)
	for _, r := range joinAll("realtime:room1", `{"broadcast":{"ack":true}}`, pub, sub) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}
	big := `{"pad":"` + strings.Repeat("x", 200) + `"}`
	pub.write(broadcastFrame("1", "2", "realtime:room1", "big", big))
	if f := pub.next(); !jsonEq(f.Raw, `["1","2","realtime:room1","phx_reply",{"status":"error","response":"payload_size_exceeded"}]`) {
		t.Errorf("oversized text push: %s", f)
	}
	pub.writeBinary(kind3("1", "3", "realtime:room1", "big", 0, bytes.Repeat([]byte{1}, 200)))
	if f := pub.next(); refOf(f.Ref) != "3" || !jsonEq(f.Payload, `{"status":"error","response":"payload_size_exceeded"}`) {
		t.Errorf("oversized binary push: %s", f)
	}
	pub.write(broadcastFrame("1", "4", "realtime:room1", "small", `{}`))
	if f := pub.next(); refOf(f.Ref) != "4" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("small push: %s", f)
	}
	if f := sub.next(); jsonField(f.Payload, "event") != `"small"` {
		t.Errorf("subscriber got %s, want only the small broadcast", f)
	}

	// Without ack an oversized push is dropped silently.
	quiet := ts.connect(t)
	if r := joinAll("realtime:room1", `{}`, quiet); jsonField(r[0].Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", r[0])
	}
	quiet.write(broadcastFrame("1", "2", "realtime:room1", "big", big))
	quiet.write(heartbeatFrame)
	if f := quiet.next(); !isHeartbeatReply(f) {
		t.Errorf("oversized push without ack answered with %s", f)
	}
}

// A subscriber that stops reading is cut off once its queue is full; the
// others keep receiving everything, in order.
func TestSlowConsumerClosed(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.QueueBytes, c.BytesPerSecond = 64<<10, -1 })
	pub, fast, slow := ts.connect(t), ts.connect(t), ts.connect(t)
	for _, r := range joinAll("realtime:flood", `{}`, pub, fast, slow) {
		if jsonField(r.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", r)
		}
	}

	const n = 2000
	// window is how many messages the publisher may be ahead of the fast
	// reader: 4 × 8 KiB fits in the fast one's 64 KiB queue even if none of
	// it has reached its socket yet, so only the slow one can overflow.
	const window = 4
	// Raw-byte (enc 0) kind-3 pushes: the server and the readers handle
	// them without scanning JSON, which keeps this test quick under -race.
	// The first 8 bytes number the message.
	pad := bytes.Repeat([]byte{'x'}, 8<<10)

	// The fast reader runs on its own goroutine and reports each message it
	// saw in order on progress; it closes progress when it stops.
	progress := make(chan int, n)
	var readErr error
	go func() {
		defer close(progress)
		for i := range n {
			data, op, err := fast.read(testWait)
			if err != nil {
				readErr = fmt.Errorf("message %d: %w", i, err)
				return
			}
			f, err := decodeFrame(data, op, false)
			if err != nil || f.Kind != 4 || len(f.Data) != len(pad) || string(f.Data[:8]) != fmt.Sprintf("%08d", i) {
				readErr = fmt.Errorf("message %d: got %.100s (%d bytes, %v)", i, f, len(data), err)
				return
			}
			progress <- i
		}
	}()

	received := 0
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
publish:
	for j := range n {
		for j-received >= window {
			select {
			case _, ok := <-progress:
				if !ok {
					break publish
				}
				received++
			case <-timeout.C:
				t.Fatalf("fast subscriber stalled at %d", received)
			}
		}
		copy(pad, fmt.Sprintf("%08d", j))
		if err := pub.writeErr(ws.OpBinary, kind3("1", "", "realtime:flood", "m", 0, pad)); err != nil {
			t.Fatalf("publish %d: %v", j, err)
		}
	}
	for range progress {
		received++
	}
	if readErr != nil { // written before progress was closed
		t.Fatalf("fast subscriber: %v", readErr)
	}
	if received != n {
		t.Fatalf("fast subscriber received %d of %d", received, n)
	}

	var closes string
	if !waitFor(testWait, func() bool { closes, _ = ts.metric("meshcast_slow_consumer_closes_total"); return closes == "1" }) {
		t.Errorf("meshcast_slow_consumer_closes_total = %q, want 1", closes)
	}

	// The slow one, reading at last, finds some of the messages and then the
	// close frame.
	code, reason, got, err := slow.closed(10 * time.Second)
	if err != nil {
		t.Fatalf("slow subscriber: no close frame: %v", err)
	}
	if code != ws.StatusPolicyViolation || got >= n {
		t.Errorf("slow subscriber: close %d %q after %d messages, want 1008 before all %d", code, reason, got, n)
	}
}
