package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/quic-go/quic-go"

	"github.com/meshcast/meshcast/wire/phx"
)

const unreliableConfig = `{"broadcast":{"unreliable":true}}`

// datagram receives one datagram within d.
func (c *wtClient) datagram(d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.sess.ReceiveDatagram(ctx)
}

// sendCursor sends one kind-3 datagram on topic with join_ref jr.
func (c *wtClient) sendCursor(jr, topic string, n int) {
	c.t.Helper()
	if err := c.sess.SendDatagram(kind3(jr, "", topic, "cursor", phx.EncJSON, fmt.Appendf(nil, `{"n":%d}`, n))); err != nil {
		c.t.Fatalf("SendDatagram: %v", err)
	}
}

// metricIs polls /metrics until name has value v.
func (ts *testServer) metricIs(t *testing.T, name, v string) {
	t.Helper()
	var got string
	if !waitFor(testWait, func() bool { got, _ = ts.metric(name); return got == v }) {
		t.Fatalf("%s = %q, want %s", name, got, v)
	}
}

// TestDatagramFanOut: a datagram from a session of an opted-in channel
// reaches opted-in WebTransport subscribers as a datagram, and everyone
// else — a session without the opt-in, a WebSocket — reliably, in order.
func TestDatagramFanOut(t *testing.T) {
	ts := startWTServer(t, nil)
	const topic = "realtime:cursors"
	sender, dg, plain := ts.connectWT(t), ts.connectWT(t), ts.connectWT(t)
	wsc := ts.connect(t)
	mustJoin(t, sender, "7", topic, unreliableConfig)
	mustJoin(t, dg, "1", topic, unreliableConfig)
	mustJoin(t, plain, "1", topic, `{}`)
	mustJoin(t, wsc, "1", topic, unreliableConfig)

	const n = 5
	for i := range n {
		sender.sendCursor("7", topic, i)
	}
	// Reliable receivers get all of them, in order, as kind-4 frames.
	for name, c := range map[string]peer{"webtransport without opt-in": plain, "websocket": wsc} {
		for i := range n {
			f := c.next()
			if f.Op != ws.OpBinary || f.Kind != 4 || f.Topic != topic || f.UserEvent != "cursor" || string(f.Data) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("%s: frame %d is %s", name, i, f)
			}
		}
	}
	// The opted-in session gets datagrams (on loopback all of them), each
	// a kind-4 frame, and nothing on its stream.
	for i := range n {
		d, err := dg.datagram(testWait)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		f, err := decodeFrame(d, ws.OpBinary, false)
		if err != nil || f.Kind != 4 || f.Topic != topic || f.UserEvent != "cursor" || !strings.HasPrefix(string(f.Data), `{"n":`) {
			t.Fatalf("datagram %q: %s %v", d, f, err)
		}
	}
	dg.write(heartbeatFrame)
	if f := dg.next(); !isHeartbeatReply(f) {
		t.Fatalf("the datagram subscriber's stream carried %s", f)
	}
	// Without self the sender gets nothing back.
	sender.write(heartbeatFrame)
	if f := sender.next(); !isHeartbeatReply(f) {
		t.Fatalf("sender got %s", f)
	}
	ts.metricIs(t, "meshcast_datagrams_received_total", "5")
	ts.metricIs(t, "meshcast_datagrams_sent_total", "5")
}

