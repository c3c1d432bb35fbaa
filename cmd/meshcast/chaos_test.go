//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// The chaos test: three real meshcast processes, a real Postgres, and
// WebSocket clients on every node that broadcast, track presence and
// listen to postgres_changes on one channel while a writer commits rows,
// and faults come one after another until CHAOS_DURATION has passed:
//
//   - kill -9 of a random node; it is restarted after a short pause with
//     the same name and ports; its clients reconnect to live nodes;
//   - a partition of a random node from the other two (network
//     namespaces: its bridge port goes down; healed after a while), when
//     the test may create namespaces;
//   - a Postgres crash and restart mid-stream.
//
// After each fault it asserts what a user would see: presence on every
// node converges to the clients really connected (a killed node's entries
// leave within the failure detector's bound, taken from the node's own
// --gossip-probe-interval), broadcasts flow between every pair of
// connected clients, rows flow to every subscriber. At the end, against
// Postgres as the oracle: every subscriber connected at the end got every
// row committed after its join reply (at least once), no node log holds a
// panic, a fatal error or a race report, and no client lost its socket but
// to a kill of its node.
//
//	CHAOS_DURATION=3m            how long faults go on (default 25s: the run inside make test)
//	CHAOS_PROBE_INTERVAL=200ms   run the nodes with this --gossip-probe-interval (default: the binary's default)
//	CHAOS_DETECT_BOUND=10s       the bound on kill -9 → presence leave (default: 10 probe intervals + 3 s)
//	CHAOS_SEED=42                the faults' random choices
//	CHAOS_REQUIRE_NETNS=1        fail instead of skipping partitions without network namespaces
//
// make chaos runs it for minutes with node binaries built with -race
// (MESHCAST_TEST_NODE_RACE=1).
func TestChaos(t *testing.T) {
	cfg := chaosSettings(t)
	pg := pgtest.Start(t, pgtest.WithSetting("track_commit_timestamp", "on"))
	pg.Exec(`CREATE TABLE ticks (id int PRIMARY KEY); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	r := startChaos(t, cfg, pg)
	r.run()
	r.finish()
}

type chaosConfig struct {
	duration time.Duration
	probe    time.Duration // the nodes' --gossip-probe-interval
	explicit bool          // probe passed as a flag, not the binary's default
	detect   time.Duration // kill -9 → presence leave on the other nodes
	seed     uint64
	netns    string // why there are no partitions, "" when there are
}

func chaosSettings(t *testing.T) chaosConfig {
	t.Helper()
	cfg := chaosConfig{duration: 25 * time.Second, seed: uint64(time.Now().UnixNano())}
	env := func(name string, parse func(string) error) {
		if v := os.Getenv(name); v != "" {
			if err := parse(v); err != nil {
				t.Fatalf("%s=%q: %v", name, v, err)
			}
		}
	}
	env("CHAOS_DURATION", func(v string) (err error) { cfg.duration, err = time.ParseDuration(v); return })
	env("CHAOS_SEED", func(v string) (err error) { cfg.seed, err = strconv.ParseUint(v, 10, 64); return })
	env("CHAOS_PROBE_INTERVAL", func(v string) (err error) { cfg.probe, err = time.ParseDuration(v); cfg.explicit = true; return })
	if !cfg.explicit {
		cfg.probe = defaultProbeInterval(t)
	}
	// README: a crashed node is declared dead after about 4–7 probe
	// intervals. The margin is for a loaded 2-core host.
	cfg.detect = 10*cfg.probe + 3*time.Second
	env("CHAOS_DETECT_BOUND", func(v string) (err error) { cfg.detect, err = time.ParseDuration(v); return })
	cfg.netns = netnsUnavailable()
	if cfg.netns != "" && os.Getenv("CHAOS_REQUIRE_NETNS") != "" {
		t.Fatalf("CHAOS_REQUIRE_NETNS is set but network namespaces are unavailable: %s", cfg.netns)
	}
	return cfg
}

// defaultProbeInterval is the nodes' --gossip-probe-interval when the
// flag is not given (the lan profile's).
func defaultProbeInterval(*testing.T) time.Duration { return mesh.DefaultProbeInterval }

const (
	chaosTopic     = "realtime:chaos"
	chaosNodes     = 3
	clientsPerNode = 3
	rowInterval    = 20 * time.Millisecond  // the writer commits 50 rows a second
	bcastInterval  = 200 * time.Millisecond // each client broadcasts 5 messages a second
	// flowWait bounds "broadcasts and rows flow again" once presence has
	// converged after a fault.
	flowWait = 15 * time.Second
	// reconnectWait bounds a client's reconnect to a live node: backoff,
	// dial, join (whose reply waits for the database owner, up to 5 s),
	// track.
	reconnectWait = 20 * time.Second
	// inFlight is how long before a kill a row may have committed and
	// still be lost with the killed node's sockets when nothing else
	// happened just before; see chaosRun.inFlight.
	inFlight = 2 * time.Second
)

// inFlight is how long before a kill a committed row may still not have
// reached the killed node: faults follow each other 1–3 s apart, and a
// kill or partition just before holds every delivery until it is
// detected and a new database owner has taken over, so rows committed
// then arrive up to the detection bound later (seen in a 3-minute run: a
// partition right after the owner's restart held rows 3.6 s).
func (r *chaosRun) inFlight() time.Duration { return max(inFlight, r.cfg.detect+time.Second) }

// chaosRun is one run: the cluster, its clients, the writer, what was
// measured.
type chaosRun struct {
	t   *testing.T
	cfg chaosConfig
	pg  *pgtest.Server
	rng *rand.Rand
	nw  *nsNetwork // nil without namespaces

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // clients and the writer
	w      *writer
	werr   chan error

	mu          sync.Mutex
	specs       []nodeSpec
	nodes       []*node // the running incarnation of each slot, nil while down
	all         []*node // every incarnation, for the log check
	killed      map[*node]time.Time
	partitioned int // slot cut off, -1 when none
	clients     []*chaosClient
	sessions    []*session // every session that connected

	// Figures for the report.
	leaves      []time.Duration // kill -9 → its sessions' presence gone from every other node
	converged   []time.Duration // kill -9 → presence equal everywhere, reconnected clients included
	reconnects  []time.Duration // a client's socket lost → live again on another node
	partDetect  []time.Duration // partition → the cut node's presence gone from the others
	cutDetect   []time.Duration // partition → the others' presence gone from the cut node
	cutSlow     int             // partitions after which the cut node did not get there within the bound
	healed      []time.Duration // heal → one cluster, presence equal everywhere
	pgGaps      []time.Duration
	faultCounts map[string]int
	unexpected  []string // sockets lost without a kill
}

func startChaos(t *testing.T, cfg chaosConfig, pg *pgtest.Server) *chaosRun {
	t.Helper()
	r := &chaosRun{
		t: t, cfg: cfg, pg: pg,
		rng:         rand.New(rand.NewPCG(cfg.seed, 0)),
		killed:      make(map[*node]time.Time),
		partitioned: -1,
		faultCounts: make(map[string]int),
	}
	probe := "the binary's default"
	if cfg.explicit {
		probe = "--gossip-probe-interval " + cfg.probe.String()
	}
	t.Logf("chaos: duration %v, seed %d (CHAOS_SEED), probe interval %v (%s), detection bound %v", cfg.duration, cfg.seed, cfg.probe, probe, cfg.detect)
	extra := []string{"--database-url", pg.URL()}
	if cfg.explicit {
		extra = append(extra, "--gossip-probe-interval", cfg.probe.String())
	}
	if cfg.netns == "" {
		r.nw = newNSNetwork(t, chaosNodes)
		u, err := url.Parse(pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		r.nw.forward(t, u.Host) // the nodes reach Postgres on their own loopback
		for i := range chaosNodes {
			addr := r.nw.addr(i)
			r.specs = append(r.specs, nodeSpec{
				name: "n" + strconv.Itoa(i+1), region: "local",
				httpAddr: "127.0.0.1:4000", gossipAddr: addr + ":7946", meshAddr: addr + ":7947",
				secret: "chaos", extra: extra, defaultProbe: true, ns: r.nw.nodes[i],
			})
		}
		t.Logf("chaos: nodes in network namespaces %s…, partitions on", r.nw.nodes[0].name)
	} else {
		r.specs = clusterSpecs(t, "chaos", extra...)
		for i := range r.specs {
			r.specs[i].defaultProbe = true
		}
		t.Logf("chaos: partitions skipped: %s; nodes on loopback", cfg.netns)
	}
	// Every node knows every other as a seed, as on fly.io (<app>.internal):
	// a node that finds itself alone after a partition or a restart
	// rejoins, whichever it is.
	for i := range r.specs {
		var seeds []string
		for j, s := range r.specs {
			if j != i {
				seeds = append(seeds, s.gossipAddr)
			}
		}
		r.specs[i].join = strings.Join(seeds, ",")
	}
	for _, spec := range r.specs {
		n := spawnNode(t, spec)
		r.nodes, r.all = append(r.nodes, n), append(r.all, n)
	}
	c := &cluster{specs: r.specs, nodes: r.nodes}
	c.waitMembers(t, r.nodes, chaosNodes, readyWait)
	// A last look at every log, whatever failed first.
	t.Cleanup(func() { r.checkLogs() })
	// Then every socket is closed and its reader waited for, once the
	// clients have stopped (cleanups run last-in first-out).
	t.Cleanup(func() {
		r.mu.Lock()
		all := slices.Clone(r.sessions)
		r.mu.Unlock()
		for _, s := range all {
			s.ws.nc.Close()
			<-s.done
		}
	})

	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() { r.cancel(); r.wg.Wait() })
	for i := range chaosNodes * clientsPerNode {
		cl := &chaosClient{r: r, name: fmt.Sprintf("c%d", i+1), home: i / clientsPerNode}
		r.clients = append(r.clients, cl)
	}
	// Connect everyone before the first row, so that every first session
	// is owed every row.
	for _, cl := range r.clients {
		s, err := cl.connect(cl.home)
		if err != nil {
			t.Fatalf("%s: first connect to %s: %v", cl.name, r.specs[cl.home].name, err)
		}
		cl.setSession(s)
	}
	for _, cl := range r.clients {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); cl.run() }()
	}
	r.waitConverged("the start", readyWait)
	r.w = &writer{url: pg.URL()}
	r.werr = make(chan error, 1)
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.werr <- r.w.run(r.ctx, 1, 1<<30, rowInterval) }()
	r.waitFlow("the start", nil)
	return r
}

// run injects faults until the duration has passed, every kind at least
// once.
func (r *chaosRun) run() {
	kinds := []string{"kill", "partition", "kill", "postgres"}
	if r.nw == nil {
		kinds = []string{"kill", "postgres"}
	}
	start := time.Now()
	for i := 0; i < len(kinds) || time.Since(start) < r.cfg.duration; i++ {
		if r.t.Failed() {
			return
		}
		r.pause(time.Second + time.Duration(r.randIntN(2000))*time.Millisecond)
		kind := kinds[i%len(kinds)]
		r.faultCounts[kind]++
		r.t.Logf("chaos %v: fault %d: %s", time.Since(start).Round(100*time.Millisecond), i+1, kind)
		switch kind {
		case "kill":
			r.kill()
		case "partition":
			r.partition()
		case "postgres":
			r.restartPostgres()
		}
		r.checkLogs()
	}
}

// pause waits d, failing the test if a node exits on its own meanwhile.
func (r *chaosRun) pause(d time.Duration) {
	r.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		r.checkAlive()
		time.Sleep(50 * time.Millisecond)
	}
}

// checkAlive fails the test when a node that was not killed has exited.
func (r *chaosRun) checkAlive() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.nodes {
		if n == nil {
			continue
		}
		select {
		case <-n.done:
			r.t.Fatalf("%s (%s) exited on its own: %v\n%s", n.name, n.id, n.err, tail(n.log.String(), 40))
		default:
		}
	}
}

var crashRE = regexp.MustCompile(`(?m)^(panic: |fatal error: |WARNING: DATA RACE)|http: panic serving`)

// checkLogs fails the test if any incarnation's log holds a panic, a Go
// runtime fatal error or a race detector report.
func (r *chaosRun) checkLogs() {
	r.mu.Lock()
	all := slices.Clone(r.all)
	r.mu.Unlock()
	for _, n := range all {
		log := n.log.String()
		if loc := crashRE.FindStringIndex(log); loc != nil {
			r.t.Errorf("%s (%s) logged a crash:\n%s", n.name, n.id, log[max(0, loc[0]-2000):min(len(log), loc[1]+6000)])
		}
	}
}

func (r *chaosRun) up() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for i, n := range r.nodes {
		if n != nil {
			out = append(out, i)
		}
	}
	return out
}

func (r *chaosRun) upNodes() []*node {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*node
	for _, n := range r.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// kill -9s a random node, restarts it after a short pause, and waits for
// presence, broadcasts and rows to be whole again.
func (r *chaosRun) kill() {
	r.t.Helper()
	// A random node among those with clients (their sessions move to the
	// others as nodes die).
	up := r.up()
	var busy []int
	for _, i := range up {
		r.mu.Lock()
		n := r.nodes[i]
		r.mu.Unlock()
		if len(r.sessionsOn(n)) > 0 {
			busy = append(busy, i)
		}
	}
	if len(busy) > 0 {
		up = busy
	}
	slot := up[r.randIntN(len(up))]
	r.mu.Lock()
	victim := r.nodes[slot]
	r.mu.Unlock()
	gone := r.sessionsOn(victim)
	victim.cmd.Process.Kill()
	killed := time.Now()
	r.mu.Lock()
	r.killed[victim] = killed
	r.nodes[slot] = nil
	r.mu.Unlock()
	if !victim.exited(msgWait) {
		r.t.Fatalf("%s did not exit after kill -9", victim.name)
	}
	// Meanwhile, the presence entries of its sessions must leave every
	// other node within the detection bound.
	leave := make(chan time.Duration, 1)
	go func() {
		// Observed by at least one client elsewhere: when every client was
		// on the victim, by the first of them reconnected.
		ok := waitFor(r.cfg.detect, func() bool { return r.observers(gone) > 0 && !r.anyViewHolds(gone) })
		if !ok {
			leave <- -1
			return
		}
		leave <- time.Since(killed)
	}()
	r.pause(time.Duration(500+r.randIntN(1500)) * time.Millisecond)
	n := spawnNode(r.t, r.specs[slot])
	r.mu.Lock()
	r.nodes[slot] = n
	r.all = append(r.all, n)
	r.mu.Unlock()
	r.t.Logf("killed %s (%s, %d sessions), restarted as %s after %v", victim.name, victim.id, len(gone), n.id, time.Since(killed).Round(time.Millisecond))
	if d := <-leave; d < 0 {
		r.t.Fatalf("after kill -9 of %s, clients still saw its sessions' presence after %v (the detection bound): %s", victim.name, r.cfg.detect, r.describeViews())
	} else {
		r.leaves = append(r.leaves, d)
		r.t.Logf("kill -9 of %s → its presence gone on every other node's clients after %v", victim.name, d.Round(time.Millisecond))
	}
	c := &cluster{specs: r.specs}
	c.waitMembers(r.t, r.upNodes(), chaosNodes, readyWait)
	r.waitConverged("kill -9 of "+victim.name, r.cfg.detect+reconnectWait)
	r.converged = append(r.converged, time.Since(killed))
	r.waitFlow("kill -9 of "+victim.name, nil)
}

// partition cuts a random node off the others, waits until each side's
// presence holds only its own clients, heals, and waits for one cluster
// again.
func (r *chaosRun) partition() {
	r.t.Helper()
	slot := r.randIntN(chaosNodes)
	r.mu.Lock()
	cut := r.nodes[slot]
	r.mu.Unlock()
	if err := r.nw.partition(slot); err != nil {
		r.t.Fatal(err)
	}
	at := time.Now()
	r.mu.Lock()
	r.partitioned = slot
	r.mu.Unlock()
	healed := false
	defer func() {
		if !healed {
			r.nw.heal(slot)
		}
	}()
	// The majority side declares the cut node dead within the detection
	// bound. The cut node itself is slower: memberlist's local health
	// awareness (Lifeguard) stretches the probes of a node whose probes all
	// fail, up to 8 times; its view is measured, not asserted.
	onMajority := func(s *session) bool { return s.slot != slot }
	r.waitConvergedOn("the partition of "+cut.name+" (the other nodes' clients)", r.cfg.detect, onMajority)
	r.partDetect = append(r.partDetect, time.Since(at))
	r.t.Logf("partition of %s: the other nodes' clients lost its presence after %v", cut.name, time.Since(at).Round(time.Millisecond))
	// The cut node's own view is watched until the heal.
	healing := make(chan struct{})
	cutSeen := make(chan time.Duration, 1)
	go func() {
		for {
			if ok, _ := r.convergedNow(nil); ok {
				cutSeen <- time.Since(at)
				return
			}
			select {
			case <-healing:
				cutSeen <- -1
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	// Broadcasts still flow inside each side (the cut node's clients
	// may still count the others: only pairs of one side are checked).
	// Rows need the side that holds the replication slot: checked after
	// the heal.
	r.waitFlow("the partition of "+cut.name, func(*session) bool { return false })
	r.pause(time.Duration(1000+r.randIntN(2000)) * time.Millisecond)
	close(healing)
	if d := <-cutSeen; d >= 0 {
		r.cutDetect = append(r.cutDetect, d)
		r.t.Logf("partition of %s: its own clients lost the others' presence after %v", cut.name, d.Round(time.Millisecond))
	} else {
		_, why := r.convergedNow(nil)
		r.cutSlow++
		r.t.Logf("partition of %s: healed after %v; its own clients still saw the other side: %s", cut.name, time.Since(at).Round(time.Millisecond), why)
	}

	if err := r.nw.heal(slot); err != nil {
		r.t.Fatal(err)
	}
	healed = true
	at = time.Now()
	r.mu.Lock()
	r.partitioned = -1
	r.mu.Unlock()
	c := &cluster{specs: r.specs}
	// A node alone rejoins its seeds with a backoff of up to 10 s.
	healWait := r.cfg.detect + 15*time.Second
	c.waitMembers(r.t, r.upNodes(), chaosNodes, healWait)
	r.waitConverged("healing the partition of "+cut.name, healWait)
	r.healed = append(r.healed, time.Since(at))
	r.t.Logf("partition of %s healed: one cluster and presence equal everywhere after %v", cut.name, time.Since(at).Round(time.Millisecond))
	r.waitFlow("healing the partition of "+cut.name, nil)
}

// restartPostgres crashes Postgres (immediate shutdown) and starts it
// again; rows must flow to every subscriber after.
func (r *chaosRun) restartPostgres() {
	r.t.Helper()
	at := time.Now()
	r.pg.Restart()
	r.t.Logf("Postgres crashed and restarted in %v", time.Since(at).Round(time.Millisecond))
	r.waitFlow("the Postgres restart", nil)
	r.pgGaps = append(r.pgGaps, time.Since(at))
}

// side is the partition side of slot: 0 for the cut node, 1 for the
// others, 1 for everyone without a partition.
func (r *chaosRun) side(slot int) int {
	if slot == r.partitioned {
		return 0
	}
	return 1
}

// liveSessions are the clients' current sessions that are live (joined,
// subscribed and tracked) on a running node.
func (r *chaosRun) liveSessions() []*session {
	var out []*session
	for _, cl := range r.clients {
		if s := cl.current(); s != nil && s.isLive() {
			out = append(out, s)
		}
	}
	return out
}

func (r *chaosRun) sessionsOn(n *node) map[string]bool {
	out := make(map[string]bool)
	for _, s := range r.liveSessions() {
		if s.node == n {
			out[s.id] = true
		}
	}
	return out
}

// observers counts the live sessions not in ids.
func (r *chaosRun) observers(ids map[string]bool) int {
	n := 0
	for _, s := range r.liveSessions() {
		if !ids[s.id] {
			n++
		}
	}
	return n
}

// anyViewHolds reports whether a live session on a running node other
// than those of ids still sees one of ids in its presence.
func (r *chaosRun) anyViewHolds(ids map[string]bool) bool {
	for _, s := range r.liveSessions() {
		if ids[s.id] {
			continue
		}
		for _, v := range s.view() {
			for _, id := range v {
				if ids[id] {
					return true
				}
			}
		}
	}
	return false
}

// expectedView is what a session on slot should see: key → the session
// ids of every live session on its side of any partition.
func (r *chaosRun) expectedView(slot int, live []*session) map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := make(map[string][]string)
	for _, s := range live {
		if r.side(s.slot) == r.side(slot) {
			want[s.cl.name] = []string{s.id}
		}
	}
	return want
}

// convergedNow reports whether every client has a live session and each
// one accepted by on (nil: all) sees exactly the sessions of its side;
// otherwise what differs.
func (r *chaosRun) convergedNow(on func(*session) bool) (bool, string) {
	live := r.liveSessions()
	if len(live) < len(r.clients) {
		var missing []string
		for _, cl := range r.clients {
			if s := cl.current(); s == nil || !s.isLive() {
				missing = append(missing, cl.name)
			}
		}
		return false, fmt.Sprintf("clients not connected: %v", missing)
	}
	for _, s := range live {
		if on != nil && !on(s) {
			continue
		}
		want, got := r.expectedView(s.slot, live), s.view()
		if !sameView(want, got) {
			return false, fmt.Sprintf("%s on %s sees %v, want %v", s.id, r.specs[s.slot].name, got, want)
		}
	}
	return true, ""
}

func sameView(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// waitConverged waits until every client is connected and every
// presence view is what its side should see.
func (r *chaosRun) waitConverged(after string, within time.Duration) {
	r.t.Helper()
	r.waitConvergedOn(after, within, nil)
}

// waitConvergedOn is waitConverged for the views of the sessions on
// accepts.
func (r *chaosRun) waitConvergedOn(after string, within time.Duration, on func(*session) bool) {
	r.t.Helper()
	var why string
	deadline := time.Now().Add(within)
	for {
		var ok bool
		if ok, why = r.convergedNow(on); ok {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("presence did not converge within %v after %s: %s", within, after, why)
		}
		r.checkAlive()
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *chaosRun) describeViews() string {
	var b strings.Builder
	for _, s := range r.liveSessions() {
		fmt.Fprintf(&b, "\n  %s on %s: %v", s.id, r.specs[s.slot].name, s.view())
	}
	return b.String()
}

// waitFlow waits until every live session has received a broadcast sent
// after now by every other live session of its side, and a row committed
// after now (only the sessions rowsFor accepts, when it is not nil).
func (r *chaosRun) waitFlow(after string, rowsFor func(*session) bool) {
	r.t.Helper()
	live := r.liveSessions()
	type pair struct {
		to   *session
		from *chaosClient
		seq  int
	}
	var pairs []pair
	r.mu.Lock()
	for _, to := range live {
		for _, from := range live {
			if from != to && r.side(from.slot) == r.side(to.slot) {
				pairs = append(pairs, pair{to, from.cl, from.cl.sent()})
			}
		}
	}
	r.mu.Unlock()
	row := r.w.last() + 1
	var why string
	ok := waitFor(flowWait, func() bool {
		for _, p := range pairs {
			if p.to.lastFrom(p.from.name) <= p.seq {
				why = fmt.Sprintf("%s got nothing from %s after its message %d (last %d)", p.to.id, p.from.name, p.seq, p.to.lastFrom(p.from.name))
				return false
			}
		}
		for _, s := range live {
			if rowsFor != nil && !rowsFor(s) {
				continue
			}
			if s.maxRow() < row {
				why = fmt.Sprintf("%s on %s got no row ≥ %d (its last %d; the writer is at %d)", s.id, r.specs[s.slot].name, row, s.maxRow(), r.w.last())
				return false
			}
		}
		return true
	})
	if !ok {
		r.t.Fatalf("after %s, traffic did not flow again within %v: %s", after, flowWait, why)
	}
}

// finish stops the writer and checks every live session against the rows
// Postgres committed.
func (r *chaosRun) finish() {
	r.t.Helper()
	if r.t.Failed() {
		return
	}
	// Let the last rows settle, then stop writing.
	last := r.w.last()
	r.cancel()
	r.wg.Wait() // the clients' sockets stay open: their readers keep reading
	select {
	case err := <-r.werr:
		if err != nil && err != context.Canceled {
			r.t.Fatalf("writer: %v", err)
		}
	default:
	}
	committed := r.committedRows()
	r.t.Logf("the writer committed %d rows (its last id %d)", len(committed), max(last, r.w.last()))
	type owed struct {
		s    *session
		want []int
	}
	var all []owed
	for _, cl := range r.clients {
		s := cl.current()
		if s == nil || !s.isLive() {
			r.t.Errorf("%s has no live session at the end", cl.name)
			continue
		}
		var want []int
		for _, c := range committed {
			if c.at.After(s.replyAt) {
				want = append(want, c.id)
			}
		}
		all = append(all, owed{s, want})
	}
	var missing map[*session][]int
	waitFor(30*time.Second, func() bool {
		missing = make(map[*session][]int)
		for _, o := range all {
			for _, id := range o.want {
				if o.s.count(id) == 0 {
					missing[o.s] = append(missing[o.s], id)
				}
			}
		}
		return len(missing) == 0
	})
	var whole, reconnected, dups int
	for _, o := range all {
		if m := missing[o.s]; len(m) > 0 {
			r.t.Errorf("%s on %s (join reply at %s) is missing %d of the %d rows committed after its join reply: %s",
				o.s.id, r.specs[o.s.slot].name, o.s.replyAt.Format("15:04:05.000"), len(m), len(o.want), compactIDs(m))
		}
		if o.s.first {
			whole++
		} else {
			reconnected++
		}
		dups += o.s.duplicates()
	}
	// A session that ended with its node's kill got every row committed
	// after its join reply until shortly before the kill (what was in
	// flight may be lost with the socket).
	r.mu.Lock()
	ended := slices.Clone(r.sessions)
	r.mu.Unlock()
	var endedChecked int
	for _, s := range ended {
		if s.isLive() {
			continue
		}
		r.mu.Lock()
		killed, ok := r.killed[s.node]
		r.mu.Unlock()
		if !ok {
			continue // reported as an unexpected loss
		}
		var lost []int
		for _, c := range committed {
			if c.at.After(s.replyAt) && c.at.Before(killed.Add(-r.inFlight())) && s.count(c.id) == 0 {
				lost = append(lost, c.id)
			}
		}
		endedChecked++
		if len(lost) > 0 {
			r.t.Errorf("%s on %s (join reply at %s, node killed at %s) missed %d rows committed before the kill: %s",
				s.id, s.node.name, s.replyAt.Format("15:04:05.000"), killed.Format("15:04:05.000"), len(lost), compactIDs(lost))
		}
		dups += s.duplicates()
	}
	var sessions int
	for _, cl := range r.clients {
		cl.mu.Lock()
		sessions += len(cl.sessions)
		cl.mu.Unlock()
	}
	r.t.Logf("rows: %d clients connected the whole run and %d reconnected ones checked against Postgres, and %d sessions that ended with a kill; %d sessions in all; %d rows delivered twice to one session",
		whole, reconnected, endedChecked, sessions, dups)
	if len(r.unexpected) > 0 {
		r.t.Errorf("clients lost their socket to a node that was not killed: %s", strings.Join(r.unexpected, "; "))
	}
	r.report()
}

type committedRow struct {
	id int
	at time.Time
}

// committedRows reads every row and its commit time from Postgres.
func (r *chaosRun) committedRows() []committedRow {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.pg.URL())
	if err != nil {
		r.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id, pg_xact_commit_timestamp(xmin) FROM ticks ORDER BY id`)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []committedRow
	for rows.Next() {
		var c committedRow
		if err := rows.Scan(&c.id, &c.at); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *chaosRun) report() {
	span := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "-"
		}
		s := slices.Clone(ds)
		slices.Sort(s)
		return fmt.Sprintf("%v–%v (median %v, n=%d)", s[0].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), len(s))
	}
	var kinds []string
	for k, n := range r.faultCounts {
		kinds = append(kinds, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(kinds)
	r.t.Logf("chaos report (probe interval %v, detection bound %v): faults %s", r.cfg.probe, r.cfg.detect, strings.Join(kinds, " "))
	r.t.Logf("  kill -9 → presence leave on the other nodes: %s", span(r.leaves))
	r.t.Logf("  kill -9 → every client reconnected and presence equal everywhere: %s", span(r.converged))
	r.t.Logf("  client socket lost → live on another node: %s", span(r.reconnects))
	r.t.Logf("  partition → the cut node's presence gone from the others: %s", span(r.partDetect))
	r.t.Logf("  partition → the others' presence gone from the cut node: %s; %d times not before the heal", span(r.cutDetect), r.cutSlow)
	r.t.Logf("  heal → one cluster, presence equal everywhere: %s", span(r.healed))
	r.t.Logf("  Postgres restart → rows flowing to every subscriber: %s", span(r.pgGaps))
	var dropped float64
	for _, n := range r.upNodes() {
		m, err := scrape(n)
		if err == nil {
			dropped += m["meshcast_wal_duplicates_dropped_total"]
		}
	}
	r.t.Logf("  repeats dropped by the running nodes (meshcast_wal_duplicates_dropped_total): %v", dropped)
}

// chaosClient is one user: a socket at a time, reconnecting to a random
// live node when its node dies, broadcasting sequence-numbered messages.
type chaosClient struct {
	r    *chaosRun
	name string // presence key
	home int    // the slot of its first session

	mu       sync.Mutex
	cur      *session
	sessions []*session
	seq      int // the last broadcast sent
}

func (cl *chaosClient) current() *session {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.cur
}

func (cl *chaosClient) setSession(s *session) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.cur = s
	cl.sessions = append(cl.sessions, s)
	s.first = len(cl.sessions) == 1
}

