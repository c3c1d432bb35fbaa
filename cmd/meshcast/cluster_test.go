//go:build linux

// Multi-process cluster tests: three real meshcast processes on loopback,
// driven from outside the way a deployment is, by WebSocket clients and
// /metrics. They cover what in-process tests cannot: real sockets between
// nodes, kill -9, SIGTERM and a restart on the same ports.
//
// Linux only: the processes get PR_SET_PDEATHSIG so that a test binary that
// dies (a -timeout panic) does not leave nodes behind holding ports.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"
)

// meshcastBin is the server binary, built once by TestMain (without -race
// unless MESHCAST_TEST_NODE_RACE is set).
var meshcastBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshcast-cluster-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	meshcastBin = filepath.Join(dir, "meshcast")
	build := exec.Command("go", "build", "-o", meshcastBin, ".")
	if os.Getenv("MESHCAST_TEST_NODE_RACE") != "" { // make chaos: the nodes report data races in their logs
		build = exec.Command("go", "build", "-race", "-o", meshcastBin, ".")
	}
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build meshcast: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// Every process is reaped and every client and HTTP connection closed
	// in t.Cleanup, so anything left is a goroutine the test lost track of.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

const (
	// probeInterval makes failure detection fast: memberlist declares a
	// crashed node dead after roughly 4–7 of these.
	probeInterval = 200 * time.Millisecond
	// readyWait bounds a cluster's start: processes up, gossip joined,
	// every mesh connection established.
	readyWait = 15 * time.Second
	// msgWait bounds a read that loopback delivers in milliseconds.
	msgWait = 5 * time.Second
	// crashDetectWait bounds kill -9 → presence leave on another node.
	crashDetectWait = 15 * time.Second
	// gracefulLeaveMax bounds SIGTERM → presence leave on another node. The
	// leave travels as a presence delta (or a memberlist leave), not by the
	// failure detector, whose floor here is about 4 probe intervals.
	gracefulLeaveMax = 2 * probeInterval
)

// a. Clients on different nodes see each other's presence, and a broadcast
// from n1 reaches the clients on n2 and n3 (and not its sender).
func TestClusterBroadcastAndPresence(t *testing.T) {
	c := startCluster(t, "s3cret")
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	const topic = "realtime:room"

	c1 := connect(t, n1, "c1@n1")
	c2 := connect(t, n2, "c2@n2")
	c3 := connect(t, n3, "c3@n3")
	c1.join(topic, "1", joinConfig("k1", true, false))
	c2.join(topic, "1", joinConfig("k2", true, false))
	c3.join(topic, "1", joinConfig("k3", true, false))
	c1.track(topic, "1", "2", `{"user":"one"}`)
	c2.track(topic, "1", "2", `{"user":"two"}`)

	c1.awaitPresence(msgWait, "k2", true)
	c2.awaitPresence(msgWait, "k1", true)
	for _, cl := range []*wsClient{c1, c2} {
		if len(cl.presence["k1"]) != 1 || len(cl.presence["k2"]) != 1 {
			t.Errorf("%s presence = %v, want one meta for each of k1 and k2", cl.name, cl.presence)
		}
	}
	// c3 sees n1's presence only once n1 has taken n3's interest in the
	// topic (n1 sends its presence to the nodes in its interest table), so
	// afterwards n1 routes the topic's broadcasts to n3 as well.
	c3.awaitPresence(msgWait, "k1", true)
	c3.awaitPresence(msgWait, "k2", true)

	c1.send(broadcastFrame(topic, "1", "3", "hello", `{"from":"n1","n":1}`))
	for _, cl := range []*wsClient{c2, c3} {
		f := cl.await(msgWait, "the broadcast from c1", func(f frame) bool {
			_, ok := isBroadcast(f, topic, "hello")
			return ok
		})
		if p, _ := isBroadcast(f, topic, "hello"); !jsonEqual(p, `{"from":"n1","n":1}`) {
			t.Errorf("%s got payload %s, want {\"from\":\"n1\",\"n\":1}", cl.name, p)
		}
	}
	// self is false: the heartbeat reply is a barrier behind anything the
	// server queued for c1 while handling its own broadcast.
	c1.send(`[null,"hb","phoenix","heartbeat",{}]`)
	c1.await(msgWait, "heartbeat reply", func(f frame) bool {
		if _, ok := isBroadcast(f, topic, "hello"); ok {
			t.Errorf("c1 received its own broadcast with self=false: %s", f.raw)
		}
		return isReply(f, "phoenix", "hb")
	})
}

