package gossipnet

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = bytes.Repeat([]byte{7}, 32)

// seal encrypts msg as memberlist v0.7.0 does (version 1: no padding).
func seal(t testing.TB, key, msg, ad []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, versionSize+nonceSize, versionSize+nonceSize+len(msg)+tagSize)
	out[0] = 1
	rand.Read(out[versionSize:])
	return gcm.Seal(out, out[versionSize:versionSize+nonceSize], msg, ad)
}

// sealedStream is a stream's first message as memberlist sends it.
func sealedStream(t testing.TB, key, msg []byte) []byte {
	n := versionSize + nonceSize + len(msg) + tagSize
	hdr := []byte{encryptMsg, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(n))
	return append(hdr, seal(t, key, msg, hdr)...)
}

func start(t *testing.T, tweak func(*Config)) (*Transport, *metrics.Set) {
	t.Helper()
	ms := metrics.NewSet()
	cfg := Config{BindAddr: "127.0.0.1:0", Key: testKey, Metrics: ms}
	if tweak != nil {
		tweak(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	return tr, ms
}

func value(ms *metrics.Set, name string) string {
	var b strings.Builder
	ms.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func waitValue(t *testing.T, ms *metrics.Set, name, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for value(ms, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q", name, value(ms, name), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Sealed datagrams reach memberlist intact; junk, junk shaped like a
// sealed packet and packets sealed with another key are counted and
// dropped.
func TestPacketsMustOpenWithTheKey(t *testing.T) {
	tr, ms := start(t, nil)
	c, err := net.Dial("udp", tr.udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	junk := make([]byte, 1200)
	rand.Read(junk)
	shaped := append([]byte{1}, junk[1:]...)
	other := seal(t, bytes.Repeat([]byte{8}, 32), []byte("ping"), nil)
	for _, p := range [][]byte{junk, shaped, other, {1}, {}} {
		c.Write(p)
	}
	good := seal(t, testKey, []byte("ping"), nil)
	c.Write(good)
	select {
	case p := <-tr.PacketCh():
		if !bytes.Equal(p.Buf, good) || p.From.String() != c.LocalAddr().String() {
			t.Fatalf("got %x from %v, want the sealed packet from %v", p.Buf, p.From, c.LocalAddr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the sealed packet never reached memberlist")
	}
	waitValue(t, ms, `meshcast_gossip_packets_dropped_total{reason="unauthenticated"}`, "5")
	select {
	case p := <-tr.PacketCh():
		t.Fatalf("junk reached memberlist: %x", p.Buf)
	default:
	}
}

// A stream whose first message is sealed with the key reaches memberlist
// with every byte, the checked ones first.
func TestSealedStreamPasses(t *testing.T) {
	tr, ms := start(t, nil)
	c, err := net.Dial("tcp", tr.tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := sealedStream(t, testKey, []byte("push-pull state"))
	c.Write(append(first, "more"...))
	var got net.Conn
	select {
	case got = <-tr.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("the sealed stream never reached memberlist")
	}
	defer got.Close()
	got.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, len(first)+4)
	if _, err := io.ReadFull(got, b); err != nil || !bytes.Equal(b, append(first, "more"...)) {
		t.Fatalf("memberlist read %q (%v)", b, err)
	}
	// Writes go straight to the peer.
	got.Write([]byte("ack"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack := make([]byte, 3)
	if _, err := io.ReadFull(c, ack); err != nil || string(ack) != "ack" {
		t.Fatalf("peer read %q (%v)", ack, err)
	}
	waitValue(t, ms, "meshcast_gossip_streams_accepted_total", "1")
}

// Streams that do not prove the key are closed, each for its reason,
// before memberlist sees them; one announcing more than the bound is
// closed after its header, without its bytes being read.
func TestStreamsWithoutTheKeyAreRefused(t *testing.T) {
	tr, ms := start(t, func(c *Config) {
		c.StreamTimeout = 300 * time.Millisecond
		c.MaxStreamBytes = 1 << 10
	})
	huge := []byte{encryptMsg, 0x01, 0x40, 0, 0} // 20 MiB announced
	cases := []struct {
		reason string
		bytes  []byte
	}{
		{"not_sealed", []byte{6, 0, 0, 0, 1}}, // pushPullMsg in the clear
		{"too_large", huge},
		{"unauthenticated", sealedStream(t, bytes.Repeat([]byte{9}, 32), []byte("state"))},
		{"incomplete", []byte{encryptMsg, 0, 0}},
		{"timeout", nil},
	}
	for _, tc := range cases {
		c, err := net.Dial("tcp", tr.tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(tc.bytes)
		if tc.reason == "incomplete" {
			c.(*net.TCPConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: the stream was answered", tc.reason)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the stream was not closed", tc.reason)
		}
		c.Close()
		waitValue(t, ms, `meshcast_gossip_streams_refused_total{reason="`+tc.reason+`"}`, "1")
	}
	select {
	case c := <-tr.StreamCh():
		c.Close()
		t.Fatal("a stream without the key reached memberlist")
	default:
	}
}

// Past MaxPendingStreams the oldest stream of the busiest address is
// dropped: silent streams cannot keep a member's stream out.
func TestPendingStreamsAreBounded(t *testing.T) {
	tr, ms := start(t, func(c *Config) { c.MaxPendingStreams = 4 })
	for range 10 { // silent streams
		c, err := net.Dial("tcp", tr.tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitValue(t, ms, `meshcast_gossip_streams_refused_total{reason="evicted"}`, "6")
	waitValue(t, ms, "meshcast_gossip_streams_pending", "4")
	member, err := net.Dial("tcp", tr.tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	member.Write(sealedStream(t, testKey, []byte("state")))
	select {
	case c := <-tr.StreamCh():
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a member's stream was kept out by silent ones")
	}
}
