package mesh

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestGossipTimings(t *testing.T) {
	cases := []struct {
		name           string
		g              GossipConfig
		interval, wait time.Duration
		mult, maxMult  int
	}{
		{"lan defaults", GossipConfig{}, 125 * time.Millisecond, 62500 * time.Microsecond, 11, 3},
		{"lan explicit", GossipConfig{Profile: "lan"}, 125 * time.Millisecond, 62500 * time.Microsecond, 11, 3},
		{"lan, the tests' 200ms", GossipConfig{ProbeInterval: 200 * time.Millisecond}, 200 * time.Millisecond, 100 * time.Millisecond, 7, 3},
		{"lan, the old 1s", GossipConfig{ProbeInterval: time.Second}, time.Second, 500 * time.Millisecond, 3, 3},
		{"lan, probe timeout given", GossipConfig{ProbeTimeout: 100 * time.Millisecond}, 125 * time.Millisecond, 100 * time.Millisecond, 11, 3},
		{"lan, probe timeout over the interval", GossipConfig{ProbeTimeout: time.Second}, 125 * time.Millisecond, 125 * time.Millisecond, 11, 3},
		{"lan, suspicion given", GossipConfig{SuspicionMult: 5}, 125 * time.Millisecond, 62500 * time.Microsecond, 5, 3},
		// The flag's old default of 1 s overrode the wan profile's
		// timings; now wan keeps memberlist's unless told otherwise.
		{"wan defaults", GossipConfig{Profile: "wan"}, 5 * time.Second, 3 * time.Second, 6, 6},
		{"wan, interval given", GossipConfig{Profile: "wan", ProbeInterval: time.Second}, time.Second, 500 * time.Millisecond, 6, 6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mc := memberlist.DefaultLANConfig()
			if c.g.Profile == "wan" {
				mc = memberlist.DefaultWANConfig()
			}
			applyGossipTimings(mc, c.g)
			if mc.ProbeInterval != c.interval || mc.ProbeTimeout != c.wait || mc.SuspicionMult != c.mult || mc.SuspicionMaxTimeoutMult != c.maxMult {
				t.Fatalf("probe interval %v, timeout %v, suspicion ×%d (max ×%d); want %v, %v, ×%d (×%d)",
					mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult, mc.SuspicionMaxTimeoutMult, c.interval, c.wait, c.mult, c.maxMult)
			}
		})
	}
	if _, err := New(Config{Name: "x", GossipAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", ClusterSecret: []byte("s"), Gossip: GossipConfig{Profile: "lna"}}, newRecorder()); err == nil {
		t.Fatal("a misspelt gossip profile was accepted")
	}
}

