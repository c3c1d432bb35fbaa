package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/quic-go/quic-go"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// hostileCluster is three healthy nodes: a publishes on "t" at a steady
// rate, b and c listen. Attacks aim at a's gossip and mesh ports.
type hostileCluster struct {
	a, b, c      *Node
	rb, rc       *counter
	published    atomic.Int64
	stop         chan struct{}
	wg           sync.WaitGroup
	bDial, cDial string // connects_total of b and c before the attack
}

func startHostileCluster(t *testing.T, tweakA ...func(*Config)) *hostileCluster {
	t.Helper()
	h := &hostileCluster{rb: new(counter), rc: new(counter), stop: make(chan struct{})}
	// Timeouts a loaded test host does not trip: a reset must come from
	// the attack.
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	patient := func(c *Config) {
		c.PeerTimeout = 5 * time.Second
		c.Gossip.ProbeInterval = 500 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h.a = startNode(t, "a", "s", nil, new(counter), append([]func(*Config){patient}, tweakA...)...)
	h.b = startNode(t, "b", "s", []string{h.a.GossipAddr()}, h.rb, patient)
	h.c = startNode(t, "c", "s", []string{h.a.GossipAddr()}, h.rc, patient)
	if !waitFor(10*time.Second, func() bool {
		return h.a.Connected(h.b.ID()) && h.a.Connected(h.c.ID()) && h.b.Connected(h.a.ID()) && h.c.Connected(h.a.ID()) &&
			h.b.Connected(h.c.ID()) && h.c.Connected(h.b.ID())
	}) {
		t.Fatal("the healthy nodes never connected")
	}
	<-h.b.Subscribe("t")
	<-h.c.Subscribe("t")
	if !waitFor(10*time.Second, func() bool { return len(h.a.InterestedNodes("t")) == 2 }) {
		t.Fatal("a never learned b's and c's interest")
	}
	// connects_total counts after Connected turns true.
	if !waitFor(5*time.Second, func() bool {
		return metric(h.b, "meshcast_mesh_connects_total") == "2" && metric(h.c, "meshcast_mesh_connects_total") == "2"
	}) {
		t.Fatal("b and c did not count their two connections")
	}
	h.bDial, h.cDial = "2", "2"
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				h.a.Publish(&meshproto.Broadcast{Topic: "t", Event: "e", Payload: []byte(`{}`), Enc: 1})
				h.published.Add(1)
			}
		}
	}()
	return h
}

// finish stops the traffic and checks that the cluster did not notice the
// attack: every broadcast reached both listeners, no healthy connection
// was reset, the membership is the three nodes, and the goroutines the
// attack made are gone.
func (h *hostileCluster) finish(t *testing.T, baseline int) {
	t.Helper()
	// Traffic goes on for a while after the attack, while what the attack
	// left behind (connections being timed out) is still there.
	after := h.published.Load() + 100
	if !waitFor(10*time.Second, func() bool { return h.published.Load() >= after }) {
		t.Fatal("a stopped publishing")
	}
	close(h.stop)
	h.wg.Wait()
	n := h.published.Load()
	if !waitFor(10*time.Second, func() bool { return h.rb.n.Load() == n && h.rc.n.Load() == n }) {
		t.Fatalf("published %d broadcasts during the attack; b got %d, c got %d", n, h.rb.n.Load(), h.rc.n.Load())
	}
	if got := metric(h.b, "meshcast_mesh_connects_total"); got != h.bDial {
		t.Errorf("b's connection to a was reset (connects %s → %s)", h.bDial, got)
	}
	if got := metric(h.c, "meshcast_mesh_connects_total"); got != h.cDial {
		t.Errorf("c's connection to a was reset (connects %s → %s)", h.cDial, got)
	}
	if m := h.a.Members(); len(m) != 2 || h.a.ms.alive() != 3 {
		t.Errorf("a's members after the attack: %+v (%d alive in gossip)", m, h.a.ms.alive())
	}
	// The attack's connections time out within the handshake timeout;
	// memberlist and quic-go start and end goroutines of their own, so
	// allow a few.
	if !waitFor(3*handshakeTimeout, func() bool { return runtime.NumGoroutine() <= baseline+5 }) {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the attack, %d before:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
	}
}

