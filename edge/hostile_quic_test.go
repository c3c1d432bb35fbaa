package edge

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// What the QUIC side of the WebTransport port holds for clients that do
// not play by the rules: sessions opening more streams than their one,
// handshakes that never complete, one address taking every place. The
// attackers come from 127.0.0.2, the bystanders from 127.0.0.1. CI runs
// sizes that fail on main; MESHCAST_HOSTILE_FULL=1 the sizes of issue 21:
//
//	MESHCAST_HOSTILE_FULL=1 go test -run 'TestWebTransportExtraStreams|TestHalfOpenHandshakes' -v ./edge/

const attackerIP = "127.0.0.2"

func fullSize() bool { return os.Getenv("MESHCAST_HOSTILE_FULL") != "" }

// Sessions whose client sends no WebTransport flow-control settings (as
// webtransport-go's client with a zero Config does; webtransport-go then
// applies no per-session stream limit) open more streams than their one
// and fill them. QUIC refuses a second bidirectional stream, the node
// resets the unidirectional ones, and what the sessions push into streams
// nobody reads costs the node next to nothing (before: up to ~768 KiB
// per session, held for as long as the client heartbeats).
func TestWebTransportExtraStreamsAreRefused(t *testing.T) {
	ts := startWTServer(t, func(c *Config) { hostileConfig(c); c.MaxConnections = 1000 })
	b := startBystanders(t, ts)
	sessions := 40
	if fullSize() {
		sessions = 300
	}
	before := heapAfterGC()
	var opened atomic.Int64 // second bidirectional streams QUIC let through
	var pushed atomic.Int64 // bytes the node accepted into extra streams
	var wg sync.WaitGroup
	var attackers []*wtClient
	for range sessions {
		c, err := ts.dialSessionFrom(t, attackerIP, WebTransportPath, "apikey=test&vsn=2.0.0", nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.str, err = c.sess.OpenStream(); err != nil {
			t.Fatal(err)
		}
		c.str.Write(wtFrame(wtOpText, []byte(heartbeatFrame))) // the session's stream
		attackers = append(attackers, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			pushed.Add(pushExtraStreams(c.sess, &opened))
		}()
	}
	wg.Wait()
	// The heap holds the attackers' side too (same process); the node's
	// own memory is measured from outside by cmd/meshcast's tests.
	held := int64(heapAfterGC()) - int64(before)
	t.Logf("%d sessions: %d second streams opened, %d KiB accepted into extra streams, heap of both sides %+d KiB while they are held",
		sessions, opened.Load(), pushed.Load()>>10, held>>10)
	if opened.Load() > 0 {
		t.Errorf("%d of %d sessions opened a second bidirectional stream", opened.Load(), sessions)
	}
	// Each extra stream may take up to its first window (64 KiB) before
	// the reset reaches the client; the node drops it.
	if limit := int64(sessions) * 2 * wtInitialStreamWindow; pushed.Load() > limit {
		t.Errorf("the node took %d KiB into extra streams of %d sessions, want at most %d KiB", pushed.Load()>>10, sessions, limit>>10)
	}
	if v, _ := ts.metric(`meshcast_errors_total{reason="extra_stream"}`); v == "" || v == "0" {
		t.Errorf("extra streams counted: %q", v)
	}
	b.progress(t, "extra streams")
	for _, c := range attackers {
		c.close()
	}
	b.check(t)
}

// pushExtraStreams tries a second bidirectional stream and two
// unidirectional ones on sess, writing 256 KiB to each for up to a
// second; it returns how many bytes the node accepted.
func pushExtraStreams(sess *webtransport.Session, opened *atomic.Int64) int64 {
	junk := make([]byte, 256<<10)
	rand.Read(junk)
	var total atomic.Int64
	write := func(w interface {
		Write([]byte) (int, error)
		SetWriteDeadline(time.Time) error
	}) {
		w.SetWriteDeadline(time.Now().Add(time.Second))
		n, _ := w.Write(junk)
		total.Add(int64(n))
	}
	var wg sync.WaitGroup
	if s, err := sess.OpenStream(); err == nil {
		// Opening is local; the stream exists for the node once it carries
		// bytes, which QUIC's stream limit does not let through.
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.SetWriteDeadline(time.Now().Add(time.Second))
			if n, _ := s.Write(junk); n > 0 {
				opened.Add(1)
				total.Add(int64(n))
			}
		}()
	}
	for range 2 {
		if u, err := sess.OpenUniStream(); err == nil {
			wg.Add(1)
			go func() { defer wg.Done(); write(u) }()
		}
	}
	wg.Wait()
	return total.Load()
}