// b. Fan-out and mesh accounting: the publisher and some subscribers on
// n1, more subscribers on n2, none on n3. Every subscriber gets all M
// messages in order; n1 sends exactly M data frames to n2 (one per message,
// however many subscribers n2 has) and none to n3.
func TestClusterCounting(t *testing.T) {
	const (
		topic = "realtime:count"
		onN1  = 200
		onN2  = 500
		M     = 50
	)
	c := startCluster(t, "s3cret")
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]

	// The n2 watcher listens to presence; the other subscribers only read.
	watcher := connect(t, n2, "watcher@n2")
	watcher.join(topic, "1", joinConfig("", true, false))

	subs, err := connectSubscribers(t, map[*node]int{n1: onN1, n2: onN2 - 1}, topic)
	if err != nil {
		t.Fatal(err)
	}

	pub := connect(t, n1, "publisher@n1")
	pub.join(topic, "1", joinConfig("pub", true, true))
	pub.track(topic, "1", "2", `{"role":"publisher"}`)
	// n1 sent its presence to n2 only with n2 in its interest table: from
	// then on it routes the topic's broadcasts to n2.
	watcher.awaitPresence(msgWait, "pub", true)
	subs = append(subs, watcher) // from here on read by its own goroutine only

	before2 := settledDataFrames(t, n1, n2)
	before3 := settledDataFrames(t, n1, n3)

	errc := make(chan error, len(subs))
	for _, s := range subs {
		go func() { errc <- s.readSequence(topic, M, 3*msgWait) }()
	}
	for i := range M {
		pub.send(broadcastFrame(topic, "1", strconv.Itoa(100+i), "m", fmt.Sprintf(`{"seq":%d}`, i)))
	}
	for i := range M {
		ref := strconv.Itoa(100 + i)
		f := pub.await(msgWait, "broadcast ack "+ref, func(f frame) bool { return isReply(f, topic, ref) })
		if replyStatus(f) != "ok" {
			t.Fatalf("broadcast %d refused: %s", i, f.raw)
		}
	}
	var failed []error
	for range subs {
		if err := <-errc; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d subscribers did not get all %d messages in order; first: %v", len(failed), len(subs), M, errors.Join(failed[:min(5, len(failed))]...))
	}

	after2 := settledDataFrames(t, n1, n2)
	after3 := settledDataFrames(t, n1, n3)
	t.Logf("n1 data frames to n2: %v → %v; to n3: %v → %v (%d subscribers on n1, %d on n2)", before2, after2, before3, after3, onN1, onN2)
	if got := after2 - before2; got != M {
		t.Errorf("n1 sent %v data frames to n2 for %d messages, want exactly %d (one per message)", got, M, M)
	}
	if got := after3 - before3; got != 0 {
		t.Errorf("n1 sent %v data frames to n3, which has no subscribers; want 0", got)
	}
	m1 := mustScrape(t, n1)
	for _, peer := range []*node{n2, n3} {
		if d := m1[peerSeries("meshcast_mesh_drops_total", peer.id, "data")]; d != 0 {
			t.Errorf("n1 dropped %v data frames toward %s", d, peer.name)
		}
	}
}

// connectSubscribers opens count[node] read-only subscribers of topic on
// each node, a few at a time. Their sockets are closed in t.Cleanup.
func connectSubscribers(t *testing.T, count map[*node]int, topic string) ([]*wsClient, error) {
	type job struct {
		n *node
		i int
	}
	jobs := make(chan job)
	var (
		mu   sync.Mutex
		subs []*wsClient
		errs []error
		wg   sync.WaitGroup
	)
	t.Cleanup(func() {
		for _, s := range subs {
			s.nc.Close()
		}
	})
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				s, err := dialWS(j.n, fmt.Sprintf("sub%d@%s", j.i, j.n.name))
				if err == nil {
					err = s.joinQuiet(topic, "1", joinConfig("", false, false))
				}
				mu.Lock()
				if s != nil {
					subs = append(subs, s)
				}
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	for n, k := range count {
		for i := range k {
			jobs <- job{n, i}
		}
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d subscribers failed to join; first: %w", len(errs), errs[0])
	}
	return subs, nil
}