// TestCrashedMemberCountedAsFailed kills a node without a leave and checks
// the failure detector's metrics on the others: a suspicion, a death, a
// failed member, no graceful leave and no false death; then a graceful
// leave counts as one. (Refuted suspicions of the live nodes are allowed:
// a loaded host makes them.) The texts memberlist logs these events with are what the counters
// come from, so this also catches a memberlist upgrade that changes them.
func TestCrashedMemberCountedAsFailed(t *testing.T) {
	a := startNode(t, "a", "s", nil, newRecorder())
	b := startNode(t, "b", "s", []string{a.GossipAddr()}, newRecorder())
	c := startNode(t, "c", "s", []string{a.GossipAddr()}, newRecorder())
	meshed := func(nodes ...*Node) bool {
		for _, n := range nodes {
			if len(n.Members()) != len(nodes)-1 {
				return false
			}
		}
		return true
	}
	if !waitFor(10*time.Second, func() bool { return meshed(a, b, c) }) {
		t.Fatal("cluster never formed")
	}
	c.Close() // no leave: a crash as far as the others can tell
	if !waitFor(15*time.Second, func() bool { return meshed(a, b) }) {
		t.Fatal("the crashed node was never removed")
	}
	for _, n := range []*Node{a, b} {
		if got := metric(n, "meshcast_mesh_members_failed_total"); got != "1" {
			t.Errorf("%s: members_failed_total %q, want 1", n.ID(), got)
		}
		if got := metric(n, "meshcast_mesh_members_left_total"); got != "0" {
			t.Errorf("%s: members_left_total %q, want 0", n.ID(), got)
		}
		if got := metric(n, "meshcast_mesh_members_returned_total"); got != "0" {
			t.Errorf("%s: members_returned_total %q, want 0", n.ID(), got)
		}
	}
	sum := func(name string) int {
		s := 0
		for _, n := range []*Node{a, b} {
			var v int
			if _, err := fmt.Sscan(metric(n, name), &v); err != nil {
				t.Fatalf("%s: %s: %v", n.ID(), name, err)
			}
			s += v
		}
		return s
	}
	if sum("meshcast_gossip_suspicions_total") < 1 || sum("meshcast_gossip_declared_dead_total") < 1 {
		t.Errorf("suspicions %d, declared dead %d: want both ≥ 1", sum("meshcast_gossip_suspicions_total"), sum("meshcast_gossip_declared_dead_total"))
	}
	b.Leave(2 * time.Second)
	if !waitFor(10*time.Second, func() bool { return len(a.Members()) == 0 }) {
		t.Fatal("the departed node was never removed")
	}
	if got := metric(a, "meshcast_mesh_members_left_total"); got != "1" {
		t.Errorf("members_left_total %q after a graceful leave, want 1", got)
	}
	if got := metric(a, "meshcast_mesh_members_failed_total"); got != "1" {
		t.Errorf("members_failed_total %q after a graceful leave, want still 1", got)
	}
}

// TestFalseDeathCounted cuts one node's gossip off long enough for the
// others to declare it dead, then heals it: the node refutes, the others
// take it back, and both sides count what happened (a death that was
// false costs every user of that node a presence leave and join).
func TestFalseDeathCounted(t *testing.T) {
	var cut *cutTransport
	a := startNode(t, "a", "s", nil, newRecorder())
	b := startNode(t, "b", "s", []string{a.GossipAddr()}, newRecorder())
	c := startNode(t, "c", "s", []string{a.GossipAddr()}, newRecorder(), func(cfg *Config) {
		cfg.WrapGossip = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
			cut = newCutTransport(t)
			return cut
		}
	})
	has := func(n *Node, id string) bool {
		for _, m := range n.Members() {
			if m.ID == id {
				return true
			}
		}
		return false
	}
	if !waitFor(10*time.Second, func() bool { return has(a, c.ID()) && has(b, c.ID()) && len(c.Members()) == 2 }) {
		t.Fatal("cluster never formed")
	}
	cut.cut.Store(true)
	if !waitFor(15*time.Second, func() bool { return !has(a, c.ID()) && !has(b, c.ID()) }) {
		t.Fatal("the cut-off node was never declared dead")
	}
	cut.cut.Store(false)
	if !waitFor(15*time.Second, func() bool { return has(a, c.ID()) && has(b, c.ID()) }) {
		t.Fatal("the node declared dead was never taken back")
	}
	// Once at least; a loaded host may take it through another round of
	// suspicion before it settles. Every death was a false one.
	for _, n := range []*Node{a, b} {
		returned, failed := metric(n, "meshcast_mesh_members_returned_total"), metric(n, "meshcast_mesh_members_failed_total")
		if returned == "0" || returned != failed {
			t.Errorf("%s: members_returned_total %q, members_failed_total %q: want equal and at least 1", n.ID(), returned, failed)
		}
	}
	// It refuted the suspicion while cut off (the refutation was lost),
	// or the death once healed, whichever it heard.
	refuted := func() bool {
		return metric(c, `meshcast_gossip_refuted_total{accusation="suspect"}`) != "0" || metric(c, `meshcast_gossip_refuted_total{accusation="dead"}`) != "0"
	}
	if !waitFor(5*time.Second, refuted) {
		t.Errorf("the node declared dead never counted a refuted accusation")
	}
}