func (cl *chaosClient) sent() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.seq
}

// run broadcasts on the current session and replaces it when its socket
// dies, until the run ends.
func (cl *chaosClient) run() {
	r := cl.r
	tick := time.NewTicker(bcastInterval)
	defer tick.Stop()
	for {
		s := cl.current()
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
			cl.mu.Lock()
			cl.seq++
			seq := cl.seq
			cl.mu.Unlock()
			s.write(broadcastFrame(chaosTopic, "1", "b"+strconv.Itoa(seq), "m", fmt.Sprintf(`{"from":%q,"seq":%d}`, cl.name, seq)))
			continue
		case <-s.done:
		}
		lost := time.Now()
		r.mu.Lock()
		_, expected := r.killed[s.node]
		if !expected {
			r.unexpected = append(r.unexpected, fmt.Sprintf("%s on %s: %v", s.id, s.node.name, s.err))
		}
		r.mu.Unlock()
		// Reconnect as realtime-js would, with a short backoff, to any
		// node the load balancer still sends to.
		for attempt := 0; ; attempt++ {
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(time.Duration(200+r.randIntN(300)) * time.Millisecond):
			}
			slots := r.reachable()
			if len(slots) == 0 {
				continue
			}
			ns, err := cl.connect(slots[r.randIntN(len(slots))])
			if err != nil {
				continue
			}
			cl.setSession(ns)
			r.mu.Lock()
			r.reconnects = append(r.reconnects, time.Since(lost))
			r.mu.Unlock()
			break
		}
	}
}