// TestDatagramRefused: datagrams that cannot be delivered are dropped,
// counted by reason, and the sender is told on its stream; nobody else
// sees anything.
func TestDatagramRefused(t *testing.T) {
	ts := startWTServer(t, nil)
	const topic = "realtime:dg"
	watcher := ts.connect(t)
	mustJoin(t, watcher, "1", topic, unreliableConfig)
	big := kind3("2", "", topic, "cursor", phx.EncJSON, []byte(`{"s":"`+strings.Repeat("x", MaxDatagramBytes)+`"}`))
	cases := []struct {
		name    string
		config  string // join config of topic, "" = not joined
		d       []byte
		reason  string
		joinRef string // of the notice
		topic   string // of the notice
		message string
	}{
		{"too large", unreliableConfig, big, "too_large", "", "phoenix", fmt.Sprintf("Datagram dropped: %d bytes, a datagram carries at most 1024", len(big))},
		{"malformed", unreliableConfig, []byte{9, 1, 2}, "malformed", "", "phoenix", "Datagram dropped: unknown binary frame kind: 9"},
		{"with a ref", unreliableConfig, kind3("2", "5", topic, "e", phx.EncJSON, []byte(`{}`)), "malformed", "", "phoenix", "Datagram dropped: a datagram has no ref (nothing answers it)"},
		{"not joined", "", kind3("2", "", topic, "e", phx.EncJSON, []byte(`{}`)), "not_joined", "", topic, "Datagram dropped: realtime:dg is not joined"},
		{"stale join_ref", unreliableConfig, kind3("1", "", topic, "e", phx.EncJSON, []byte(`{}`)), "stale_join_ref", "2", topic, `Datagram dropped: join_ref "1" is not the current join of realtime:dg`},
		{"not opted in", `{}`, kind3("2", "", topic, "e", phx.EncJSON, []byte(`{}`)), "not_enabled", "2", topic, "Datagram dropped: join realtime:dg with config.broadcast.unreliable = true to send datagrams"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.connectWT(t)
			if tc.config != "" {
				mustJoin(t, c, "2", topic, tc.config)
			} else {
				// The server accepts the stream once the client wrote on it.
				c.write(heartbeatFrame)
				c.next()
			}
			before, _ := ts.metric(`meshcast_datagrams_dropped_total{reason="` + tc.reason + `"}`)
			if err := c.sess.SendDatagram(tc.d); err != nil {
				t.Fatal(err)
			}
			f := c.next()
			if f.Event != "system" || f.Topic != tc.topic || refOf(f.JoinRef) != orNull(tc.joinRef) || f.Ref != nil {
				t.Fatalf("notice %s", f)
			}
			if got := jsonField(f.Payload, "message"); got != string(phx.AppendString(nil, tc.message)) {
				t.Errorf("message %s, want %q", got, tc.message)
			}
			if jsonField(f.Payload, "extension") != `"broadcast"` || jsonField(f.Payload, "status") != `"error"` {
				t.Errorf("notice payload %s", f.Payload)
			}
			after, _ := ts.metric(`meshcast_datagrams_dropped_total{reason="` + tc.reason + `"}`)
			if after != increment(before) {
				t.Errorf("dropped{reason=%q}: %q then %q", tc.reason, before, after)
			}
		})
	}
	watcher.write(heartbeatFrame)
	if f := watcher.next(); !isHeartbeatReply(f) {
		t.Fatalf("the channel's other client got %s", f)
	}
}

func orNull(s string) string {
	if s == "" {
		return "null"
	}
	return s
}

func increment(v string) string {
	n := 0
	fmt.Sscan(v, &n)
	return fmt.Sprint(n + 1)
}

// TestDatagramNoticesRateLimited: a client spraying bad datagrams gets a
// few notices, not one per datagram; every drop is counted.
func TestDatagramNoticesRateLimited(t *testing.T) {
	ts := startWTServer(t, nil)
	c := ts.connectWT(t)
	c.write(heartbeatFrame)
	c.next()
	const sent = 30
	for range sent {
		if err := c.sess.SendDatagram([]byte{9}); err != nil {
			t.Fatal(err)
		}
	}
	ts.metricIs(t, `meshcast_datagrams_dropped_total{reason="malformed"}`, fmt.Sprint(sent))
	c.write(heartbeatFrame)
	notices := 0
	for {
		f := c.next()
		if isHeartbeatReply(f) {
			break
		}
		if f.Event != "system" {
			t.Fatalf("got %s", f)
		}
		notices++
	}
	if notices < 1 || notices > 7 {
		t.Fatalf("%d notices for %d bad datagrams", notices, sent)
	}
}

// recordingTransport is a transport that keeps what it is given, with a
// datagram sender that can refuse sizes or block.
type recordingTransport struct {
	mu        sync.Mutex
	frames    [][]byte
	datagrams [][]byte
	maxDG     int           // larger datagrams are "too large for the path"
	block     chan struct{} // while open, sendDatagram blocks
}

func (r *recordingTransport) kind() transportKind { return kindWebTransport }
func (r *recordingTransport) writeFrames(fs [][]byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range fs {
		r.frames = append(r.frames, bytes.Clone(f))
	}
	return nil
}
func (r *recordingTransport) shut() {}
func (r *recordingTransport) kill() {}

func (r *recordingTransport) writeError(error) string { return "write" }
func (r *recordingTransport) sendDatagram(d []byte) error {
	if r.block != nil {
		<-r.block
	}
	if len(d) > r.maxDG {
		return &quic.DatagramTooLargeError{MaxDatagramPayloadSize: int64(r.maxDG)}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.datagrams = append(r.datagrams, bytes.Clone(d))
	return nil
}

func (r *recordingTransport) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames), len(r.datagrams)
}

