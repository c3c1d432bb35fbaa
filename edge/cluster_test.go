package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/mesh"
)

// These tests run several nodes in one process: real edge servers, real
// memberlist gossip and real QUIC on loopback.

// filterConn is the UDP socket of a node's mesh; blocking an address drops
// every packet to and from it, as a partition of the mesh would.
type filterConn struct {
	net.PacketConn
	mu      sync.Mutex
	blocked map[string]bool
	delay   map[string]time.Duration // packets to an address leave this much later
}

func (f *filterConn) delayTo(addr string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delay == nil {
		f.delay = map[string]time.Duration{}
	}
	f.delay[addr] = d
}

func (f *filterConn) isBlocked(a net.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[a.String()]
}

func (f *filterConn) block(addr string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked[addr] = on
}

func (f *filterConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := f.PacketConn.ReadFrom(p)
		if err != nil || !f.isBlocked(a) {
			return n, a, err
		}
	}
}

func (f *filterConn) WriteTo(p []byte, a net.Addr) (int, error) {
	if f.isBlocked(a) {
		return len(p), nil
	}
	f.mu.Lock()
	d := f.delay[a.String()]
	f.mu.Unlock()
	if d > 0 {
		late := bytes.Clone(p)
		time.AfterFunc(d, func() { f.PacketConn.WriteTo(late, a) })
		return len(p), nil
	}
	return f.PacketConn.WriteTo(p, a)
}

type clusterNode struct {
	*testServer
	node *mesh.Node
	udp  *filterConn
}

// meshAddr is the node's QUIC address.
func (cn *clusterNode) meshAddr() string { return cn.udp.LocalAddr().String() }

// startCluster starts one node per region, all joined to the first, and
// waits until every node is connected to every other. Nodes are stopped in
// t.Cleanup.
func startCluster(t *testing.T, regions []string, tweak func(*mesh.Config)) []*clusterNode {
	t.Helper()
	return startClusterWith(t, regions, func(c *Config) { c.RecoveryWindow = 0 }, tweak)
}