func (r *chaosRun) randIntN(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rng.IntN(n) // the only use of rng: the clients use it too
}

// reachable are the running nodes outside any partition.
func (r *chaosRun) reachable() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for i, n := range r.nodes {
		if n != nil && i != r.partitioned {
			out = append(out, i)
		}
	}
	return out
}

// session is one socket of a client: joined to the chaos channel with
// broadcast, presence and postgres_changes, read by its own goroutine.
type session struct {
	cl    *chaosClient
	id    string // presence meta "sess", unique per socket
	slot  int
	node  *node
	ws    *wsClient
	first bool // the client's first session, open before the first row

	wmu     sync.Mutex // one writer at a time
	replies chan frame // phx_reply and system frames, for connect

	mu      sync.Mutex
	replyAt time.Time // when the join reply arrived
	live    bool
	rows    map[int]int
	maxID   int
	pres    map[string]map[string]string // key → phx_ref → sess
	bcast   map[string]int               // sender → the last seq received
	err     error
	done    chan struct{}
}

// connect opens a session on slot: join (and its reply), "Subscribed to
// PostgreSQL", track.
func (cl *chaosClient) connect(slot int) (*session, error) {
	r := cl.r
	r.mu.Lock()
	n := r.nodes[slot]
	k := len(cl.sessions) + 1
	r.mu.Unlock()
	if n == nil {
		return nil, fmt.Errorf("%s is down", r.specs[slot].name)
	}
	s := &session{
		cl: cl, id: cl.name + "#" + strconv.Itoa(k), slot: slot, node: n,
		replies: make(chan frame, 16),
		rows:    make(map[int]int),
		pres:    make(map[string]map[string]string),
		bcast:   make(map[string]int),
		done:    make(chan struct{}),
	}
	ws, err := dialWS(n, s.id)
	if err != nil {
		return nil, err
	}
	s.ws = ws
	go s.read()
	fail := func(err error) (*session, error) {
		ws.nc.Close()
		<-s.done
		return nil, fmt.Errorf("%s on %s: %w", s.id, n.name, err)
	}
	config := `{"broadcast":{"self":false,"ack":false},"presence":{"key":"` + cl.name + `","enabled":true},` +
		`"postgres_changes":[{"event":"INSERT","schema":"public","table":"ticks"}],"private":false}`
	if err := s.write(joinFrame(chaosTopic, "1", config)); err != nil {
		return fail(err)
	}
	if _, err := s.awaitReply(func(f frame) bool { return isReply(f, chaosTopic, "1") }, 10*time.Second); err != nil {
		return fail(fmt.Errorf("join: %w", err))
	}
	f, err := s.awaitReply(func(f frame) bool { return f.Event == "system" }, 10*time.Second)
	if err != nil {
		return fail(fmt.Errorf("postgres_changes: %w", err))
	}
	if jsonField(f.Payload, "status") != "ok" {
		return fail(fmt.Errorf("postgres_changes: %s", f.raw))
	}
	if err := s.write(fmt.Sprintf(`["1","2",%q,"presence",{"type":"presence","event":"track","payload":{"sess":%q}}]`, chaosTopic, s.id)); err != nil {
		return fail(err)
	}
	if _, err := s.awaitReply(func(f frame) bool { return isReply(f, chaosTopic, "2") }, 10*time.Second); err != nil {
		return fail(fmt.Errorf("track: %w", err))
	}
	s.mu.Lock()
	s.live = true
	s.mu.Unlock()
	r.mu.Lock()
	r.sessions = append(r.sessions, s)
	r.mu.Unlock()
	return s, nil
}

