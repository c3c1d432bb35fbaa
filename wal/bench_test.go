package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/owner"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// BenchmarkMatchEq shows that with equality filters (id=eq.k, as
// Supabase's docs advise for many subscribers) a change costs the same
// whatever the number of subscriptions: it is hashed to its matches.
func BenchmarkMatchEq(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			m := NewMatcher()
			for i := range n {
				m.Add(&Subscription{ID: uint64(i), Node: "n" + strconv.Itoa(i%3), Schema: "public", Table: "todos",
					Filters: []Filter{{Column: "id", Op: OpEq, Value: strconv.Itoa(i)}}})
			}
			changes := make([]*Change, 64)
			for i := range changes {
				changes[i] = todoChange(Update, map[string]string{"id": strconv.Itoa(i * 7 % n), "title": `"x"`})
			}
			dst := m.Match(changes[0], nil) // compiles the table's index
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				dst = m.Match(changes[i%len(changes)], dst[:0])
				if len(dst) != 1 {
					b.Fatalf("%d matches", len(dst))
				}
			}
		})
	}
}

// BenchmarkMatchScan is the other end: subscriptions with a range filter are
// each evaluated, so a change costs O(subscriptions of its table).
func BenchmarkMatchScan(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			m := NewMatcher()
			for i := range n {
				m.Add(&Subscription{ID: uint64(i), Node: "n", Schema: "public", Table: "todos",
					Filters: []Filter{{Column: "id", Op: OpGt, Value: strconv.Itoa(i)}}})
			}
			c := todoChange(Insert, map[string]string{"id": "50"})
			dst := m.Match(c, nil)
			b.ReportAllocs()
			for b.Loop() {
				dst = m.Match(c, dst[:0])
			}
		})
	}
}

// BenchmarkAppendData is the cost of encoding a change's data object, done
// once per change (per distinct column selection), not per subscriber.
func BenchmarkAppendData(b *testing.B) {
	c := todoChange(Update, map[string]string{"id": "5", "title": `"Buy milk"`, "done": "false",
		"due": `"2024-05-01T10:00:00+00:00"`, "score": "1.50", "mood": `"ok"`})
	c.OldRecord = make([]json.RawMessage, len(c.Record))
	c.OldRecord[0] = c.Record[0]
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = c.AppendData(buf[:0], nil)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkDecodeInsert is the reader's cost per row change once the bytes
// are in: pgoutput decoding and the values' conversion to JSON.
func BenchmarkDecodeInsert(b *testing.B) {
	cols := []relColumn{{key: true, name: "id", oid: oidInt8}, {name: "title", oid: oidText}, {name: "done", oid: oidBool},
		{name: "due", oid: oidTimestampTZ}, {name: "score", oid: oidNumeric}, {name: "tags", oid: 1009}}
	m, _ := parseMessage(relationMessage(1, "public", "todos", cols))
	r := m.(msgRelation)
	types := make([]*typeInfo, len(r.columns))
	for i, c := range r.columns {
		types[i] = builtinTypes[c.oid]
	}
	rel := newRelation(r, types, []string{"id"})
	msg := insertMessage(1, tuple('t', "12345", 't', "Buy milk and \"bread\"", 't', "f",
		't', "2024-05-01 10:00:00.123456+00", 't', "3.14", 't', `{a,"b c"}`))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := parseMessage(msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rel.change(m.(msgRow)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHistoryAppend is what the owner's history of the recovery
// window adds per change read: its copy appended (and, at steady state,
// the oldest evicted).
func BenchmarkHistoryAppend(b *testing.B) {
	c := todoChange(Insert, map[string]string{"id": "5", "title": `"Buy milk"`, "done": "false",
		"due": `"2024-05-01T10:00:00+00:00"`, "score": "1.50", "mood": `"ok"`})
	h := newChangeStore(true)
	h.startAt(0, 0)
	batch := make([]*Change, 64)
	lsn := LSN(1)
	b.ReportAllocs()
	for b.Loop() {
		for i := range batch {
			cp := *c
			cp.LSN, cp.Seq = lsn, uint32(i)
			batch[i] = &cp
		}
		h.append(batch)
		if lsn > 64 {
			h.evict(owner.Evict{Through: owner.Pos{LSN: uint64(lsn - 64), Seq: 1<<32 - 1}})
		}
		lsn++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/change")
}

// BenchmarkRecoverServe is the owner's cost of one recovery: a client
// that missed 1 000 changes of its table, found in a history of 100 000
// (matched and encoded; no row-level security).
func BenchmarkRecoverServe(b *testing.B) {
	s := NewService(ServiceConfig{DB: "db", Self: "o", RecoveryWindow: time.Minute})
	s.store.startAt(0, 0)
	const held, missed = 100_000, 1000
	batch := make([]*Change, 0, held)
	for i := range held {
		c := todoChange(Insert, map[string]string{"id": strconv.Itoa(i), "title": `"Buy milk"`, "done": "false"})
		c.LSN = LSN(i + 1)
		batch = append(batch, c)
	}
	s.store.append(batch)
	sub := meshproto.Sub{ID: 1, Schema: "public", Table: "todos", Event: "*"}
	e := owner.ServeRecovery{To: "n1", Through: owner.Pos{LSN: held},
		Req: &meshproto.ChangesRecover{DB: "db", Call: 1, AfterLSN: held - missed, Subs: []meshproto.Sub{sub}}}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n = 0
		if reason := s.recoverFor(context.Background(), e, func(meshproto.RecoveredRecord) { n++ }); reason != "" {
			b.Fatal(reason)
		}
	}
	if n != missed {
		b.Fatalf("recovered %d changes, want %d", n, missed)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*missed), "ns/change")
}
