package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/wire/phx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// awkwardServer accepts one WebSocket and sends what a server may: a frame
// cut over several writes, 16- and 64-bit lengths, a fragmented message
// with a ping inside (the pong it gets goes to pong), and a close.
func awkwardServer(t *testing.T) (url string, pong <-chan []byte) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		c.Write(frameOf(true, ws.OpText, []byte("first")))
		big := frameOf(true, ws.OpBinary, bytes.Repeat([]byte{'b'}, 70000))
		mid := frameOf(true, ws.OpText, bytes.Repeat([]byte{'m'}, 300))
		all := append(append([]byte{}, mid...), big...)
		for i := 0; i < len(all); i += 997 { // cut everywhere, headers too
			c.Write(all[i:min(i+997, len(all))])
			time.Sleep(time.Millisecond)
		}
		c.Write(frameOf(false, ws.OpText, []byte("frag-")))
		c.Write(frameOf(true, ws.OpPing, []byte("hi")))
		c.Write(frameOf(true, ws.OpContinuation, []byte("ment")))
		h, err := ws.ReadHeader(c)
		if err == nil && h.OpCode == ws.OpPong {
			b := make([]byte, h.Length)
			c.Read(b)
			ws.Cipher(b, h.Mask, 0)
			ch <- b
		}
		c.Write(frameOf(true, ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))
		time.Sleep(100 * time.Millisecond)
	}()
	return "ws://" + ln.Addr().String() + "/", ch
}

var awkwardWant = []string{"first", strings.Repeat("m", 300), strings.Repeat("b", 70000), "frag-ment"}

func checkAwkward(t *testing.T, got []string, pong <-chan []byte, end error) {
	t.Helper()
	select {
	case p := <-pong:
		if string(p) != "hi" {
			t.Errorf("pong %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Error("ping not answered")
	}
	if len(got) != len(awkwardWant) {
		t.Fatalf("got %d messages, want %d", len(got), len(awkwardWant))
	}
	for i := range awkwardWant {
		if got[i] != awkwardWant[i] {
			t.Errorf("message %d: %d bytes %.20q…, want %d", i, len(got[i]), got[i], len(awkwardWant[i]))
		}
	}
	var ce *CloseError
	if !errors.As(end, &ce) || !errors.Is(end, ErrClosed) || ce.Reason != "bye" || ce.Code != int(ws.StatusGoingAway) {
		t.Errorf("the end: %v", end)
	}
}

// TestWSFrames reads the awkward server with the blocking WS.
func TestWSFrames(t *testing.T) {
	url, pong := awkwardServer(t)
	c, err := DialWS(context.Background(), url, Options{Timeout: time.Second, ReadBuffer: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	for {
		_, b, err := c.ReadFrame()
		if err != nil {
			checkAwkward(t, got, pong, err)
			return
		}
		got = append(got, string(b))
	}
}

// TestPollerFrames reads the awkward server with a poller.
func TestPollerFrames(t *testing.T) {
	url, pong := awkwardServer(t)
	base := time.Now()
	g, err := NewPoller(2, func() int64 { return int64(time.Since(base)) }, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	c, err := DialWS(context.Background(), url, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if err := g.Hold(c, rec); err != nil {
		t.Fatal(err)
	}
	var end error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n, err := g.Errs(); n > 0 {
			end = err
			break
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	checkAwkward(t, rec.msgs, pong, end)
}

type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) OnMessage(_ ws.OpCode, b []byte, _ int64) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(b))
	r.mu.Unlock()
}

// frameOf builds an unmasked server frame.
func frameOf(fin bool, op ws.OpCode, p []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// TestJoinPayload: the server's decoder reads the join as meant.
func TestJoinPayload(t *testing.T) {
	p, err := phx.DecodeJoin(Join{Presence: "n1", Unreliable: true, Changes: []string{`{"event":"INSERT","schema":"public","table":"t"}`}, Token: "tok"}.Payload())
	c := p.Config
	if err != nil || c.PresenceKey() != "n1" || !bool(c.Presence.Enabled) || !bool(c.Broadcast.Unreliable) || bool(c.Broadcast.Self) ||
		len(c.PostgresChanges) != 1 || p.Token() != "tok" {
		t.Fatalf("%+v %v", p, err)
	}
	p, err = phx.DecodeJoin(Join{}.Payload())
	if err != nil || p.Config.PresenceKey() != "" || bool(p.Config.Presence.Enabled) || p.Token() != "" {
		t.Fatalf("%+v %v", p, err)
	}
	if hb := PhoenixHeartbeat(nil, 9); string(hb) != `[null,"9","phoenix","heartbeat",{}]` {
		t.Fatalf("heartbeat %s", hb)
	}
	f, _ := Broadcast(nil, nil, 5, "realtime:bench", "m", []byte(`{"t":1}`))
	if string(f) != `["1","5","realtime:bench","broadcast",{"type":"broadcast","event":"m","payload":{"t":1}}]` {
		t.Fatalf("broadcast %s", f)
	}
}

// loopReader serves the same bytes over and over, as a socket full of
// broadcasts would.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// BenchmarkWSReadFrame is a subscriber's read path: 100-byte broadcasts
// parsed in place from a 2 KiB read buffer.
func BenchmarkWSReadFrame(b *testing.B) {
	payload := []byte(`{"t":1764000000123456789,"s":12345,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	msg, _ := Broadcast(nil, nil, 7, "realtime:bench", "m", payload)
	var stream []byte
	for range 64 {
		stream = append(stream, frameOf(true, ws.OpText, msg)...)
	}
	c := &WS{rd: &loopReader{b: stream}, buf: make([]byte, 2048)}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, _, err := c.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}