func (s *session) write(text string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.ws.write(text)
}

// awaitReply waits for a reply or system frame that matches; a status
// other than ok is an error.
func (s *session) awaitReply(match func(frame) bool, d time.Duration) (frame, error) {
	timeout := time.After(d)
	for {
		select {
		case f := <-s.replies:
			if !match(f) {
				continue
			}
			if f.Event == "phx_reply" && replyStatus(f) != "ok" {
				return f, fmt.Errorf("refused: %s", f.raw)
			}
			return f, nil
		case <-s.done:
			return frame{}, fmt.Errorf("socket closed: %v", s.err)
		case <-timeout:
			return frame{}, fmt.Errorf("no reply within %v", d)
		}
	}
}

// read decodes every frame until the socket ends.
func (s *session) read() {
	defer close(s.done)
	for {
		f, err := s.ws.readFrame(2 * time.Minute)
		if err != nil {
			s.mu.Lock()
			s.err, s.live = err, false
			s.mu.Unlock()
			return
		}
		switch f.Event {
		case "phx_reply", "system":
			if f.Event == "phx_reply" && f.Ref != nil && *f.Ref == "1" {
				s.mu.Lock()
				s.replyAt = time.Now()
				s.mu.Unlock()
			}
			select {
			case s.replies <- f:
			default: // nobody waits for it any more
			}
		case "presence_state", "presence_diff":
			s.applyPresence(f)
		case "broadcast":
			if p, ok := isBroadcast(f, chaosTopic, "m"); ok {
				var m struct {
					From string
					Seq  int
				}
				if json.Unmarshal(p, &m) == nil {
					s.mu.Lock()
					s.bcast[m.From] = max(s.bcast[m.From], m.Seq)
					s.mu.Unlock()
				}
			}
		case "postgres_changes":
			var p struct {
				Data struct {
					Record struct{ ID *int } `json:"record"`
				} `json:"data"`
			}
			if json.Unmarshal(f.Payload, &p) == nil && p.Data.Record.ID != nil {
				s.mu.Lock()
				s.rows[*p.Data.Record.ID]++
				s.maxID = max(s.maxID, *p.Data.Record.ID)
				s.mu.Unlock()
			}
		}
	}
}

