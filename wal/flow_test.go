package wal

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// One transaction far larger than TxMemory, subscribed to on the owner and
// on another node: the owner holds at most its budget, routes the rest
// from disk in chunks (every RLS check on a chunk), and both subscribers
// get every row once, in commit order, the filtered one only its rows. A
// table nobody subscribes to costs nothing, however large its
// transaction.
func TestServiceLargeTransactionSpillsAndRoutesInChunks(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text); CREATE TABLE other (id int PRIMARY KEY, note text)`)
	const budget = 128 << 10
	var mu sync.Mutex
	largest := 0
	cfg := func(c *ServiceConfig) {
		c.Reader.TxMemory = budget
		c.Reader.SpillDir = t.TempDir()
		c.Authorize = func(ctx context.Context, cs []*Change, hits [][]*Subscription) error {
			mu.Lock()
			largest = max(largest, len(cs))
			mu.Unlock()
			return nil
		}
	}
	n1 := startServiceNode(t, "n1", pg.URL(), "svc_large", nil, cfg)
	n2 := startServiceNode(t, "n2", pg.URL(), "svc_large", []string{n1.node.GossipAddr()}, cfg)
	nodes := []*clusterService{n1, n2}
	subs := subscribeAll(t, nodes)
	owner := ownerAmong(t, nodes)
	few := &Subscription{ID: n2.svc.NewID(), Schema: "public", Table: "items", Filters: mustFilter(t, "id=in.(7,9999,4242)")}
	if err := n2.svc.Subscribe(context.Background(), []*Subscription{few}); err != nil {
		t.Fatal(err)
	}
	pg.Exec(`INSERT INTO other SELECT g, repeat('z', 30) FROM generate_series(1, 20000) g`)
	const rows = 10000
	pg.Exec(`INSERT INTO items SELECT g, repeat('x', 30) FROM generate_series(1, $1::int) g`, rows)
	for _, n := range nodes {
		n.d.waitRows(t, subs[n].ID, rows, 60*time.Second)
	}
	eventually(t, "the filtered subscription's rows", func() bool { return len(n2.d.rows(few.ID)) == 3 })
	if got := n2.d.rows(few.ID); got[0] != 7 || got[1] != 4242 || got[2] != 9999 {
		t.Fatalf("filtered subscription got %v", got)
	}
	m := owner.svc.reader.m
	if skipped := m.skipped.Get(); skipped != 20000 {
		t.Errorf("skipped %d changes, want the 20000 nobody subscribes to", skipped)
	}
	if spilled := m.spilled.Get(); spilled < rows/2 {
		t.Errorf("spilled %d of %d changes with a budget of %d bytes", spilled, rows, budget)
	}
	mu.Lock()
	if largest > maxBatchChanges {
		t.Errorf("an RLS check of %d changes; chunks hold at most %d", largest, maxBatchChanges)
	}
	mu.Unlock()
	b := owner.svc.reader.budget
	eventually(t, "every transaction released", func() bool { return b.held.Load() == 0 && b.open.Load() == 0 })
}

// Subscribers that cannot take more pace the reader instead of losing
// rows: while delivery waits, the reader stops at a transaction boundary
// and keeps reporting its position, so Postgres (here with a 1 s
// wal_sender_timeout) keeps the connection; once delivery resumes every
// row arrives, in order, without a reconnect.
func TestServicePausesReaderWhileDeliveryWaits(t *testing.T) {
	pg := pgtest.Start(t, pgtest.WithSetting("wal_sender_timeout", "1s"))
	pg.Exec(`CREATE TABLE items (id int PRIMARY KEY, note text)`)
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	n1 := startServiceNode(t, "n1", pg.URL(), "svc_pause", nil, func(c *ServiceConfig) {
		deliver := c.Deliver
		c.Deliver = func(c *Change, ids []uint64) {
			<-gate // a subscriber with no room
			deliver(c, ids)
		}
	})
	sub := subscribeAll(t, []*clusterService{n1})[n1]
	const rows = maxOpenTx + 100
	for i := 1; i <= rows; i++ {
		pg.Exec(`INSERT INTO items VALUES ($1, 'x')`, i) // a transaction each
	}
	m := n1.svc.reader.m
	eventually(t, "the reader to pause", func() bool { return m.paused.Get() == 1 })
	if read := m.txs.Get(); read > maxOpenTx+1 {
		t.Fatalf("the reader read %d transactions while delivery was stuck; at most %d are held", read, maxOpenTx+1)
	}
	eventually(t, "a pause over twice wal_sender_timeout", func() bool { return m.pausedSeconds.Get() >= 2.5 })
	open()
	n1.d.waitRows(t, sub.ID, rows, 20*time.Second)
	if r := m.reconnects.Get(); r != 0 {
		t.Errorf("%d reconnects: Postgres dropped the paused reader", r)
	}
	if m.paused.Get() != 0 {
		t.Errorf("the reader is still paused")
	}
}
