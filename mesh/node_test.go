package mesh

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Handler that keeps what it was given, and answers
// OwnPresence with own (nil: none).
type recorder struct {
	delivered chan *meshproto.Broadcast
	snapshots chan presence.Snapshot
	own       func(topic string) presence.Snapshot
}

func newRecorder() *recorder {
	return &recorder{delivered: make(chan *meshproto.Broadcast, 100), snapshots: make(chan presence.Snapshot, 1000)}
}

func (r *recorder) Deliver(b *meshproto.Broadcast)            { r.delivered <- b }
func (r *recorder) ApplyPresence(string, presence.Delta) bool { return true }
func (r *recorder) ApplyPresenceSnapshot(_ string, s presence.Snapshot) {
	select {
	case r.snapshots <- s:
	default:
	}
}
func (r *recorder) NodeDown(string) {}
func (r *recorder) OwnPresence(topic string) presence.Snapshot {
	if r.own != nil {
		return r.own(topic)
	}
	return presence.Snapshot{}
}

func startNode(t *testing.T, name, secret string, join []string, h Handler, tweak ...func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		Name:          name,
		GossipAddr:    "127.0.0.1:0",
		MeshAddr:      "127.0.0.1:0",
		Join:          join,
		ClusterSecret: []byte(secret),
		Gossip:        GossipConfig{ProbeInterval: 200 * time.Millisecond},
		PeerTimeout:   time.Second,
		Logger:        slog.New(slog.DiscardHandler),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	n, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func metric(n *Node, name string) string {
	var b strings.Builder
	n.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func TestNodesConnectAndDeliver(t *testing.T) {
	ra, rb := newRecorder(), newRecorder()
	a := startNode(t, "a", "s3cret", nil, ra)
	b := startNode(t, "b", "s3cret", []string{a.GossipAddr()}, rb)
	if !waitFor(5*time.Second, func() bool { return a.Connected(b.ID()) && b.Connected(a.ID()) }) {
		t.Fatal("nodes never connected")
	}
	<-b.Subscribe("t")
	if !waitFor(5*time.Second, func() bool { return len(a.InterestedNodes("t")) == 1 }) {
		t.Fatal("a never learned b's interest")
	}
	if sent := a.Publish(&meshproto.Broadcast{Topic: "t", Event: "e", Payload: []byte(`{}`), Enc: 1}); sent != 1 {
		t.Fatalf("Publish queued %d frames, want 1", sent)
	}
	select {
	case got := <-rb.delivered:
		if got.Topic != "t" || got.Origin != a.ID() {
			t.Fatalf("delivered %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("broadcast not delivered")
	}
	if sent := a.Publish(&meshproto.Broadcast{Topic: "nobody", Event: "e", Payload: []byte(`{}`)}); sent != 0 {
		t.Fatalf("a topic without remote interest went to %d nodes", sent)
	}
}

// TestPeerWithoutSecretIsRefused points a node with another secret at a
// node's mesh directly (its gossip could not even decrypt ours): the QUIC
// handshake completes, but the Hello MAC does not, and nothing it sends is
// processed. A node with the right secret sending the same frames at the
// same time is the control: once its broadcast has arrived, mallory's
// (queued before it, redialed again and again) would have too.
func TestPeerWithoutSecretIsRefused(t *testing.T) {
	ra := newRecorder()
	a := startNode(t, "a", "right", nil, ra)
	mallory := startNode(t, "mallory", "wrong", nil, newRecorder())
	good := startNode(t, "good", "right", nil, newRecorder())
	inject := func(from *Node, origin string) {
		from.memberUp(Member{ID: a.ID(), Name: "a", MeshAddr: a.self.MeshAddr})
		from.mu.RLock()
		p := from.peers[a.ID()]
		from.mu.RUnlock()
		p.send(laneControl, meshproto.Append(nil, &meshproto.InterestAdd{Topics: []string{"t-" + origin}}))
		p.send(laneData, meshproto.AppendBroadcast(nil, &meshproto.Broadcast{Topic: "t", Event: origin, Payload: []byte(`{}`), Enc: 1, Origin: origin}))
	}
	inject(mallory, "mallory")
	if !waitFor(5*time.Second, func() bool { return metricInt(a, "meshcast_mesh_auth_failures_total") >= 2 }) {
		t.Fatal("a did not refuse the peer without the secret, twice")
	}
	inject(good, "good")
	select {
	case b := <-ra.delivered:
		if b.Origin != "good" {
			t.Fatalf("a delivered a frame from an unauthenticated peer: %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the control peer's broadcast never arrived")
	}
	if got := a.InterestedNodes("t-mallory"); len(got) != 0 {
		t.Errorf("a recorded mallory's interest: %v", got)
	}
	if mallory.Connected(a.ID()) {
		t.Error("a peer without the secret counts as connected")
	}
	// Gossip with the wrong key is refused too.
	if _, err := mallory.ms.join([]string{a.GossipAddr()}); err == nil && waitFor(time.Second, func() bool {
		for _, m := range a.Members() {
			if m.ID == mallory.ID() {
				return true
			}
		}
		return false
	}) {
		t.Fatal("a node with the wrong secret joined the gossip")
	}
}

// A malformed frame from an authenticated peer resets that peer's
// connection (it redials and the cluster works again) and no other.
func TestBadFrameFromPeerClosesOnlyThatConnection(t *testing.T) {
	ra, rb, rc := newRecorder(), newRecorder(), newRecorder()
	a := startNode(t, "a", "s", nil, ra)
	b := startNode(t, "b", "s", []string{a.GossipAddr()}, rb)
	c := startNode(t, "c", "s", []string{a.GossipAddr()}, rc)
	if !waitFor(5*time.Second, func() bool {
		return b.Connected(a.ID()) && c.Connected(a.ID()) && a.Connected(b.ID()) && a.Connected(c.ID()) &&
			b.Connected(c.ID()) && c.Connected(b.ID())
	}) {
		t.Fatal("never connected")
	}
	bConnects, cConnects := metric(b, "meshcast_mesh_connects_total"), metric(c, "meshcast_mesh_connects_total")
	// A frame with an unknown type on b's data lane toward a.
	b.mu.RLock()
	p := b.peers[a.ID()]
	b.mu.RUnlock()
	p.send(laneData, []byte{0, 0, 0, 2, 0xEE, meshproto.Version})
	if !waitFor(5*time.Second, func() bool { return metric(a, "meshcast_mesh_bad_frames_total") == "1" }) {
		t.Fatal("a did not count the bad frame")
	}
	// b's connection was reset: b dials again.
	if !waitFor(10*time.Second, func() bool { return metric(b, "meshcast_mesh_connects_total") > bConnects && b.Connected(a.ID()) }) {
		t.Fatalf("b's connection to a was not reset and redialed (connects %s)", metric(b, "meshcast_mesh_connects_total"))
	}
	<-b.Subscribe("t")
	<-c.Subscribe("t")
	if !waitFor(10*time.Second, func() bool { return len(a.InterestedNodes("t")) == 2 }) {
		t.Fatal("the cluster did not recover from a bad frame")
	}
	a.Publish(&meshproto.Broadcast{Topic: "t", Payload: []byte(`{}`)})
	for name, r := range map[string]*recorder{"b": rb, "c": rc} {
		select {
		case <-r.delivered:
		case <-time.After(5 * time.Second):
			t.Fatalf("no delivery to %s after recovery", name)
		}
	}
	if got := metric(c, "meshcast_mesh_connects_total"); got != cConnects {
		t.Errorf("c's connection was reset too (connects %s → %s)", cConnects, got)
	}
}

// TestJoinByDNSName joins through a host name, as fly.io's <app>.internal
// is used: memberlist resolves it and tries every address record.
func TestJoinByDNSName(t *testing.T) {
	a := startNode(t, "a", "s", nil, newRecorder())
	_, port, _ := strings.Cut(a.GossipAddr(), ":")
	b := startNode(t, "b", "s", []string{"localhost:" + port}, newRecorder())
	if !waitFor(10*time.Second, func() bool { return len(b.Members()) == 1 && len(a.Members()) == 1 }) {
		t.Fatalf("join by name failed: a sees %v, b sees %v", a.Members(), b.Members())
	}
}

func metricInt(n *Node, name string) int {
	v, _ := strconv.Atoi(metric(n, name))
	return v
}

// bigPresence is an owner's snapshot of about size bytes.
func bigPresence(owner string, size int) presence.Snapshot {
	s := presence.Snapshot{Owner: owner, Seq: 7}
	meta := []byte(`{"blob":"` + strings.Repeat("x", 64<<10) + `"}`)
	for i := 0; i*len(meta) < size; i++ {
		s.Entries = append(s.Entries, presence.Entry{Owner: owner, Holder: uint64(i + 1), Key: fmt.Sprintf("k%d", i), Ref: fmt.Sprintf("r%d", i), Meta: meta})
	}
	return s
}

// awaitSnapshot waits for a snapshot with want entries.
func awaitSnapshot(t *testing.T, r *recorder, want int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s := <-r.snapshots:
			if len(s.Entries) == want {
				return
			}
		case <-timeout:
			t.Fatalf("no snapshot with %d entries arrived", want)
		}
	}
}

// A presence snapshot larger than any mesh frame may be (20 MB, the limit
// is 16 MiB) crosses in parts: the link is not reset and the receiver gets
// every entry at once.
func TestSnapshotLargerThanAFrame(t *testing.T) {
	ra, rb := newRecorder(), newRecorder()
	a := startNode(t, "a", "s", nil, ra)
	ra.own = func(string) presence.Snapshot { return bigPresence(a.ID(), 20<<20) }
	<-a.Subscribe("t")
	b := startNode(t, "b", "s", []string{a.GossipAddr()}, rb)
	want := len(bigPresence(a.ID(), 20<<20).Entries)
	if !waitFor(5*time.Second, func() bool { return a.Connected(b.ID()) && b.Connected(a.ID()) }) {
		t.Fatal("never connected")
	}
	<-b.Subscribe("t") // a answers with its snapshot
	awaitSnapshot(t, rb, want)
	if got := metric(a, "meshcast_mesh_connects_total"); got != "1" {
		t.Errorf("a connected %s times to b, want 1: the snapshot broke the link", got)
	}
}

// An interest set larger than a frame (20 topics of 1 MB) reaches a new
// peer whole: it routes broadcasts of every topic to the node.
func TestInterestSnapshotLargerThanAFrame(t *testing.T) {
	a := startNode(t, "a", "s", nil, newRecorder())
	var topics []string
	for i := range 20 {
		topic := fmt.Sprintf("%02d", i) + strings.Repeat("t", 1<<20)
		topics = append(topics, topic)
		<-a.Subscribe(topic)
	}
	b := startNode(t, "b", "s", []string{a.GossipAddr()}, newRecorder())
	if !waitFor(20*time.Second, func() bool {
		for _, topic := range topics {
			if len(b.InterestedNodes(topic)) != 1 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("b never learned all of a's interests")
	}
	if got := metric(b, "meshcast_mesh_connects_total"); got != "1" {
		t.Errorf("b connected %s times to a, want 1", got)
	}
}

// A control-lane overflow with a snapshot larger than the lane's queue
// resyncs once and completes; it does not loop (each resync overflowing
// the queue again) as it did when the resync went through the queue.
func TestResyncLargerThanQueueCompletes(t *testing.T) {
	ra, rb := newRecorder(), newRecorder()
	small := func(c *Config) { c.QueueBytes = 1 << 20 }
	a := startNode(t, "a", "s", nil, ra, small)
	snap := bigPresence(a.ID(), 9<<20) // 8.7 MB in the report
	ra.own = func(string) presence.Snapshot { return snap }
	b := startNode(t, "b", "s", []string{a.GossipAddr()}, rb, small)
	if !waitFor(5*time.Second, func() bool { return a.Connected(b.ID()) && b.Connected(a.ID()) }) {
		t.Fatal("never connected")
	}
	<-a.Subscribe("t")
	<-b.Subscribe("t")
	awaitSnapshot(t, rb, len(snap.Entries))
	// Overflow a's control lane toward b.
	a.mu.RLock()
	p := a.peers[b.ID()]
	a.mu.RUnlock()
	before := metricInt(a, fmt.Sprintf(`meshcast_mesh_bytes_sent_total{peer=%q,lane="control"}`, b.ID()))
	filler := meshproto.Append(nil, &meshproto.PresenceSyncRequest{Topic: strings.Repeat("f", 64<<10)})
	for range 40 { // 2.5 MiB > the 1 MiB queue
		p.send(laneControl, filler)
	}
	awaitSnapshot(t, rb, len(snap.Entries))
	// Once the resync is through, the lane goes quiet (pings aside): a
	// bounded amount was sent, not a loop of snapshots.
	sentNow := func() int {
		return metricInt(a, fmt.Sprintf(`meshcast_mesh_bytes_sent_total{peer=%q,lane="control"}`, b.ID())) - before
	}
	last := sentNow()
	if !waitFor(10*time.Second, func() bool {
		time.Sleep(300 * time.Millisecond)
		now := sentNow()
		quiet := now-last < 1<<10
		last = now
		return quiet
	}) {
		t.Fatal("the control lane never went quiet after the resync: it loops")
	}
	if sent, size := last, 9<<20; sent > 3*size {
		t.Errorf("a sent %d MiB on the control lane after one overflow, for a %d MiB snapshot: the resync loops", sent>>20, size>>20)
	}
}

// A node that was never started closes cleanly.
func TestCloseWithoutStart(t *testing.T) {
	n, err := New(Config{Name: "x", GossipAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", ClusterSecret: []byte("s")}, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	n.Close()
}

// A thousand refused handshakes log a handful of lines, not a thousand.
// Half the dialers hold another cluster's key, half present no
// certificate: TLS refuses both, and each is one auth failure.
func TestRefusedHandshakesAreRateLimitedInLogs(t *testing.T) {
	var logs bytes.Buffer
	a := startNode(t, "a", "s", nil, newRecorder(), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	_, wrongKey, err := meshTLS([]byte("not s"), nil)
	if err != nil {
		t.Fatal(err)
	}
	noCert := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	const dials = 200
	for i := range dials {
		tc := wrongKey
		if i%2 == 1 {
			tc = noCert
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := quic.DialAddr(ctx, a.self.MeshAddr, tc, &quic.Config{})
		cancel()
		if err == nil {
			// TLS 1.3: the client is done before the server has checked
			// its certificate; the server then closes the connection.
			select {
			case <-conn.Context().Done():
			case <-time.After(5 * time.Second):
				t.Fatal("a peer without the mesh key kept its connection")
			}
		}
	}
	if !waitFor(5*time.Second, func() bool { return metricInt(a, "meshcast_mesh_auth_failures_total") == dials }) {
		t.Fatalf("%d auth failures counted, want %d", metricInt(a, "meshcast_mesh_auth_failures_total"), dials)
	}
	if lines := strings.Count(logs.String(), "mesh peer refused"); lines == 0 || lines > 10 {
		t.Errorf("%d log lines for %d refused handshakes, want a few:\n%s", lines, dials, logs.String())
	}
}

// TestJoinByDNSServer joins through <app>.internal served by a real DNS
// server on loopback, as fly.io's resolver lists every machine of an app:
// the name has records for both nodes, one of them not up (a stale
// record), and the node joins the one that is.
func TestJoinByDNSServer(t *testing.T) {
	a := startNode(t, "a", "s", nil, newRecorder())
	host, port, _ := strings.Cut(a.GossipAddr(), ":")
	mux := dns.NewServeMux()
	mux.HandleFunc("meshcast.internal.", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			switch q.Qtype {
			case dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(host)})
			case dns.TypeAAAA:
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 5}, AAAA: net.ParseIP("fdaa::dead")})
			}
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	b := startNode(t, "b", "s", []string{"meshcast.internal:" + port}, newRecorder(), func(c *Config) { c.Resolver = resolver })
	if !waitFor(10*time.Second, func() bool { return len(b.Members()) == 1 && len(a.Members()) == 1 }) {
		t.Fatalf("join through the DNS server failed: a sees %v, b sees %v", a.Members(), b.Members())
	}
}