func (s *session) applyPresence(f frame) {
	type metas map[string]struct {
		Metas []struct {
			Ref  string `json:"phx_ref"`
			Sess string `json:"sess"`
		} `json:"metas"`
	}
	add := func(m metas) {
		for key, e := range m {
			if s.pres[key] == nil {
				s.pres[key] = make(map[string]string)
			}
			for _, meta := range e.Metas {
				s.pres[key][meta.Ref] = meta.Sess
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Event == "presence_state" {
		var st metas
		json.Unmarshal(f.Payload, &st)
		s.pres = make(map[string]map[string]string)
		add(st)
		return
	}
	var d struct{ Joins, Leaves metas }
	json.Unmarshal(f.Payload, &d)
	add(d.Joins)
	for key, e := range d.Leaves {
		for _, meta := range e.Metas {
			delete(s.pres[key], meta.Ref)
		}
		if len(s.pres[key]) == 0 {
			delete(s.pres, key)
		}
	}
}

// view is the session's presence: key → the sorted session ids of its
// metas.
func (s *session) view() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]string, len(s.pres))
	for key, refs := range s.pres {
		var ids []string
		for _, id := range refs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		out[key] = ids
	}
	return out
}

func (s *session) isLive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

func (s *session) lastFrom(sender string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bcast[sender]
}

func (s *session) maxRow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxID
}

func (s *session) count(id int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows[id]
}

func (s *session) duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.rows {
		if c > 1 {
			n += c - 1
		}
	}
	return n
}