// TestDatagramWriter: the writer sends the lane's datagrams; one too large
// for the QUIC path goes on the stream whole; a blocked sender makes the
// lane drop its oldest, never the fan-out wait.
func TestDatagramWriter(t *testing.T) {
	s, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	rt := &recordingTransport{maxDG: 100, block: make(chan struct{})}
	c := newConn(s, rt, formatWTv2, "test")
	c.dg = rt
	small := (&outMsg{topic: "realtime:r", event: "c", data: []byte(`{}`), enc: phx.EncJSON, binary: true}).frame(formatWTv2)
	large := (&outMsg{topic: "realtime:r", event: "c", data: []byte(`"` + strings.Repeat("x", 200) + `"`), enc: phx.EncJSON, binary: true}).frame(formatWTv2)

	// The writer takes the first and blocks sending it; 16 more fill the
	// lane and the 17th pushes the oldest waiting one out.
	c.enqueueDatagram(small)
	if !waitFor(testWait, func() bool { return c.q.Datagrams() == 0 }) {
		t.Fatal("the writer did not take the first datagram")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 17 {
			c.enqueueDatagram(small)
		}
	}()
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("enqueueDatagram blocked behind a blocked sender")
	}
	drops := s.metrics.set.GetOrCreateCounter(`meshcast_datagrams_dropped_total{reason="queue_full"}`)
	if drops.Get() != 1 {
		t.Fatalf("queue_full drops %d, want 1", drops.Get())
	}
	c.enqueueDatagram(large) // the newest stays, another oldest goes
	close(rt.block)
	if !waitFor(testWait, func() bool { f, d := rt.counts(); return f == 1 && d == 16 }) {
		f, d := rt.counts()
		t.Fatalf("%d stream frames, %d datagrams; want the large one on the stream and 1+15 datagrams", f, d)
	}
	if drops.Get() != 2 {
		t.Fatalf("queue_full drops %d, want 2", drops.Get())
	}
	if !bytes.Equal(rt.frames[0], large) || !bytes.Equal(rt.datagrams[0], small[wtHeader:]) {
		t.Fatal("the stream got another frame than the large datagram's, or a datagram is not a frame body")
	}
	if got := s.metrics.datagramsOnStream.Get(); got != 1 {
		t.Fatalf("on_stream %d", got)
	}
	c.closeNow(ws.StatusNormalClosure, "")
	<-c.writerDone
}

// TestDatagramsCrossTheMesh: a datagram published on one node reaches an
// opted-in WebTransport subscriber on another node as a datagram, and a
// WebSocket subscriber there reliably.
func TestDatagramsCrossTheMesh(t *testing.T) {
	nodes := startCluster(t, []string{"iad", "fra"}, nil)
	a, b := serveWT(t, nodes[0].testServer), serveWT(t, nodes[1].testServer)
	const topic = "realtime:mesh-cursors"
	far, farWS := b.connectWT(t), b.connect(t)
	mustJoin(t, far, "1", topic, unreliableConfig)
	mustJoin(t, farWS, "1", topic, `{}`)
	near := a.connectWT(t)
	mustJoin(t, near, "3", topic, unreliableConfig)
	// The first join of a topic on a node waits for the cluster, so the
	// interest is known everywhere once the joins are answered.
	var got []byte
	for i := 0; got == nil; i++ {
		near.sendCursor("3", topic, i)
		d, err := far.datagram(200 * time.Millisecond)
		if err == nil {
			got = d
		} else if !errors.Is(err, context.DeadlineExceeded) || i > 25 {
			t.Fatalf("no datagram across the mesh after %d sends: %v", i+1, err)
		}
	}
	if f, err := decodeFrame(got, ws.OpBinary, false); err != nil || f.Kind != 4 || f.Topic != topic || f.UserEvent != "cursor" {
		t.Fatalf("datagram %q: %s %v", got, f, err)
	}
	if f := farWS.next(); f.Op != ws.OpBinary || f.Topic != topic || f.UserEvent != "cursor" {
		t.Fatalf("WebSocket on the far node got %s", f)
	}
}

// FuzzDecodeDatagram: the datagram decoder never panics; what it accepts
// is a kind-3 frame within the size limit, with no ref; what it refuses
// carries a metric reason and a message.
func FuzzDecodeDatagram(f *testing.F) {
	f.Add(kind3("1", "", "realtime:r", "cursor", phx.EncJSON, []byte(`{"x":1}`)))
	f.Add(kind3("1", "2", "realtime:r", "cursor", phx.EncBytes, []byte{0xff}))
	f.Add([]byte{3, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{4, 1, 1, 1, 1})
	f.Add(bytes.Repeat([]byte{3}, MaxDatagramBytes+1))
	f.Fuzz(func(t *testing.T, d []byte) {
		m, err := decodeDatagram(d)
		if err != nil {
			var e *errDatagram
			if !errors.As(err, &e) || e.reason == "" || !strings.HasPrefix(e.msg, "Datagram dropped: ") {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(d) > MaxDatagramBytes || !m.Binary || m.Ref != "" || m.Event != "broadcast" || d[0] != phx.KindUserBroadcastPush {
			t.Fatalf("accepted %x as %+v", d, m)
		}
	})
}