// halfOpen sends one ClientHello from attackerIP and goes silent: a
// handshake that never completes, and cannot answer a Retry. It returns
// what ends the client.
func halfOpen(t *testing.T, to string) (stop func()) {
	pc, err := net.ListenPacket("udp", attackerIP+":0")
	if err != nil {
		t.Error(err)
		return func() {}
	}
	mute := &muteConn{PacketConn: pc, closed: make(chan struct{})}
	tr := &quic.Transport{Conn: mute}
	ctx, cancel := context.WithCancel(context.Background())
	addr, _ := net.ResolveUDPAddr("udp", to)
	tlsConf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}
	done := make(chan struct{})
	go func() { defer close(done); tr.Dial(ctx, addr, tlsConf, wtQUIC()) }()
	return func() { cancel(); <-done; mute.Close(); tr.Close() }
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

func (m *muteConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-m.closed
	return 0, nil, net.ErrClosed
}

func (m *muteConn) Close() error {
	m.once.Do(func() { close(m.closed) })
	return m.PacketConn.Close()
}

// halfOpenFlood sends rate ClientHellos per second that never complete,
// until stop is closed; then it ends its clients.
func halfOpenFlood(t *testing.T, to string, rate int, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var clients []func()
	defer func() {
		for _, end := range clients {
			end()
		}
	}()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			clients = append(clients, halfOpen(t, to))
		}
	}
}

// Half-open handshakes (ClientHellos that never complete: 20/s here, 40/s
// as in the issue with MESHCAST_HOSTILE_FULL) while ordinary clients open sessions under a connection limit of
// 20: a connection counts against the limit only once its handshake is
// complete, so every client gets in (before, most were refused with
// H3_EXCESSIVE_LOAD). With a small handshake bound, new clients past half
// of it must answer a Retry, which a silent (or spoofed) ClientHello
// cannot: the bound holds and clients still get in.
func TestHalfOpenHandshakesDoNotLockClientsOut(t *testing.T) {
	for _, tc := range []struct {
		name       string
		handshakes int
		retries    bool
		attack     time.Duration
	}{
		// 120 half-open ones, six times the connection limit (past the
		// server's handshake idle timeout, 5 s, they would stop piling up
		// at about 200: MESHCAST_HOSTILE_FULL runs 30 s).
		{"count after the handshake", 2000, false, 3 * time.Second},
		// Past 20 in progress (half of 40), within half a second.
		{"Retry when they pile up", 40, true, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startWTServer(t, func(c *Config) {
				hostileConfig(c)
				c.MaxConnections = 20
				c.MaxHandshakes = tc.handshakes
				// A loaded host with the Retry's round trip must not run
				// into hostileConfig's 1 s: a refusal here is the attack's.
				c.HTTPReadHeaderTimeout = 5 * time.Second
			})
			b := startBystanders(t, ts)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			rate := 20 // CI under -race: more would starve every handshake of CPU
			if fullSize() {
				rate = 40
			}
			go func() { defer wg.Done(); halfOpenFlood(t, ts.udp, rate, stop) }()
			// A refusal is what the half-open handshakes used to cause; a
			// dial that does not finish in time on a starved host is
			// counted apart.
			attempts, refused, slow := 0, 0, 0
			deadline := time.Now().Add(tc.attack)
			if fullSize() {
				deadline = time.Now().Add(30 * time.Second)
			}
			for attempts < 8 || time.Now().Before(deadline) {
				time.Sleep(250 * time.Millisecond)
				attempts++
				c, err := ts.dialWT(t, "apikey=test&vsn=2.0.0", nil)
				switch {
				case err == nil:
					c.close()
				case isRefusal(err):
					refused++
					t.Logf("client %d refused: %v", attempts, err)
				default:
					slow++
					t.Logf("client %d did not get through in time: %v", attempts, err)
				}
			}
			close(stop)
			wg.Wait()
			inProgress, _ := ts.metric("meshcast_webtransport_handshakes_in_progress")
			retries, _ := ts.metric("meshcast_webtransport_handshakes_retries_total")
			t.Logf("%d of %d clients refused, %d too slow; handshakes in progress %s, retries %s", refused, attempts, slow, inProgress, retries)
			if refused > 0 || slow > attempts/2 {
				t.Errorf("%d of %d clients refused (%d too slow) during the half-open handshakes", refused, attempts, slow)
			}
			if n, _ := strconv.Atoi(inProgress); n > tc.handshakes {
				t.Errorf("%d handshakes in progress, over the bound of %d", n, tc.handshakes)
			}
			if n, _ := strconv.Atoi(retries); tc.retries != (n > 0) {
				t.Errorf("%s Retries sent (want some: %v)", retries, tc.retries)
			}
			b.check(t)
		})
	}
}

