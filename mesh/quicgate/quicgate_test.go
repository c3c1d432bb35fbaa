package quicgate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server listens on a gated transport. Connections whose handshake
// completes are admitted unless hold is set, in which case they stay in
// the handshake stage until they close.
type server struct {
	addr string
	ms   *metrics.Set
	gate *Gate
}

func serve(t *testing.T, cfg Config, hold bool) *server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics, cfg.Name = metrics.NewSet(), "test_handshakes"
	tr := &quic.Transport{Conn: pc}
	g := New(cfg)
	g.Install(tr)
	ln, err := tr.Listen(serverTLS(t), &quic.Config{HandshakeIdleTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			if !hold {
				Admit(c)
			}
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait(); tr.Close(); pc.Close() })
	return &server{addr: pc.LocalAddr().String(), ms: cfg.Metrics, gate: g}
}

func serverTLS(t *testing.T) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"test"}}
}

var clientTLS = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"test"}}

// dial completes a handshake from a local address (127.0.0.1 when empty).
func dial(t *testing.T, s *server, from string) (*quic.Conn, error) {
	t.Helper()
	if from == "" {
		from = "127.0.0.1"
	}
	pc, err := net.ListenPacket("udp", from+":0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	to, _ := net.ResolveUDPAddr("udp", s.addr)
	c, err := tr.Dial(ctx, to, clientTLS, &quic.Config{})
	if err == nil {
		t.Cleanup(func() { c.CloseWithError(0, "") })
	}
	return c, err
}

// halfOpen sends one ClientHello and goes silent: a handshake that never
// completes, as a flood of them would be.
func halfOpen(t *testing.T, s *server) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mute := &muteConn{PacketConn: pc, closed: make(chan struct{})}
	tr := &quic.Transport{Conn: mute}
	ctx, cancel := context.WithCancel(context.Background())
	to, _ := net.ResolveUDPAddr("udp", s.addr)
	go tr.Dial(ctx, to, clientTLS, &quic.Config{})
	t.Cleanup(func() { cancel(); mute.Close(); tr.Close() })
}

// muteConn lets a client's first flight out (its ClientHello, which
// with a post-quantum key share takes two datagrams) and nothing else,
// either way.
type muteConn struct {
	net.PacketConn
	mu     sync.Mutex
	sent   int
	closed chan struct{}
	once   sync.Once
}

func (m *muteConn) WriteTo(p []byte, a net.Addr) (int, error) {
	m.mu.Lock()
	m.sent++
	first := m.sent <= 2
	m.mu.Unlock()
	if first {
		return m.PacketConn.WriteTo(p, a)
	}
	return len(p), nil
}

func (m *muteConn) ReadFrom(p []byte) (int, net.Addr, error) {
	<-m.closed
	return 0, nil, net.ErrClosed
}

func (m *muteConn) Close() error {
	m.once.Do(func() { close(m.closed) })
	return m.PacketConn.Close()
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

// waitAtLeast waits until a counter reaches want (a refused client may
// send its ClientHello again before the refusal reaches it).
func waitAtLeast(t *testing.T, s *server, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, _ := strconv.Atoi(value(s.ms, name))
		if v >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want at least %d", name, v, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitValue(t *testing.T, s *server, name, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for value(s.ms, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q", name, value(s.ms, name), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Half-open handshakes fill the stage up to Max and no further; past it a
// client is refused at once; when they time out the places come back,
// and a completed handshake leaves the stage when admitted.
func TestHandshakeStageIsBounded(t *testing.T) {
	s := serve(t, Config{Max: 3, RetryAbove: -1}, false)
	for range 3 {
		halfOpen(t, s)
	}
	waitValue(t, s, "test_handshakes_in_progress", "3")
	if c, err := dial(t, s, ""); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("a fourth handshake was let in past Max 3")
	}
	waitAtLeast(t, s, `test_handshakes_refused_total{reason="full"}`, 1)
	// The server gives up on the half-open ones after its handshake idle
	// timeout (500 ms here).
	waitValue(t, s, "test_handshakes_abandoned_total", "3")
	if _, err := dial(t, s, ""); err != nil {
		t.Fatalf("no place after the half-open handshakes timed out: %v", err)
	}
	waitValue(t, s, "test_handshakes_in_progress", "0")
	waitValue(t, s, "test_handshakes_abandoned_total", "3")
}

// Past RetryAbove, a client must validate its address first: a client
// that never answers (as a spoofed one cannot) leaves no state, and one
// that does gets through.
func TestRetryWhenHandshakesPileUp(t *testing.T) {
	s := serve(t, Config{Max: 10, RetryAbove: 2}, false)
	for range 2 {
		halfOpen(t, s)
	}
	waitValue(t, s, "test_handshakes_in_progress", "2")
	for range 5 {
		halfOpen(t, s)
	}
	waitAtLeast(t, s, "test_handshakes_retries_total", 5)
	if got := value(s.ms, "test_handshakes_in_progress"); got != "2" {
		t.Fatalf("%s handshakes in progress after Retries, want 2", got)
	}
	if _, err := dial(t, s, ""); err != nil {
		t.Fatalf("a client that answers the Retry was refused: %v", err)
	}
}

// A validated address may hold at most PerAddr places; another address
// still gets in.
func TestOneAddressGetsItsShare(t *testing.T) {
	s := serve(t, Config{Max: 10, RetryAbove: 1, PerAddr: 3}, true)
	for i := range 3 {
		if _, err := dial(t, s, ""); err != nil {
			t.Fatalf("connection %d from 127.0.0.1 refused under its share: %v", i+1, err)
		}
	}
	if c, err := dial(t, s, ""); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("a fourth connection from one address was let in past PerAddr 3")
	}
	waitAtLeast(t, s, `test_handshakes_refused_total{reason="address"}`, 1)
	if _, err := dial(t, s, "127.0.0.2"); err != nil {
		t.Fatalf("another address was refused: %v", err)
	}
}