// Gossip without the cluster key: a memberlist with another key and one
// with none try to join, and garbage arrives on the gossip port over UDP
// and TCP. Nothing joins, and the cluster carries on.
func TestGossipWithoutTheKeyChangesNothing(t *testing.T) {
	h := startHostileCluster(t)
	baseline := runtime.NumGoroutine()
	target := h.a.GossipAddr()

	for name, key := range map[string][]byte{"wrong key": deriveKey([]byte("wrong"), "gossip"), "no key": nil} {
		mc := memberlist.DefaultLANConfig()
		mc.Name, mc.BindAddr, mc.BindPort = "mallory-"+name, "127.0.0.1", 0
		mc.SecretKey = key
		mc.Logger = log.New(io.Discard, "", 0)
		mc.TCPTimeout = time.Second
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		if k, err := ml.Join([]string{target}); err == nil || k != 0 {
			t.Errorf("%s: joined a's gossip (%d contacted, %v)", name, k, err)
		}
		if n := ml.NumMembers(); n != 1 {
			t.Errorf("%s: mallory sees %d members", name, n)
		}
		ml.Shutdown()
	}

	// Garbage datagrams, some shaped like memberlist's (a message type
	// byte first, an encryption version byte first).
	udp, err := net.Dial("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for i := range 500 {
		p := randomBytes(1 + i%1400)
		p[0] = byte(i % 16) // pingMsg, pushPullMsg, compoundMsg, encryptMsg, …
		udp.Write(p)
	}
	// Garbage streams, and streams that send nothing (memberlist's TCP
	// timeout ends them).
	var conns []net.Conn
	for i := range 40 {
		c, err := net.Dial("tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			p := randomBytes(1 + i*50)
			p[0] = byte(i % 16)
			c.Write(p)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
	h.finish(t, baseline)
}

// Garbage to the mesh port: random datagrams, packets shaped like QUIC
// Initials, TLS with another ALPN, TLS without the mesh key (another
// cluster's, or no certificate), and QUIC connections of a peer holding
// the key that send a garbage Hello, half a Hello, or nothing. The first
// kinds are dropped by QUIC; the others are refused by TLS, or by the
// Hello check or its timeout; each that got as far as a connection is one
// auth failure, and none of it touches the healthy peers.
func TestGarbageToTheMeshPortChangesNothing(t *testing.T) {
	h := startHostileCluster(t)
	baseline := runtime.NumGoroutine()
	target := h.a.self.MeshAddr
	failures := metricInt(h.a, "meshcast_mesh_auth_failures_total")

	udp, err := net.Dial("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for i := range 300 {
		udp.Write(randomBytes(1 + i*4))
		udp.Write(quicInitialLike())
	}

	// These attackers hold the cluster's key: they get through TLS.
	_, client, err := meshTLS([]byte("s"), nil)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(tc *tls.Config) (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return quic.DialAddr(ctx, target, tc, &quic.Config{MaxIdleTimeout: 30 * time.Second})
	}

	wrongALPN := client.Clone()
	wrongALPN.NextProtos = []string{"h3"}
	if conn, err := dial(wrongALPN); err == nil {
		conn.CloseWithError(0, "")
		t.Error("a TLS client with the ALPN h3 completed a handshake with the mesh")
	}
	_, otherKey, err := meshTLS([]byte("another cluster"), nil)
	if err != nil {
		t.Fatal(err)
	}
	noCert := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	for name, tc := range map[string]*tls.Config{"another cluster's key": otherKey, "no certificate": noCert} {
		for range 3 {
			// TLS 1.3 lets a client finish before the server has checked
			// its certificate: then the server closes at once.
			if conn, err := dial(tc); err == nil {
				select {
				case <-conn.Context().Done():
				case <-time.After(handshakeTimeout):
					t.Errorf("%s: kept a connection to the mesh", name)
				}
				conn.CloseWithError(0, "")
			}
		}
	}

	// Attacks that complete TLS; each must see a close the connection.
	attacks := map[string]func(*quic.Conn) error{
		"garbage Hello": func(c *quic.Conn) error {
			s, err := c.OpenStream()
			if err != nil {
				return err
			}
			_, err = s.Write(append([]byte{0, 0, 0, 40, byte(meshproto.TypeHello), meshproto.Version}, randomBytes(40)...))
			return err
		},
		"random bytes": func(c *quic.Conn) error {
			s, err := c.OpenStream()
			if err != nil {
				return err
			}
			_, err = s.Write(randomBytes(3000))
			return err
		},
		"oversized Hello": func(c *quic.Conn) error {
			s, err := c.OpenStream()
			if err != nil {
				return err
			}
			_, err = s.Write([]byte{0, 1, 0, 0, byte(meshproto.TypeHello), meshproto.Version})
			return err
		},
		"half a Hello": func(c *quic.Conn) error {
			s, err := c.OpenStream()
			if err != nil {
				return err
			}
			_, err = s.Write(meshproto.Append(nil, &meshproto.Hello{NodeID: "mallory", MAC: make([]byte, 32)})[:10])
			return err
		},
		"stream, no Hello": func(c *quic.Conn) error {
			s, err := c.OpenStream()
			if err != nil {
				return err
			}
			_, err = s.Write(nil)
			return err
		},
		"no stream": func(*quic.Conn) error { return nil },
	}
	var wg sync.WaitGroup
	for name, attack := range attacks {
		for range 3 {
			conn, err := dial(client)
			if err != nil {
				t.Fatalf("%s: the QUIC handshake with the mesh failed: %v", name, err)
			}
			attack(conn) // the mesh may close the connection first
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-conn.Context().Done():
					var aerr *quic.ApplicationError
					if cause := context.Cause(conn.Context()); !errors.As(cause, &aerr) || aerr.ErrorCode != errCodeHandshake {
						t.Errorf("%s: the connection ended with %v, want the handshake error code", name, cause)
					}
				case <-time.After(3 * handshakeTimeout):
					t.Errorf("%s: the mesh kept the connection open past the handshake timeout", name)
				}
				conn.CloseWithError(0, "")
			}()
		}
	}
	wg.Wait()
	// Every connection is one auth failure: the wrong ALPN, the six
	// without the key and the attacks (those that sent nothing too), and
	// some of the Initial-like datagrams (quic-go starts a connection for
	// each, until Retry is required).
	want := 1 + 6 + 3*len(attacks)
	if !waitFor(5*time.Second, func() bool { return metricInt(h.a, "meshcast_mesh_auth_failures_total")-failures >= want }) {
		t.Errorf("%d refused handshakes counted, want %d", metricInt(h.a, "meshcast_mesh_auth_failures_total")-failures, want)
	}
	h.finish(t, baseline)
}