// One address may hold a share of --max-connections (here 0.25 × 20 = 5
// places), over WebTransport and WebSocket alike: past it its new
// connections are refused, while another address still gets in.
func TestOneAddressGetsItsShare(t *testing.T) {
	ts := startWTServer(t, func(c *Config) {
		hostileConfig(c)
		c.MaxConnections = 20
		c.AddressShare = 0.25
	})
	b := startBystanders(t, ts) // three connections from 127.0.0.1
	admitted := 0
	var attackers []*wtClient
	for i := range 8 {
		c, err := ts.dialSessionFrom(t, attackerIP, WebTransportPath, "apikey=test&vsn=2.0.0", nil)
		if err != nil {
			if !refusedForAddress(err) {
				t.Fatalf("session %d from %s: %v, want a refusal for its address", i+1, attackerIP, err)
			}
			continue
		}
		admitted++
		attackers = append(attackers, c)
		if c.str, err = c.sess.OpenStream(); err != nil {
			t.Fatal(err)
		}
		c.str.Write(wtFrame(wtOpText, []byte(heartbeatFrame)))
	}
	if admitted != 5 {
		t.Errorf("%d WebTransport sessions admitted from one address, want 5 (0.25 of 20)", admitted)
	}
	if _, err := dialWSFrom(ts, attackerIP); err == nil {
		t.Error("a WebSocket from an address holding its share was admitted")
	} else if ref := (*upgradeRefused)(nil); !errors.As(err, &ref) || ref.status != 429 || !jsonEq([]byte(ref.body), `{"error":"Too many connected users from this address"}`) {
		t.Errorf("WebSocket past the address's share: %v, want 429 Too many connected users from this address", err)
	}
	if v, _ := ts.metric(`meshcast_errors_total{reason="too_many_from_address"}`); v == "" || v == "0" {
		t.Errorf("refusals for the address counted: %q", v)
	}
	c, err := ts.dial(t, "/realtime/v1/websocket", "apikey=test&vsn=2.0.0")
	if err != nil {
		t.Fatalf("a WebSocket from another address: %v", err)
	}
	c.nc.Close()
	b.progress(t, "one address at its share")
	for _, c := range attackers {
		c.close()
	}
	b.check(t)
}

// isRefusal: the node turned the client away (a connection limit, or the
// handshake bound), as opposed to a dial that ran out of time.
func isRefusal(err error) bool {
	var ref *upgradeRefused
	var ae *quic.ApplicationError
	var te *quic.TransportError
	return errors.As(err, &ref) ||
		errors.As(err, &ae) && ae.ErrorCode == quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) ||
		errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused
}

// refusedForAddress: a session refused for its address, by HTTP (429) or,
// past the QUIC connections' share, at the QUIC level.
func refusedForAddress(err error) bool {
	var ref *upgradeRefused
	if errors.As(err, &ref) {
		return ref.status == 429 && jsonEq([]byte(ref.body), `{"error":"Too many connected users from this address"}`)
	}
	var ae *quic.ApplicationError
	return errors.As(err, &ae) && ae.ErrorCode == quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad)
}

// dialWSFrom opens a WebSocket from the local IP from.
func dialWSFrom(ts *wtTestServer, from string) (net.Conn, error) {
	var refused *upgradeRefused
	d := ws.Dialer{
		Timeout: testWait,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			return nd.DialContext(ctx, network, addr)
		},
		OnStatusError: func(status int, _ []byte, r io.Reader) {
			refused = &upgradeRefused{status: status}
			if resp, err := http.ReadResponse(bufio.NewReader(r), nil); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				refused.body = string(b)
			}
		},
	}
	nc, _, _, err := d.Dial(context.Background(), "ws://"+ts.addr+"/realtime/v1/websocket?apikey=test&vsn=2.0.0")
	if refused != nil {
		return nil, refused
	}
	return nc, err
}