// startClusterWith is startCluster with each node's Config changed by
// edgeTweak.
func startClusterWith(t *testing.T, regions []string, edgeTweak func(*Config), tweak func(*mesh.Config)) []*clusterNode {
	t.Helper()
	var nodes []*clusterNode
	var seed string
	for i, region := range regions {
		cfg := DefaultConfig()
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.NodeID = mesh.NewID(fmt.Sprintf("n%d", i))
		if edgeTweak != nil {
			edgeTweak(&cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fc := &filterConn{PacketConn: udp, blocked: map[string]bool{}}
		mc := mesh.Config{
			Name:          fmt.Sprintf("n%d", i),
			ID:            cfg.NodeID,
			Region:        region,
			GossipAddr:    "127.0.0.1:0",
			PacketConn:    fc,
			ClusterSecret: []byte("test-secret"),
			Gossip:        mesh.GossipConfig{ProbeInterval: 200 * time.Millisecond},
			PeerTimeout:   time.Second,
			SnapshotWait:  2 * time.Second,
			Logger:        cfg.Logger,
		}
		if seed != "" {
			mc.Join = []string{seed}
		}
		if tweak != nil {
			tweak(&mc)
		}
		node, err := mesh.New(mc, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetCluster(node); err != nil {
			t.Fatal(err)
		}
		if err := node.Start(); err != nil {
			t.Fatal(err)
		}
		if seed == "" {
			seed = node.GossipAddr()
		}
		ts := serve(t, s)
		cn := &clusterNode{testServer: ts, node: node, udp: fc}
		t.Cleanup(func() {
			ts.stop()
			node.Close()
			udp.Close()
		})
		nodes = append(nodes, cn)
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && !waitFor(10*time.Second, func() bool { return a.node.Connected(b.node.ID()) }) {
				t.Fatalf("%s never connected to %s", a.node.ID(), b.node.ID())
			}
		}
	}
	return nodes
}

// joinTopic joins topic on c with presence under key and returns the
// presence_state it got.
func joinTopic(t *testing.T, c *wsClient, topic, key string) json.RawMessage {
	t.Helper()
	c.write(joinFrame("1", topic, fmt.Sprintf(`{"broadcast":{"self":false},"presence":{"key":%q,"enabled":true}}`, key)))
	if f := c.next(); f.Event != "phx_reply" || jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join reply: %s", f)
	}
	f := c.next()
	if f.Event != "presence_state" {
		t.Fatalf("want presence_state, got %s", f)
	}
	return f.Payload
}

// presenceView follows presence_state and presence_diff on one socket, as
// a client's presence sync does: key → refs.
type presenceView map[string]map[string]bool

func (v presenceView) apply(t *testing.T, f wsFrame) {
	t.Helper()
	var metas map[string]struct {
		Metas []struct {
			Ref string `json:"phx_ref"`
		} `json:"metas"`
	}
	switch f.Event {
	case "presence_state":
		if err := json.Unmarshal(f.Payload, &metas); err != nil {
			t.Fatal(err)
		}
		for k := range v {
			delete(v, k)
		}
		v.add(metas)
	case "presence_diff":
		var d struct {
			Joins  json.RawMessage `json:"joins"`
			Leaves json.RawMessage `json:"leaves"`
		}
		if err := json.Unmarshal(f.Payload, &d); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(d.Joins, &metas); err != nil {
			t.Fatal(err)
		}
		v.add(metas)
		clear(metas)
		if err := json.Unmarshal(d.Leaves, &metas); err != nil {
			t.Fatal(err)
		}
		for k, m := range metas {
			for _, x := range m.Metas {
				delete(v[k], x.Ref)
			}
			if len(v[k]) == 0 {
				delete(v, k)
			}
		}
	}
}

func (v presenceView) add(metas map[string]struct {
	Metas []struct {
		Ref string `json:"phx_ref"`
	} `json:"metas"`
}) {
	for k, m := range metas {
		if v[k] == nil {
			v[k] = map[string]bool{}
		}
		for _, x := range m.Metas {
			v[k][x.Ref] = true
		}
	}
}

func (v presenceView) keys() string {
	var ks []string
	for k := range v {
		ks = append(ks, k)
	}
	sortStrings(ks)
	return strings.Join(ks, ",")
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// awaitPresence reads frames on c, applying presence, until the view's
// keys are want.
func awaitPresence(t *testing.T, c *wsClient, v presenceView, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for v.keys() != want {
		if time.Now().After(deadline) {
			t.Fatalf("presence keys = %q, want %q", v.keys(), want)
		}
		data, op, err := c.read(time.Until(deadline))
		if err != nil {
			t.Fatalf("presence keys = %q, want %q (read: %v)", v.keys(), want, err)
		}
		f, err := decodeFrame(data, op, false)
		if err != nil {
			t.Fatal(err)
		}
		v.apply(t, f)
	}
}

func track(c *wsClient, topic, ref, payload string) {
	c.write(fmt.Sprintf(`["1",%q,%q,"presence",{"type":"presence","event":"track","payload":%s}]`, ref, topic, payload))
}

func TestClusterBroadcastAndPresenceAcrossNodes(t *testing.T) {
	nodes := startCluster(t, []string{"iad", "fra", "sin"}, nil)
	const topic = "realtime:room"
	a, b := nodes[0].connect(t), nodes[2].connect(t)
	va, vb := presenceView{}, presenceView{}
	va.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, a, topic, "alice")})
	vb.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, b, topic, "bob")})
	track(a, topic, "2", `{"n":1}`)
	track(b, topic, "2", `{"n":2}`)
	awaitPresence(t, a, va, "alice,bob", testWait)
	awaitPresence(t, b, vb, "alice,bob", testWait)

	// b's node is interested, the middle node is not.
	if got := nodes[0].node.InterestedNodes(topic); len(got) != 1 || got[0] != nodes[2].node.ID() {
		t.Fatalf("n0 sees interest of %v in %s, want only n2", got, topic)
	}
	for i := 0; i < 20; i++ {
		a.write(broadcastFrame("1", strconv.Itoa(10+i), topic, "e", fmt.Sprintf(`{"i":%d}`, i)))
	}
	for i := 0; i < 20; {
		f := b.next()
		if f.Event != "broadcast" {
			continue // presence replies of the barrier above
		}
		if got := jsonField(f.Payload, "payload.i"); got != strconv.Itoa(i) {
			t.Fatalf("message %d: got payload %s (out of order or lost)", i, f.Payload)
		}
		i++
	}

	// b leaves: a sees the leave, over the mesh.
	b.nc.Close()
	awaitPresence(t, a, va, "alice", testWait)
}