// cutTransport drops everything a node's gossip sends, and the gossip
// streams others open to it, while cut is set: from the outside the node
// looks crashed, from the inside it hears everyone.
type cutTransport struct {
	memberlist.NodeAwareTransport
	cut atomic.Bool
	// blocks, if set, drops what this node sends to the addresses it
	// reports (a partition when both sides block each other).
	blocks  func(addr string) bool
	streams chan net.Conn
	done    chan struct{}
}

func newCutTransport(inner memberlist.NodeAwareTransport) *cutTransport {
	t := &cutTransport{NodeAwareTransport: inner, streams: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			select {
			case <-t.done:
				return
			case c := <-inner.StreamCh():
				if t.cut.Load() {
					c.Close()
					continue
				}
				select {
				case t.streams <- c:
				case <-t.done:
					c.Close()
					return
				}
			}
		}
	}()
	return t
}

var errCut = errors.New("gossip cut off by the test")

func (t *cutTransport) dropped(addr string) bool {
	return t.cut.Load() || (t.blocks != nil && t.blocks(addr))
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.dropped(addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if t.dropped(addr.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, addr)
}

func (t *cutTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	if t.dropped(addr) {
		return nil, errCut
	}
	return t.NodeAwareTransport.DialTimeout(addr, d)
}

func (t *cutTransport) DialAddressTimeout(addr memberlist.Address, d time.Duration) (net.Conn, error) {
	if t.dropped(addr.Addr) {
		return nil, errCut
	}
	return t.NodeAwareTransport.DialAddressTimeout(addr, d)
}

func (t *cutTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops the inner transport before the relay of its streams:
// the inner one waits for its listener, which may be handing over a
// stream just accepted, and memberlist reads streams until the transport
// has shut down.
func (t *cutTransport) Shutdown() error {
	err := t.NodeAwareTransport.Shutdown()
	close(t.done)
	return err
}

// TestPartitionOfTwoSidesHeals cuts a 4-node cluster into two halves for
// longer than memberlist gossips to the dead, then heals it: neither side
// was ever alone, so only the retries of dead members' addresses can merge
// them (before those, the halves stayed apart for good).
func TestPartitionOfTwoSidesHeals(t *testing.T) {
	var partitioned atomic.Bool
	var mu sync.Mutex
	side := map[string]int{} // gossip address → side
	cross := func(self *string) func(string) bool {
		return func(addr string) bool {
			if !partitioned.Load() {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			return side[*self] != side[addr]
		}
	}
	var nodes []*Node
	for i, name := range []string{"a", "b", "c", "d"} {
		var self string
		var join []string
		if i > 0 {
			join = []string{nodes[0].GossipAddr()}
		}
		n := startNode(t, name, "s", join, newRecorder(), func(cfg *Config) {
			cfg.Gossip.DeadGossipTime = 500 * time.Millisecond
			cfg.WrapGossip = func(tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
				ct := newCutTransport(tr)
				ct.blocks = cross(&self)
				return ct
			}
		})
		mu.Lock()
		self = n.GossipAddr()
		side[self] = i / 2
		mu.Unlock()
		nodes = append(nodes, n)
	}
	sees := func(want int) bool {
		for _, n := range nodes {
			if len(n.Members()) != want {
				return false
			}
		}
		return true
	}
	if !waitFor(15*time.Second, func() bool { return sees(3) }) {
		t.Fatal("cluster never formed")
	}
	partitioned.Store(true)
	if !waitFor(20*time.Second, func() bool { return sees(1) }) {
		t.Fatal("the halves never gave each other up")
	}
	// Past memberlist's gossip to the dead, so it cannot heal this alone.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && sees(1) {
		time.Sleep(50 * time.Millisecond)
	}
	if !sees(1) {
		t.Fatal("the halves merged while partitioned")
	}
	partitioned.Store(false)
	if !waitFor(3*failedRetryEvery+10*time.Second, func() bool { return sees(3) }) {
		for _, n := range nodes {
			t.Logf("%s sees %d members", n.ID(), len(n.Members()))
		}
		t.Fatal("the halves never merged after the partition healed")
	}
}
