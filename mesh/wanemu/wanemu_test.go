package wanemu

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const rttMS = 80

func oneWay() time.Duration { return rttMS * time.Millisecond / 2 }

func listenUDP(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func metricsText(e *Emulator) string {
	var b bytes.Buffer
	e.Metrics().WritePrometheus(&b)
	return b.String()
}

func TestLoadAndValidate(t *testing.T) {
	c, err := Load(`{"nodes":{"127.0.0.1:1":"iad","127.0.0.1:2":"fra"},"rtt_ms":{"fra-iad":87}}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.OneWay("iad", "fra"); got != 43500*time.Microsecond {
		t.Fatalf("one way iad→fra = %v", got)
	}
	if got := c.OneWay("iad", "iad"); got != 0 {
		t.Fatalf("inside a region = %v", got)
	}
	for name, js := range map[string]string{
		"missing pair": `{"nodes":{"127.0.0.1:1":"iad","127.0.0.1:2":"fra"},"rtt_ms":{}}`,
		"name":         `{"nodes":{"localhost:1":"iad"}}`,
		"no port":      `{"nodes":{"127.0.0.1":"iad"}}`,
		"loss":         `{"nodes":{},"loss":1}`,
		"negative":     `{"nodes":{},"rtt_ms":{"a-b":-1}}`,
		"bad key":      `{"nodes":{},"rtt_ms":{"ab":1}}`,
	} {
		if _, err := Load(js); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Load("/nonexistent/wan.json"); err == nil {
		t.Error("missing file accepted")
	}
}

// TestPacketDelay sends packets from an iad socket to a fra socket, an
// iad socket and an address outside the table: only the first is late by
// the one-way delay.
func TestPacketDelay(t *testing.T) {
	a, fra, iad, other := listenUDP(t), listenUDP(t), listenUDP(t), listenUDP(t)
	cfg := Config{
		Nodes: map[string]string{a.LocalAddr().String(): "iad", fra.LocalAddr().String(): "fra", iad.LocalAddr().String(): "iad"},
		RTT:   map[string]float64{"iad-fra": rttMS},
	}
	e, err := New(cfg, "iad")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	w := e.PacketConn(a)
	recv := func(pc net.PacketConn) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := w.WriteTo([]byte("hello"), pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		return time.Since(start)
	}
	for range 5 {
		if d := recv(fra); d < oneWay() || d > oneWay()+30*time.Millisecond {
			t.Fatalf("iad→fra packet took %v, want %v (+ scheduling)", d, oneWay())
		}
		if d := recv(iad); d > 10*time.Millisecond {
			t.Fatalf("iad→iad packet took %v, want no delay", d)
		}
	}
	recv(other)
	m := metricsText(e)
	for _, want := range []string{
		`meshcast_wanemu_packets_total{kind="mesh",to="fra"} 5`,
		`meshcast_wanemu_bytes_total{kind="mesh",to="fra"} 25`,
		`meshcast_wanemu_packets_total{kind="mesh",to="iad"} 5`,
		`meshcast_wanemu_unknown_total{kind="mesh"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
}

// TestPacketOrderAndLoss: without jitter packets keep their order; with
// loss about that fraction is dropped, and counted.
func TestPacketOrderAndLoss(t *testing.T) {
	a, b := listenUDP(t), listenUDP(t)
	cfg := Config{
		Nodes: map[string]string{a.LocalAddr().String(): "iad", b.LocalAddr().String(): "sin"},
		RTT:   map[string]float64{"iad-sin": 20},
		Loss:  0.2,
	}
	e, err := New(cfg, "iad")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	w := e.PacketConn(a)
	const n = 300
	for i := range n {
		w.WriteTo([]byte{byte(i >> 8), byte(i)}, b.LocalAddr())
		if i%20 == 19 {
			time.Sleep(2 * time.Millisecond) // spread them out: the receiver's socket buffer is small
		}
	}
	got, last := 0, -1
	buf := make([]byte, 4)
	for {
		b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		k, _, err := b.ReadFrom(buf)
		if err != nil {
			break
		}
		v := int(buf[0])<<8 | int(buf[1])
		if k != 2 || v <= last {
			t.Fatalf("packet %d after %d", v, last)
		}
		last = v
		got++
	}
	if got < n*6/10 || got > n*95/100 {
		t.Fatalf("%d of %d packets arrived with 20%% loss", got, n)
	}
	if !strings.Contains(metricsText(e), `meshcast_wanemu_dropped_total{kind="mesh",to="sin"} `+fmt.Sprint(n-got)) {
		t.Fatalf("drops not counted:\n%s", metricsText(e))
	}
}

// TestStreamDelay dials an echo server through the emulator: the dial
// costs one round trip, each echo another; writes done before Close still
// reach the peer.
func TestStreamDelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		for range 3 {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(buf)
		}
		rest, _ := io.ReadAll(c)
		got <- rest
	}()
	cfg := Config{Nodes: map[string]string{ln.Addr().String(): "fra"}, RTT: map[string]float64{"iad-fra": rttMS}}
	e, err := New(cfg, "iad")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	nt := &fakeDialer{}
	tr := e.Transport(nt)
	start := time.Now()
	c, err := tr.DialTimeout(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < rttMS*time.Millisecond {
		t.Fatalf("dial took %v, less than a round trip", d)
	}
	buf := make([]byte, 5)
	for range 3 {
		start := time.Now()
		c.Write([]byte("hello"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("echo %q, %v", buf, err)
		}
		if d := time.Since(start); d < rttMS*time.Millisecond || d >= 2*rttMS*time.Millisecond {
			t.Fatalf("echo took %v, want one round trip of %d ms (plus scheduling)", d, rttMS)
		}
	}
	c.Write([]byte("bye"))
	c.Close()
	select {
	case b := <-got:
		if string(b) != "bye" {
			t.Fatalf("after close the peer got %q", b)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the write before Close never arrived")
	}
	if m := metricsText(e); !strings.Contains(m, `meshcast_wanemu_bytes_total{kind="gossip_tcp",to="fra"} 33`) {
		t.Fatalf("stream bytes not counted (15 out, 15 back, 3 more):\n%s", m)
	}
}

// fakeDialer is the part of a NodeAwareTransport the stream test uses.
type fakeDialer struct{ memberlist.NodeAwareTransport }

func (fakeDialer) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", a.Addr, timeout)
}

// TestGossipDelayed runs two real memberlist members, iad and fra, through
// the emulator: a probe's round trip and a join's push-pull take at least
// the emulated RTT, and both the UDP and the TCP side are counted.
func TestGossipDelayed(t *testing.T) {
	ports := freePorts(t, 2)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	cfg := Config{Nodes: map[string]string{addr(0): "iad", addr(1): "fra"}, RTT: map[string]float64{"iad-fra": rttMS}}
	var mls []*memberlist.Memberlist
	var ems []*Emulator
	for i, region := range []string{"iad", "fra"} {
		e, err := New(cfg, region)
		if err != nil {
			t.Fatal(err)
		}
		ems = append(ems, e)
		mc := memberlist.DefaultLANConfig()
		mc.Name = region
		mc.BindAddr, mc.BindPort = "127.0.0.1", ports[i]
		mc.AdvertisePort = ports[i]
		mc.Logger = log.New(io.Discard, "", 0)
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: ports[i], Logger: mc.Logger})
		if err != nil {
			t.Skipf("gossip port taken: %v", err)
		}
		mc.Transport = e.Transport(nt)
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		mls = append(mls, ml)
	}
	defer func() {
		for i, ml := range mls {
			ml.Shutdown()
			ems[i].Close()
		}
	}()
	start := time.Now()
	if _, err := mls[1].Join([]string{addr(0)}); err != nil {
		t.Fatal(err)
	}
	// Dial (one round trip), then state out and state back (one more).
	if d := time.Since(start); d < 2*rttMS*time.Millisecond {
		t.Fatalf("join's push-pull took %v, under two emulated round trips", d)
	}
	udpAddr, _ := net.ResolveUDPAddr("udp", addr(0))
	for range 3 {
		rtt, err := mls[1].Ping("iad", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if rtt < rttMS*time.Millisecond {
			t.Fatalf("gossip ping rtt %v under the emulated %d ms", rtt, rttMS)
		}
	}
	m := metricsText(ems[1])
	for _, want := range []string{`meshcast_wanemu_packets_total{kind="gossip_udp",to="iad"}`, `meshcast_wanemu_bytes_total{kind="gossip_tcp",to="iad"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("fra's metrics lack %s:\n%s", want, m)
		}
	}
	if strings.Contains(m, "unknown") {
		t.Errorf("traffic to unknown addresses:\n%s", m)
	}
}

// freePorts finds n ports free for both TCP and UDP on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for len(out) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		out = append(out, p)
	}
	return out
}