func TestClusterCrashedNodeLeavesPresence(t *testing.T) {
	nodes := startCluster(t, []string{"iad", "fra", "sin"}, nil)
	const topic = "realtime:crash"
	a, c := nodes[0].connect(t), nodes[2].connect(t)
	va := presenceView{}
	va.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, a, topic, "alice")})
	joinTopic(t, c, topic, "carol")
	track(a, topic, "2", `{}`)
	track(c, topic, "2", `{}`)
	awaitPresence(t, a, va, "alice,carol", testWait)

	// Crash n2: its mesh goes silent and its gossip stops, without a
	// graceful leave.
	start := time.Now()
	nodes[2].node.Close()
	awaitPresence(t, a, va, "alice", 15*time.Second)
	t.Logf("crashed node's presence left after %v", time.Since(start).Round(time.Millisecond))
	if got := nodes[0].node.InterestedNodes(topic); len(got) != 0 {
		t.Fatalf("a dead node's interest remains: %v", got)
	}
}

func TestClusterPresenceConvergesAfterMeshPartition(t *testing.T) {
	nodes := startCluster(t, []string{"iad", "fra"}, nil)
	const topic = "realtime:split"
	a, b := nodes[0].connect(t), nodes[1].connect(t)
	va := presenceView{}
	va.apply(t, wsFrame{Event: "presence_state", Payload: joinTopic(t, a, topic, "alice")})
	joinTopic(t, b, topic, "bob")
	track(b, topic, "2", `{}`)
	awaitPresence(t, a, va, "bob", testWait)

	// Cut the mesh between the two nodes (gossip still sees both alive).
	n0, n1 := nodes[0], nodes[1]
	n0.udp.block(n1.meshAddr(), true)
	n1.udp.block(n0.meshAddr(), true)
	if !waitFor(10*time.Second, func() bool { return !n0.node.Connected(n1.node.ID()) && !n1.node.Connected(n0.node.ID()) }) {
		t.Fatal("the mesh connection outlived the partition")
	}
	// During the partition bob leaves and carol arrives on n1.
	b.nc.Close()
	c := n1.connect(t)
	joinTopic(t, c, topic, "carol")
	track(c, topic, "2", `{}`)

	n0.udp.block(n1.meshAddr(), false)
	n1.udp.block(n0.meshAddr(), false)
	awaitPresence(t, a, va, "carol", 15*time.Second)
}

