package wal

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wal/pgtest"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// deliveries records what a Service delivered: the id column of each
// inserted row, by subscription ID, in order.
type deliveries struct {
	mu  sync.Mutex
	got map[uint64][]int
	pos map[uint64][]Pos // the position of each
}

func newDeliveries() *deliveries {
	return &deliveries{got: map[uint64][]int{}, pos: map[uint64][]Pos{}}
}

// after returns the rows subscription id got live after position p.
func (d *deliveries) after(id uint64, p Pos) []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for i, q := range d.pos[id] {
		if p.Before(q) {
			out = append(out, d.got[id][i])
		}
	}
	return out
}

func (d *deliveries) deliver(c *Change, ids []uint64) {
	if c.Kind != Insert {
		return
	}
	idx := -1
	for i, col := range c.Columns {
		if col.Name == "id" {
			idx = i
		}
	}
	n, _ := strconv.Atoi(string(c.Record[idx]))
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		d.got[id] = append(d.got[id], n)
		d.pos[id] = append(d.pos[id], c.Pos())
	}
}

func (d *deliveries) rows(id uint64) []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.got[id]...)
}

// waitRows waits until subscription id got rows 1..n.
func (d *deliveries) waitRows(t *testing.T, id uint64, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := d.rows(id)
		if len(got) >= n {
			for i, v := range got {
				if v != i+1 {
					t.Fatalf("subscription %d: rows %v: not every row once in commit order", id, got)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription %d got %d of %d rows: %v", id, len(got), n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runService(t *testing.T, s *Service) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			s.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

func testReaderFor(url, slot string) *Reader {
	return &Reader{URL: url, Slot: slot, StatusInterval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
}

// A subscription confirmed by Subscribe gets every change committed after
// it, and none after Unsubscribe.
func TestServiceSingleNode(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	d := newDeliveries()
	s := NewService(ServiceConfig{DB: "db", Self: "n1", Reader: testReaderFor(pg.URL(), "svc_single"), Deliver: d.deliver,
		Logger: slog.New(slog.DiscardHandler)})
	runService(t, s)
	all := &Subscription{ID: s.NewID(), Schema: "public", Table: "items"}
	odd := &Subscription{ID: s.NewID(), Schema: "public", Table: "items", Filters: []Filter{{Column: "note", Op: OpEq, Value: "odd"}}}
	if err := s.Subscribe(context.Background(), []*Subscription{all, odd}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		note := "even"
		if i%2 == 1 {
			note = "odd"
		}
		pg.Exec(`INSERT INTO items VALUES ($1, $2)`, i, note)
	}
	d.waitRows(t, all.ID, 5, 10*time.Second)
	if got := d.rows(odd.ID); fmt.Sprint(got) != "[1 3 5]" {
		t.Errorf("filtered subscription got %v, want [1 3 5]", got)
	}
	s.Unsubscribe([]uint64{odd.ID})
	pg.Exec(`INSERT INTO items VALUES (6, 'odd')`)
	d.waitRows(t, all.ID, 6, 10*time.Second)
	if got := d.rows(odd.ID); len(got) != 3 {
		t.Errorf("after Unsubscribe the subscription got %v", got)
	}
}

type nopHandler struct{}

func (nopHandler) Deliver(*meshproto.Broadcast)                    {}
func (nopHandler) ApplyPresence(string, presence.Delta) bool       { return true }
func (nopHandler) ApplyPresenceSnapshot(string, presence.Snapshot) {}
func (nopHandler) OwnPresence(string) presence.Snapshot            { return presence.Snapshot{} }
func (nopHandler) NodeDown(string)                                 {}

// testMeshBus and attachTestMesh connect a Service to a mesh.Node, as
// cmd/meshcast does.
type testMeshBus struct{ n *mesh.Node }

func (b testMeshBus) Send(to string, l Lane, frame []byte) bool {
	return b.n.Send(to, mesh.Lane(l), frame)
}

func attachTestMesh(n *mesh.Node, s *Service) {
	n.SetDatabase("db", s.CanRead())
	for _, t := range FrameTypes {
		n.Handle(t, s.Receive)
	}
	for _, l := range []Lane{LaneControl, LaneChanges} {
		n.OnResync(mesh.Lane(l), func(peer string, emit func([]byte) error) error {
			for _, f := range s.Resync(peer, l) {
				if err := emit(f); err != nil {
					return err
				}
			}
			return nil
		})
	}
	n.Watch(func(self mesh.Member, members []mesh.Member) {
		ms := []Member{{ID: self.ID, Name: self.Name, Region: self.Region, DB: self.DB, Reader: self.Reader, Draining: self.Draining}}
		for _, m := range members {
			ms = append(ms, Member{ID: m.ID, Name: m.Name, Region: m.Region, DB: m.DB, Reader: m.Reader, Draining: m.Draining})
		}
		s.SetMembers(ms)
	})
}

type clusterService struct {
	node *mesh.Node
	svc  *Service
	d    *deliveries
	stop func()
}

func startServiceNode(t *testing.T, name, url, slot string, join []string, opts ...func(*ServiceConfig)) *clusterService {
	t.Helper()
	n, err := mesh.New(mesh.Config{
		Name: name, Region: "iad", GossipAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", Join: join,
		ClusterSecret: []byte("s"), Database: "db", PeerTimeout: time.Second,
		Gossip: mesh.GossipConfig{ProbeInterval: 100 * time.Millisecond},
		Logger: slog.New(slog.DiscardHandler),
	}, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	d := newDeliveries()
	cfg := ServiceConfig{DB: "db", Self: n.ID(), Reader: testReaderFor(url, slot), Deliver: d.deliver,
		SettleWait: 500 * time.Millisecond, TakeoverWait: time.Second, Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.Bus = testMeshBus{n}
	s := NewService(cfg)
	attachTestMesh(n, s)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	stopSvc := runService(t, s)
	cs := &clusterService{node: n, svc: s, d: d}
	var once sync.Once
	cs.stop = func() { once.Do(func() { n.Close(); stopSvc() }) }
	t.Cleanup(cs.stop)
	return cs
}

// Three nodes read one database through its owner. The owner is killed
// while rows are inserted at a steady rate: the other nodes' subscribers
// get every row, once, in commit order.
func TestServiceFailover(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	n1 := startServiceNode(t, "n1", pg.URL(), "svc_failover", nil)
	seed := n1.node.GossipAddr()
	nodes := []*clusterService{n1, startServiceNode(t, "n2", pg.URL(), "svc_failover", []string{seed}),
		startServiceNode(t, "n3", pg.URL(), "svc_failover", []string{seed})}
	subs := subscribeAll(t, nodes)
	victim := ownerAmong(t, nodes)
	const rows = 60
	for i := 1; i <= rows; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
		if i == rows/3 {
			victim.stop() // kill: no graceful leave
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, n := range nodes {
		if n != victim {
			n.d.waitRows(t, subs[n].ID, rows, 20*time.Second)
		}
	}
}

// subscribeAll subscribes every node to the inserts of items. Until the
// nodes have found each other, a first Subscribe may time out; it is
// retried, as a client would rejoin.
func subscribeAll(t *testing.T, nodes []*clusterService) map[*clusterService]*Subscription {
	t.Helper()
	subs := map[*clusterService]*Subscription{}
	for _, n := range nodes {
		sub := &Subscription{ID: n.svc.NewID(), Schema: "public", Table: "items"}
		deadline := time.Now().Add(20 * time.Second)
		for n.svc.Subscribe(context.Background(), []*Subscription{sub}) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s: subscription never confirmed", n.node.ID())
			}
		}
		subs[n] = sub
	}
	return subs
}

func ownerAmong(t *testing.T, nodes []*clusterService) *clusterService {
	t.Helper()
	for _, n := range nodes {
		if n.svc.Owns() {
			return n
		}
	}
	t.Fatal("no node owns the database")
	return nil
}

// A member that vanishes without leaving may be cut off with its clients
// still connected: the owner confirms nothing to Postgres meanwhile, so
// that it could read the changes again for it; a new incarnation of the
// member (the same name) ends the wait.
func TestServiceHoldsConfirmationWhileAMemberIsAbsent(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	const slot = "svc_absent"
	long := func(c *ServiceConfig) { c.AbsentWait = time.Hour }
	n1 := startServiceNode(t, "n1", pg.URL(), slot, nil, long)
	seed := n1.node.GossipAddr()
	nodes := []*clusterService{n1, startServiceNode(t, "n2", pg.URL(), slot, []string{seed}, long),
		startServiceNode(t, "n3", pg.URL(), slot, []string{seed}, long)}
	subs := subscribeAll(t, nodes)
	owner := ownerAmong(t, nodes)
	var victim *clusterService
	var others []*clusterService
	for _, n := range nodes {
		if n != owner && victim == nil {
			victim = n
		} else {
			others = append(others, n)
		}
	}
	lsnNow := func() LSN { return parseLSN(queryOne[string](t, pg.URL(), "SELECT pg_current_wal_lsn()::text")) }
	for i := 1; i <= 5; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	first := lsnNow()
	eventually(t, "the first rows confirmed", func() bool { return confirmedLSN(t, pg, slot) >= first })

	victim.stop() // no draining: to the others it vanished
	eventually(t, "the owner to drop the victim", func() bool {
		return owner.svc.nMember.Load() == 2
	})
	// Idle WAL (no changes) may be confirmed until now; nothing of the
	// rows below may be.
	before := lsnNow()
	for i := 6; i <= 20; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	after := lsnNow()
	for _, n := range others {
		n.d.waitRows(t, subs[n].ID, 20, 10*time.Second)
	}
	// Acknowledged by both live nodes, and still not confirmed: the
	// reader reports every 50 ms, so 40 reports pass.
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		if c := confirmedLSN(t, pg, slot); c > before {
			t.Fatalf("the owner confirmed %v (before the victim vanished: %v) while the victim was absent", c, before)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The victim's next incarnation: the old one is gone for good.
	startServiceNode(t, "n"+strconv.Itoa(slices.Index(nodes, victim)+1), pg.URL(), slot, []string{owner.node.GossipAddr()}, long)
	eventually(t, "the owner to see the new incarnation", func() bool {
		return owner.svc.nMember.Load() == 3
	})
	pg.Exec(`INSERT INTO items VALUES (21, 'x')`) // its commit is past after
	eventually(t, "confirmation once the victim restarted", func() bool { return confirmedLSN(t, pg, slot) >= after })
}

// While the owner checks row-level security, the reader keeps reading:
// the transactions that arrive meanwhile are checked together, in one
// Authorize call (one query per claims set for all of them), and still
// delivered once each, in commit order.
func TestServiceBatchesRLSChecksWhenBehind(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	var mu sync.Mutex
	var calls, changes int
	release := make(chan struct{})
	slow := func(c *ServiceConfig) {
		c.Authorize = func(ctx context.Context, cs []*Change, hits [][]*Subscription) error {
			mu.Lock()
			calls++
			changes += len(cs)
			first := calls == 1
			mu.Unlock()
			if first {
				select { // the first check is slow: the others queue up
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}
	}
	n1 := startServiceNode(t, "n1", pg.URL(), "svc_batch", nil, slow)
	sub := subscribeAll(t, []*clusterService{n1})[n1]
	const rows = 20
	for i := 1; i <= rows; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i) // a transaction each
	}
	eventually(t, "the first check to start", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls >= 1
	})
	// Let the reader read the rest before the first check ends.
	eventually(t, "the reader to read every row", func() bool {
		return n1.svc.reader.m.changes.Get() >= rows
	})
	close(release)
	n1.d.waitRows(t, sub.ID, rows, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if changes != rows || calls > 3 {
		t.Errorf("Authorize called %d times for %d changes of %d transactions: want every change checked once, in at most 3 batches", calls, changes, rows)
	}
}
