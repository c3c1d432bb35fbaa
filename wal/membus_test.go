package wal

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// memNode is a Service on a MemHub.
type memNode struct {
	m    Member
	svc  *Service
	d    *deliveries
	stop func() // stops the Service as a crash would: no draining
}

func startMemNode(t *testing.T, hub *MemHub, m Member, url, slot string, opt func(*ServiceConfig)) *memNode {
	t.Helper()
	d := newDeliveries()
	cfg := ServiceConfig{DB: "db", Self: m.ID, Bus: hub.Bus(m.ID), Deliver: d.deliver, SettleWait: 200 * time.Millisecond,
		TakeoverWait: time.Second, Logger: slog.New(slog.DiscardHandler)}
	if m.Reader {
		cfg.Reader = testReaderFor(url, slot)
	}
	if opt != nil {
		opt(&cfg)
	}
	s := NewService(cfg)
	hub.Attach(m.ID, s)
	stop := runService(t, s)
	return &memNode{m: m, svc: s, d: d, stop: stop}
}

// Over the in-memory bus, without QUIC: a member cut off from the owner
// (its clients still connected) and back again gets every row committed
// meanwhile, once, in order — the owner held confirmation while it was
// absent and reads the unconfirmed tail again for it; the others drop the
// repeats.
func TestServiceMemHubAbsentMemberGetsWhatItMissed(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	hub := NewMemHub()
	t.Cleanup(hub.Close)
	long := func(c *ServiceConfig) { c.AbsentWait = time.Hour }
	ms := []Member{{ID: "o", Name: "o", DB: "db", Reader: true}, {ID: "n1", Name: "n1", DB: "db"}, {ID: "n2", Name: "n2", DB: "db"}}
	var nodes []*memNode
	for _, m := range ms {
		nodes = append(nodes, startMemNode(t, hub, m, pg.URL(), "svc_memhub", long))
	}
	hub.SetMembers(ms)
	subs := map[*memNode]*Subscription{}
	for _, n := range nodes {
		sub := &Subscription{ID: n.svc.NewID(), Schema: "public", Table: "items"}
		if err := n.svc.Subscribe(context.Background(), []*Subscription{sub}); err != nil {
			t.Fatalf("%s: %v", n.m.ID, err)
		}
		subs[n] = sub
	}
	if !nodes[0].svc.Owns() {
		t.Fatal("o, the only member that can read, does not own the database")
	}
	for i := 1; i <= 5; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	for _, n := range nodes {
		n.d.waitRows(t, subs[n].ID, 5, 10*time.Second)
	}
	// n2 is cut off: the others see it vanish, it sees them vanish.
	cut := nodes[2]
	hub.SetMembers(ms[:2])
	cut.svc.SetMembers(ms[2:])
	for i := 6; i <= 15; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i)
	}
	nodes[1].d.waitRows(t, subs[nodes[1]].ID, 15, 10*time.Second)
	if got := cut.d.rows(subs[cut].ID); len(got) != 5 {
		t.Fatalf("the cut-off member got rows %v while cut off", got)
	}
	hub.SetMembers(ms)
	cut.d.waitRows(t, subs[cut].ID, 15, 10*time.Second)
	pg.Exec(`INSERT INTO items VALUES (16, 'x')`)
	for _, n := range nodes {
		n.d.waitRows(t, subs[n].ID, 16, 10*time.Second) // and nothing twice (waitRows checks)
	}
}

// What subscriptions hold is given back when they go: the owner's and the
// node's indexes of them shrink, so the heap returns close to where it was
// before they came (kept maps would hold some 13% of it).
func TestServiceMemoryReturnedWhenSubscriptionsGo(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	s := NewService(ServiceConfig{DB: "db", Self: "n1", Reader: testReaderFor(pg.URL(), "svc_shrink"), Deliver: func(*Change, []uint64) {},
		Logger: slog.New(slog.DiscardHandler)})
	runService(t, s)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	warm := &Subscription{ID: s.NewID(), Schema: "public", Table: "items"}
	if err := s.Subscribe(context.Background(), []*Subscription{warm}); err != nil {
		t.Fatal(err)
	}
	pg.Exec(`INSERT INTO items VALUES (1, 'x')`) // the matcher compiles the table's index
	base := heap()
	const total, batch = 40000, 1000
	var ids []uint64
	for range total / batch {
		var subs []*Subscription
		for range batch {
			sub := &Subscription{ID: s.NewID(), Schema: "public", Table: "items", Filters: mustFilter(t, "note=like.%abcdefghij%")}
			subs = append(subs, sub)
			ids = append(ids, sub.ID)
		}
		if err := s.Subscribe(context.Background(), subs); err != nil {
			t.Fatal(err)
		}
	}
	pg.Exec(`INSERT INTO items VALUES (2, 'x')`)
	full := heap()
	if full < base+total*200 {
		t.Fatalf("%d subscriptions took only %d bytes: the test measures nothing", total, full-base)
	}
	s.Unsubscribe(ids)
	eventually(t, "the subscriptions to go", func() bool { return s.matcher.Len() == 1 })
	after := heap()
	if kept := int64(after) - int64(base); kept > int64(full-base)/20 {
		t.Errorf("heap: %d before, %d with %d subscriptions, %d after they went: %d bytes kept", base, full, total, after, kept)
	}
}