func TestClusterBroadcastCrossesOncePerInterestedNode(t *testing.T) {
	nodes := startCluster(t, []string{"iad", "fra", "sin", "syd"}, nil)
	const topic = "realtime:count"
	// 1000 subscribers on n0 (with the publisher), n1 and n2; none on n3.
	subs := map[int]int{0: 300, 1: 400, 2: 300}
	var clients []*wsClient
	for i, k := range subs {
		for j := 0; j < k; j++ {
			c := nodes[i].connect(t)
			c.write(joinFrame("1", topic, `{}`))
			if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
				t.Fatalf("join: %s", f)
			}
			clients = append(clients, c)
		}
	}
	for _, i := range []int{1, 2} {
		id := nodes[i].node.ID()
		if !waitFor(testWait, func() bool { return strings.Contains(strings.Join(nodes[0].node.InterestedNodes(topic), ","), id) }) {
			t.Fatalf("n0 never learned n%d's interest", i)
		}
	}
	sentTo := func(i int) int {
		v, err := nodes[0].metric(fmt.Sprintf(`meshcast_mesh_frames_sent_total{peer=%q,lane="data"}`, nodes[i].node.ID()))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(v)
		return n
	}
	// A false death on a loaded host (a member declared dead and back)
	// re-creates that peer's counters, which voids a count: such a round is
	// measured again.
	deaths := func() string {
		var b strings.Builder
		for _, n := range nodes {
			v, _ := n.metric("meshcast_mesh_members_failed_total")
			b.WriteString(v + ",")
		}
		return b.String()
	}
	pub := nodes[0].connect(t)
	pub.write(joinFrame("1", topic, `{}`))
	pub.next()
	const msgs = 20
	ref := 2
	for round := 1; ; round++ {
		deathsBefore := deaths()
		before := []int{0, sentTo(1), sentTo(2), sentTo(3)}
		for i := 0; i < msgs; i++ {
			pub.write(broadcastFrame("1", strconv.Itoa(ref), topic, "e", fmt.Sprintf(`{"r":%d,"i":%d}`, round, i)))
			ref++
		}
		// Every subscriber reads concurrently (a subscriber that is not read
		// would be closed as a slow consumer, which is not what this counts).
		var wg sync.WaitGroup
		errs := make(chan error, len(clients))
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < msgs; {
					data, op, err := c.read(20 * time.Second)
					if err != nil {
						errs <- fmt.Errorf("round %d message %d: %v", round, i, err)
						return
					}
					f, err := decodeFrame(data, op, false)
					if err == nil && jsonField(f.Payload, "payload.r") != strconv.Itoa(round) {
						continue // the rest of a round voided by a false death
					}
					if err != nil || jsonField(f.Payload, "payload.i") != strconv.Itoa(i) {
						errs <- fmt.Errorf("round %d message %d: %s (%v)", round, i, data, err)
						return
					}
					i++
				}
			}()
		}
		wg.Wait()
		close(errs)
		if d := deaths(); d != deathsBefore && round < 3 {
			// Broadcasts are at most once: a member declared dead misses
			// some, and its counters restart.
			t.Logf("round %d: members declared dead meanwhile (failed counts %s → %s, %d readers failed); measuring again", round, deathsBefore, d, len(errs))
			continue
		}
		for err := range errs {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		for ctx.Err() == nil && (sentTo(1)-before[1] != msgs || sentTo(2)-before[2] != msgs) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if d := deaths(); d != deathsBefore && round < 3 {
			t.Logf("round %d: members declared dead meanwhile (failed counts %s → %s); measuring again", round, deathsBefore, d)
			continue
		}
		for i, want := range []int{0, msgs, msgs, 0} {
			if i == 0 {
				continue
			}
			if got := sentTo(i) - before[i]; got != want {
				t.Errorf("data frames n0→n%d = %d for %d messages, want %d", i, got, msgs, want)
			}
		}
		return
	}
}

