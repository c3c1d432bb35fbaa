package wal

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// assemble feeds a transaction of n inserts into table t (id int4, v
// text) through a, as the reader does, and returns it.
func assemble(t *testing.T, a *assembler, n int, value string) *Transaction {
	t.Helper()
	feed := func(b []byte) {
		t.Helper()
		m, err := parseMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case msgBegin:
			err = a.begin(m)
		case msgRelation:
			a.addRelation(fuzzRelation(m))
		case msgRow:
			err = a.row(m)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	begin := []byte{'B', 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 7}
	feed(begin)
	feed(relationMessage(1, "public", "t", []relColumn{{key: true, name: "id", oid: oidInt4}, {name: "v", oid: oidText}}))
	for i := 1; i <= n; i++ {
		feed(insertMessage(1, tuple('t', strconv.Itoa(i), 't', value)))
	}
	commit := []byte{'C', 0}
	commit = binary.BigEndian.AppendUint64(commit, 9)
	commit = binary.BigEndian.AppendUint64(commit, 10)
	commit = binary.BigEndian.AppendUint64(commit, 3)
	m, err := parseMessage(commit)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := a.commit(m.(msgCommit))
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// A transaction larger than the budget keeps its first changes in memory
// and the rest in an unlinked file; Range gives them all back in order,
// in bounded chunks, as they were read; Release returns the budget.
func TestAssemblerSpillsPastTheBudget(t *testing.T) {
	dir := t.TempDir()
	budget := newTxBudget(20_000)
	a := newAssembler()
	a.budget, a.spillDir = budget, dir
	// Only odd ids are kept: Seq still counts every change.
	a.keep = func(c *Change) bool { id, _ := strconv.Atoi(string(c.Record[0])); return id%2 == 1 }
	tx := assemble(t, a, 2000, strings.Repeat("x", 100))
	if tx.Len() != 1000 || len(tx.Changes) == 0 || len(tx.Changes) >= 100 {
		t.Fatalf("Len %d, %d in memory: want 1000 kept, a few in memory", tx.Len(), len(tx.Changes))
	}
	if held := budget.held.Load(); held > 20_000 || held != tx.hold.mem {
		t.Fatalf("budget holds %d, the transaction %d (limit 20000)", held, tx.hold.mem)
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Fatalf("spill file visible in %s: %v", dir, files)
	}
	var got []int
	chunks := 0
	err := tx.Range(64, 1<<20, func(cs []*Change) error {
		chunks++
		if len(cs) > 64 {
			t.Fatalf("chunk of %d changes, max 64", len(cs))
		}
		for _, c := range cs {
			id, _ := strconv.Atoi(string(c.Record[0]))
			if c.Seq != uint32(id-1) || c.LSN != 10 || c.xid != 7 || !c.CommitTime.Equal(tx.CommitTime) || string(c.Record[1]) != `"`+strings.Repeat("x", 100)+`"` {
				t.Fatalf("change %d: seq %d LSN %v xid %d time %v record %s", id, c.Seq, c.LSN, c.xid, c.CommitTime, c.Record[1])
			}
			got = append(got, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range got {
		if id != 2*i+1 {
			t.Fatalf("Range gave %v…, want the odd ids in order", got[:i+1])
		}
	}
	if len(got) != 1000 || chunks < 1000/64 {
		t.Fatalf("Range gave %d changes in %d chunks", len(got), chunks)
	}
	tx.Release()
	tx.Release()
	if budget.held.Load() != 0 {
		t.Fatalf("budget holds %d after Release", budget.held.Load())
	}
	if err := tx.Range(64, 1<<20, func([]*Change) error { return nil }); err == nil {
		t.Fatal("Range of a released spilled transaction read something")
	}
}

// Range's chunks are bounded in bytes too; one change larger than that is
// a chunk of its own.
func TestRangeChunksByBytes(t *testing.T) {
	a := newAssembler()
	tx := assemble(t, a, 10, strings.Repeat("y", 1000))
	var sizes []int
	tx.Range(100, 3000, func(cs []*Change) error { sizes = append(sizes, len(cs)); return nil })
	if len(sizes) != 5 || sizes[0] != 2 {
		t.Fatalf("chunks %v, want 5 of 2 (about 1.4 kB each, 3 kB max)", sizes)
	}
	sizes = nil
	tx.Range(100, 10, func(cs []*Change) error { sizes = append(sizes, len(cs)); return nil })
	if len(sizes) != 10 {
		t.Fatalf("chunks %v, want one per change", sizes)
	}
}

// A transaction the stream ends inside gives its budget and file back.
func TestAssemblerAbortReleases(t *testing.T) {
	budget := newTxBudget(5000)
	a := newAssembler()
	a.budget, a.spillDir = budget, t.TempDir()
	a.begin(msgBegin{xid: 1, time: time.Now()})
	a.addRelation(fuzzRelation(msgRelation{id: 1, schema: "public", name: "t", columns: []relColumn{{key: true, name: "id", oid: oidInt4}}}))
	for i := range 100 {
		m, _ := parseMessage(insertMessage(1, tuple('t', strconv.Itoa(i))))
		if err := a.row(m.(msgRow)); err != nil {
			t.Fatal(err)
		}
	}
	if a.tx.hold.spill == nil || budget.held.Load() == 0 {
		t.Fatal("nothing held or spilled")
	}
	a.abort()
	if budget.held.Load() != 0 || a.tx != nil {
		t.Fatalf("after abort: held %d", budget.held.Load())
	}
}

// The reader's pacing rule: it starts a transaction only while those it
// handed over and that were not released hold less than half the budget
// and number fewer than maxOpenTx.
func TestTxBudgetMayRead(t *testing.T) {
	for _, c := range []struct {
		limit, held, open int64
		want              bool
	}{
		{limit: 1000, held: 0, open: 0, want: true},
		{limit: 1000, held: 499, open: 3, want: true},
		{limit: 1000, held: 500, open: 3, want: false},
		{limit: 1000, held: 0, open: maxOpenTx - 1, want: true},
		{limit: 1000, held: 0, open: maxOpenTx, want: false},
		{limit: 0, held: 1 << 40, open: 10, want: true}, // no bound on memory
		{limit: 0, held: 0, open: maxOpenTx, want: false},
	} {
		b := newTxBudget(c.limit)
		b.held.Store(c.held)
		b.open.Store(c.open)
		if got := b.mayRead(); got != c.want {
			t.Errorf("limit %d held %d open %d: mayRead %v, want %v", c.limit, c.held, c.open, got, c.want)
		}
	}
	var nilBudget *txBudget
	if !nilBudget.mayRead() || !nilBudget.reserve(1<<50) {
		t.Error("no budget must bound nothing")
	}
}

// Reserve refuses what does not fit; release frees it and wakes the
// reader.
func TestTxBudgetReserve(t *testing.T) {
	b := newTxBudget(100)
	if !b.reserve(60) || b.reserve(41) || !b.reserve(40) {
		t.Fatal("reserve: 60 then 41 (refused) then 40 (fits exactly)")
	}
	b.open.Store(1)
	b.release(60, true)
	select {
	case <-b.freed:
	default:
		t.Fatal("release did not signal")
	}
	if b.held.Load() != 40 || b.open.Load() != 0 {
		t.Fatalf("held %d open %d", b.held.Load(), b.open.Load())
	}
}