// c. kill -9 a node: its presence leaves the other nodes within the
// failure detector's time, it stops being a member; restarted with the same
// name on the same ports it rejoins and presence re-syncs both ways.
func TestClusterKillAndRestart(t *testing.T) {
	c := startCluster(t, "s3cret")
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	const topic = "realtime:crash"

	c1 := connect(t, n1, "c1@n1")
	c1.join(topic, "1", joinConfig("k1", true, false))
	c1.track(topic, "1", "2", `{"on":"n1"}`)
	c3 := connect(t, n3, "c3@n3")
	c3.join(topic, "1", joinConfig("k3", true, false))
	c3.track(topic, "1", "2", `{"on":"n3"}`)
	c1.awaitPresence(msgWait, "k3", true)

	oldID := n3.id
	start := time.Now()
	n3.signal(t, syscall.SIGKILL)
	c1.await(crashDetectWait, "presence_diff leaving k3 after kill -9 of n3", func(f frame) bool { return hasLeave(f, "k3") })
	detected := time.Since(start)
	t.Logf("kill -9 of n3 → presence leave of k3 on n1's client: %v (probe interval %v)", detected.Round(time.Millisecond), probeInterval)
	if len(c1.presence["k3"]) != 0 {
		t.Errorf("k3 still in c1's presence after the leave: %v", c1.presence)
	}
	if !n3.exited(msgWait) {
		t.Fatal("n3 did not exit after SIGKILL")
	}

	var m1 map[string]float64
	if !waitFor(msgWait, func() bool { m1 = mustScrape(t, n1); return m1["meshcast_mesh_members"] == 2 }) {
		t.Fatalf("n1 meshcast_mesh_members = %v after n3 died, want 2", m1["meshcast_mesh_members"])
	}
	if _, ok := m1[peerSeries("meshcast_mesh_frames_sent_total", oldID, "data")]; ok {
		t.Errorf("n1 still exports a data lane toward the dead %s", oldID)
	}

	// Same name, same ports: a new incarnation.
	n3b := spawnNode(t, n3.nodeSpec)
	if n3b.id == oldID || !strings.HasPrefix(n3b.id, "n3-") {
		t.Errorf("restarted n3 has ID %q; want a new n3-<incarnation> (was %q)", n3b.id, oldID)
	}
	c.waitMembers(t, []*node{n1, n2, n3b}, 3, readyWait)
	t.Logf("n3 rejoined as %s %v after the kill", n3b.id, time.Since(start).Round(time.Millisecond))

	c3b := connect(t, n3b, "c3b@n3")
	c3b.join(topic, "1", joinConfig("k3b", true, false))
	c3b.track(topic, "1", "2", `{"on":"n3 again"}`)
	c1.awaitPresence(msgWait, "k3b", true)
	c3b.awaitPresence(msgWait, "k1", true)
	if len(c3b.presence["k3"]) != 0 || len(c1.presence["k3"]) != 0 {
		t.Errorf("the dead incarnation's k3 came back: c1 %v, c3b %v", c1.presence, c3b.presence)
	}
}

// A node restarted on the same name and ports before the cluster noticed
// its crash: the new incarnation is a new member whose presence reaches the
// others at once, while the old incarnation's presence leaves only when the
// failure detector declares it dead, and the two never mix.
func TestClusterRestartBeforeDetection(t *testing.T) {
	c := startCluster(t, "s3cret")
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	const topic = "realtime:fast"

	c1 := connect(t, n1, "c1@n1")
	c1.join(topic, "1", joinConfig("k1", true, false))
	c1.track(topic, "1", "2", `{"on":"n1"}`)
	c3 := connect(t, n3, "c3@n3")
	c3.join(topic, "1", joinConfig("k3", true, false))
	c3.track(topic, "1", "2", `{"on":"n3"}`)
	c1.awaitPresence(msgWait, "k3", true)

	start := time.Now()
	n3.signal(t, syscall.SIGKILL)
	if !n3.exited(msgWait) {
		t.Fatal("n3 did not exit after SIGKILL")
	}
	n3b := spawnNode(t, n3.nodeSpec)
	c3b := connect(t, n3b, "c3b@n3")
	c3b.join(topic, "1", joinConfig("k3b", true, false))
	c3b.track(topic, "1", "2", `{"on":"n3 again"}`)
	c1.awaitPresence(msgWait, "k3b", true)
	seen := time.Since(start)
	c3b.awaitPresence(msgWait, "k1", true)
	c1.awaitPresence(crashDetectWait, "k3", false)
	gone := time.Since(start)
	t.Logf("kill -9 + restart of n3: new incarnation's presence on n1 after %v, old one's leave after %v",
		seen.Round(time.Millisecond), gone.Round(time.Millisecond))
	c.waitMembers(t, []*node{n1, n2, n3b}, 3, readyWait)
	if len(c1.presence["k3b"]) != 1 {
		t.Errorf("c1 presence %v, want k3b once", c1.presence)
	}
}