// An authenticated peer that floods a with snapshot parts that never end,
// of entries with no bytes, is reset when they pass a's snapshot limit;
// the other peer's connection stays up and keeps delivering.
func TestSnapshotFloodFromAPeerResetsOnlyThatPeer(t *testing.T) {
	h := startHostileCluster(t, func(c *Config) { c.MaxSnapshotBytes = 1 << 20 })
	baseline := runtime.NumGoroutine()
	h.b.mu.RLock()
	p := h.b.peers[h.a.ID()]
	h.b.mu.RUnlock()
	bad := metricInt(h.a, "meshcast_mesh_bad_frames_total")
	// 200 parts of 1000 empty entries: 4 KB each on the wire, and
	// 200,000 entries held if nothing counted them.
	for i := range 200 {
		p.send(laneControl, meshproto.Append(nil, &meshproto.PresenceSnapshot{
			Topic: "t", Owner: "b-forged", Seq: 1, Part: uint64(i), More: true, Entries: make([]meshproto.PresenceEntry, 1000)}))
	}
	if !waitFor(10*time.Second, func() bool { return metricInt(h.a, "meshcast_mesh_bad_frames_total") > bad }) {
		t.Fatal("a held the flood of snapshot parts without resetting b")
	}
	// b redials; c was never touched.
	if !waitFor(10*time.Second, func() bool { return metric(h.b, "meshcast_mesh_connects_total") > h.bDial && h.b.Connected(h.a.ID()) }) {
		t.Fatal("b's connection to a was not reset and redialed")
	}
	h.bDial = metric(h.b, "meshcast_mesh_connects_total")
	got := h.rb.n.Load()
	if !waitFor(10*time.Second, func() bool { return h.rb.n.Load() > got+10 }) {
		t.Fatal("b gets nothing after its reset")
	}
	// The reset is of the connection b dials for its sends; a's sends to b
	// go on a's own connection, so b too has every broadcast.
	h.finish(t, baseline)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// quicInitialLike returns a 1200-byte datagram with the long header of a
// QUIC v1 Initial packet (random connection IDs) and a random payload,
// which the server cannot decrypt.
func quicInitialLike() []byte {
	b := []byte{0xc0 | randomBytes(1)[0]&0x03, 0, 0, 0, 1, 8}
	b = append(b, randomBytes(8)...) // destination connection ID
	b = append(b, 8)
	b = append(b, randomBytes(8)...) // source connection ID
	b = append(b, 0)                 // no token
	b = binary.BigEndian.AppendUint16(b, 0x4000|uint16(1200-len(b)-2))
	return append(b, randomBytes(1200-len(b))...)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