// TestClusterRoutingStrategies publishes from one node of a 3-region × 2
// node cluster with subscribers on every node, under each strategy, and
// checks that every subscriber gets every message while the frames that
// cross regions are as the strategy promises.
func TestClusterRoutingStrategies(t *testing.T) {
	regions := []string{"iad", "iad", "fra", "fra", "sin", "sin"}
	cases := []struct {
		strategy      mesh.Strategy
		total, remote int // data frames per message, in all and across regions
	}{
		{mesh.Interested, 5, 4},
		{mesh.AllNodes, 5, 4},
		{mesh.RegionRelay, 5, 2},
	}
	for _, tc := range cases {
		t.Run(tc.strategy.String(), func(t *testing.T) {
			nodes := startCluster(t, regions, func(c *mesh.Config) { c.Strategy = tc.strategy })
			topic := "realtime:strategy-" + tc.strategy.String()
			var subs []*wsClient
			for _, n := range nodes {
				c := n.connect(t)
				c.write(joinFrame("1", topic, `{}`))
				if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
					t.Fatalf("join: %s", f)
				}
				subs = append(subs, c)
			}
			for _, n := range nodes[1:] {
				id := n.node.ID()
				if !waitFor(testWait, func() bool { return strings.Contains(strings.Join(nodes[0].node.InterestedNodes(topic), ","), id) }) {
					t.Fatal("interest never propagated")
				}
			}
			// Counts data frames sent between every pair of nodes.
			frames := func() (total, remote int) {
				for _, a := range nodes {
					for _, b := range nodes {
						if a == b {
							continue
						}
						v, _ := a.metric(fmt.Sprintf(`meshcast_mesh_frames_sent_total{peer=%q,lane="data"}`, b.node.ID()))
						n, _ := strconv.Atoi(v)
						total += n
						if a.node.Region() != b.node.Region() {
							remote += n
						}
					}
				}
				return total, remote
			}
			t0, r0 := frames()
			const msgs = 20
			pub := subs[0]
			for i := 0; i < msgs; i++ {
				pub.write(broadcastFrame("1", strconv.Itoa(i+2), topic, "e", fmt.Sprintf(`{"i":%d}`, i)))
			}
			for _, c := range subs[1:] {
				for i := 0; i < msgs; i++ {
					if f := c.next(); jsonField(f.Payload, "payload.i") != strconv.Itoa(i) {
						t.Fatalf("message %d: %s", i, f)
					}
				}
			}
			var total, remote int
			waitFor(testWait, func() bool {
				total, remote = frames()
				return total-t0 >= tc.total*msgs
			})
			if total-t0 != tc.total*msgs || remote-r0 != tc.remote*msgs {
				t.Fatalf("%s: %d data frames (%d across regions) for %d messages, want %d (%d)",
					tc.strategy, total-t0, remote-r0, msgs, tc.total*msgs, tc.remote*msgs)
			}
		})
	}
}

// TestClusterPublishRightAfterFirstJoin publishes over REST on a node with
// no subscribers right after a client on another node got its join reply,
// with the mesh toward that node slowed down as a far region would be: the
// join reply waits until every connected node knows of the interest, so the
// message must arrive.
func TestClusterPublishRightAfterFirstJoin(t *testing.T) {
	nodes := startCluster(t, []string{"iad", "fra", "sin"}, nil)
	nodes[0].udp.delayTo(nodes[2].meshAddr(), 150*time.Millisecond)
	for i := 0; i < 3; i++ {
		topic := fmt.Sprintf("room-%d", i)
		c := nodes[0].connect(t)
		c.write(joinFrame("1", "realtime:"+topic, `{}`))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", f)
		}
		r, err := nodes[2].do("POST", "/api/broadcast", "application/json",
			fmt.Sprintf(`{"messages":[{"topic":%q,"event":"e","payload":{"n":%d}}]}`, topic, i))
		if err != nil || r.status != http.StatusAccepted {
			t.Fatalf("REST: %v %+v", err, r)
		}
		if f := c.next(); f.Event != "broadcast" || jsonField(f.Payload, "payload.n") != strconv.Itoa(i) {
			t.Fatalf("topic %s: got %s", topic, f)
		}
	}
}

// Shutdown keeps its deadline even while a first join of a topic waits
// for the presence snapshots of a node whose mesh traffic does not arrive.
func TestClusterShutdownKeepsDeadlineDuringJoin(t *testing.T) {
	nodes := startCluster(t, []string{"iad", "fra"}, func(c *mesh.Config) { c.SnapshotWait = 20 * time.Second })
	nodes[0].udp.block(nodes[1].meshAddr(), true)
	c := nodes[0].connect(t)
	c.write(joinFrame("1", "realtime:stuck", `{}`))
	// The join is waiting once its topic exists.
	if !waitFor(testWait, func() bool { return nodes[0].hub.lookup(topicKey{name: "realtime:stuck"}) != nil }) {
		t.Fatal("the join never started")
	}
	ts := nodes[0].testServer
	start := time.Now()
	ts.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		ts.stopErr = ts.Shutdown(ctx)
		ts.serveErr = <-ts.served
	})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown with a 300 ms deadline took %v", d)
	}
}