// d. SIGTERM a node: its clients are told to go (system message, close
// 1001), its presence leaves the other nodes at once rather than by failure
// detection, and the process exits 0.
func TestClusterGracefulLeave(t *testing.T) {
	c := startCluster(t, "s3cret")
	n1, n2 := c.nodes[0], c.nodes[1]
	const topic = "realtime:leave"

	c1 := connect(t, n1, "c1@n1")
	c1.join(topic, "1", joinConfig("k1", true, false))
	c2 := connect(t, n2, "c2@n2")
	c2.join(topic, "1", joinConfig("k2", true, false))
	c2.track(topic, "1", "2", `{"on":"n2"}`)
	c1.awaitPresence(msgWait, "k2", true)

	start := time.Now()
	n2.signal(t, syscall.SIGTERM)

	// c2: the system message, then a close frame 1001.
	var system *frame
	deadline := time.Now().Add(msgWait)
	for {
		f, err := c2.readFrame(time.Until(deadline))
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			if ce.Code != ws.StatusGoingAway {
				t.Errorf("c2 close code %d %q, want 1001", ce.Code, ce.Reason)
			}
			break
		}
		if err != nil {
			t.Fatalf("c2: waiting for the close frame: %v; last frames: %s", err, strings.Join(c2.recent, " "))
		}
		if f.Event == "system" && jsonField(f.Payload, "message") == "Server requested disconnect" {
			system = &f
		}
	}
	if system == nil {
		t.Errorf(`c2 got no system message "Server requested disconnect" before the close; last frames: %s`, strings.Join(c2.recent, " "))
	} else if jsonField(system.Payload, "status") != "ok" || jsonField(system.Payload, "extension") != "system" {
		t.Errorf("system message %s, want extension system, status ok", system.raw)
	}

	c1.await(crashDetectWait, "presence_diff leaving k2 after SIGTERM of n2", func(f frame) bool { return hasLeave(f, "k2") })
	left := time.Since(start)
	t.Logf("SIGTERM of n2 → presence leave of k2 on n1's client: %v", left.Round(time.Millisecond))
	if left > gracefulLeaveMax {
		t.Errorf("graceful leave took %v to reach n1's client, want under %v (crash detection takes 4+ probe intervals of %v)", left, gracefulLeaveMax, probeInterval)
	}

	if !n2.exited(15 * time.Second) {
		t.Fatal("n2 did not exit within 15s of SIGTERM")
	}
	t.Logf("n2 exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if code := n2.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("n2 exit code %d (%v), want 0", code, n2.err)
	}
	var m1 map[string]float64
	if !waitFor(msgWait, func() bool { m1 = mustScrape(t, n1); return m1["meshcast_mesh_members"] == 2 }) {
		t.Errorf("n1 meshcast_mesh_members = %v after n2 left, want 2", m1["meshcast_mesh_members"])
	}
}

// e. A node with another cluster secret cannot join: it stays alone and
// the cluster stays three.
func TestClusterWrongSecretDoesNotJoin(t *testing.T) {
	c := startCluster(t, "s3cret")
	n1 := c.nodes[0]
	ports := freePorts(t, 3)
	intruder := spawnNode(t, nodeSpec{
		name:       "n4",
		region:     "iad",
		httpAddr:   "127.0.0.1:" + strconv.Itoa(ports[0]),
		gossipAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		meshAddr:   "127.0.0.1:" + strconv.Itoa(ports[2]),
		secret:     "not-the-secret",
		join:       n1.gossipAddr,
	})
	// Its join loop retries with backoff from 200ms: 3s covers several
	// attempts and ~15 probe intervals.
	const watch = 3 * time.Second
	end := time.Now().Add(watch)
	polls := 0
	for time.Now().Before(end) {
		polls++
		if m := mustScrape(t, intruder); m["meshcast_mesh_members"] != 1 || m["meshcast_mesh_peers_connected"] != 0 {
			t.Fatalf("n4 with a wrong secret: members=%v peers_connected=%v, want 1 and 0",
				m["meshcast_mesh_members"], m["meshcast_mesh_peers_connected"])
		}
		for _, n := range c.nodes {
			if m := mustScrape(t, n); m["meshcast_mesh_members"] != 3 || m["meshcast_mesh_peers_connected"] != 2 {
				t.Fatalf("%s: members=%v peers_connected=%v while n4 tried to join, want 3 and 2",
					n.name, m["meshcast_mesh_members"], m["meshcast_mesh_peers_connected"])
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("n4 stayed alone and the cluster stayed at 3 over %v (%d polls)", watch, polls)
	if strings.Contains(intruder.log.String(), "joined cluster") {
		t.Errorf("n4 logged that it joined the cluster:\n%s", intruder.log.String())
	}
}
