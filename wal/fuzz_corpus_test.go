package wal

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/meshcast/meshcast/wal/pgtest"
	"github.com/meshcast/meshcast/wire/fuzzcorpus"
)

// TestWriteCorpus captures real pgoutput bytes from a throwaway Postgres:
// the oracle table (a column of every type the decoder knows) through
// inserts, updates with a full replica identity, deletes and a truncate.
// Each message seeds FuzzParseMessage, whole streams seed
// FuzzPgoutputStream, the text values seed FuzzAppendValue, and the
// changes the mesh would carry seed FuzzDecodeChange.
func TestWriteCorpusPgoutput(t *testing.T) {
	fuzzcorpus.Skip(t)
	pg := pgtest.Shared(t)
	pg.Exec(oracleSchema)
	pg.Exec("ALTER TABLE oracle REPLICA IDENTITY FULL")
	pg.Exec("CREATE TABLE todos (id int8 PRIMARY KEY, title text, done bool)")
	pg.Exec("SELECT pg_create_logical_replication_slot('corpus', 'pgoutput')")
	cols := "i2, i4, i8, f4, f8, n, n2, b, t, vc, c, ch, nm, u, j, jb, d, tm, ttz, ts, tstz, iv, by, ta, ia, ia2, ba, tsa, ja, na, boxes, " +
		"e, ea, dm, dt, dj, comp, compa, inet, pt, money, r, bits, tsv, o, x, iv2"
	for _, row := range oracleRows {
		pg.Exec("INSERT INTO oracle (" + cols + ") VALUES " + row)
	}
	pg.Exec("INSERT INTO oracle DEFAULT VALUES")
	pg.Exec("INSERT INTO todos VALUES (1, 'Buy \"milk\"', false), (2, 'é😀', NULL)")
	pg.Exec("UPDATE todos SET done = true WHERE id = 1")
	pg.Exec("UPDATE todos SET id = 3 WHERE id = 2")
	pg.Exec("UPDATE oracle SET t = 'changed' WHERE id = 1")
	pg.Exec("DELETE FROM todos WHERE id = 1")
	pg.Exec("DELETE FROM oracle WHERE id = 2")
	pg.Exec("TRUNCATE todos, oracle")

	conn := connect(t, pg.URL())
	rows, err := conn.Query(context.Background(), `SELECT data FROM pg_logical_slot_peek_binary_changes('corpus', NULL, NULL,
		'proto_version', '1', 'publication_names', 'p')`)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 20 {
		t.Fatalf("only %d messages captured", len(msgs))
	}
	// Messages one by one; streams of whole transactions, each with the
	// Relation messages seen so far in front, as a reconnected session
	// would get them again.
	var relations [][]byte
	var tx [][]byte
	txn := 0
	oids := map[uint32][]uint32{} // relation → column types
	values := map[string]bool{}   // type and text already written
	for i, b := range msgs {
		fuzzcorpus.Write(t, "FuzzParseMessage", fmt.Sprintf("%03d-%c", i, b[0]), b)
		m, err := parseMessage(b)
		if err != nil {
			t.Fatalf("captured message %d: %v", i, err)
		}
		switch m := m.(type) {
		case msgRelation:
			relations = append(relations, b)
			for _, c := range m.columns {
				oids[m.id] = append(oids[m.id], c.oid)
			}
		case msgRow:
			for _, tup := range [][]tupleValue{m.newTuple, m.oldTuple} {
				for k, v := range tup {
					if v.kind != 't' || k >= len(oids[m.relation]) {
						continue
					}
					oid := oids[m.relation][k]
					if key := fmt.Sprint(oid, string(v.data)); !values[key] {
						values[key] = true
						fuzzcorpus.Write(t, "FuzzAppendValue", fmt.Sprintf("%03d-%d", i, k), oid, v.data)
					}
				}
			}
		}
		tx = append(tx, b)
		if b[0] == 'C' {
			stream := append(append([][]byte{}, relations...), tx...)
			fuzzcorpus.Write(t, "FuzzPgoutputStream", fmt.Sprintf("tx%02d", txn), pgoutputStream(stream))
			tx, txn = nil, txn+1
		}
	}
	fuzzcorpus.Write(t, "FuzzPgoutputStream", "all", pgoutputStream(msgs))

	for i, tx := range slotTransactions(t, conn, "corpus", "p") {
		for j, c := range tx.Changes {
			fuzzcorpus.Write(t, "FuzzDecodeChange", fmt.Sprintf("tx%02d-%d", i, j), c.AppendBinary(nil))
		}
	}
}

// TestWriteCorpus writes the corpora that need no database: filters as
// clients write them, and subscriptions as nodes register them.
func TestWriteCorpus(t *testing.T) {
	fuzzcorpus.Skip(t)
	for i, s := range []string{"id=eq.1", "title=neq.Buy milk", `name=in.(a,"b,c",d)`, "done=is.null", "id=gte.5,done=not.is.true",
		"created_at=lt.2024-05-01T10:00:00Z", `body=eq."quoted \"x\""`, "id=isdistinct.3", "tags=cs.{a,b}", "a=not.in.()"} {
		fuzzcorpus.Write(t, "FuzzParseFilter", fmt.Sprint(i), s)
	}
	for i, b := range subRegisterSeeds(t) {
		fuzzcorpus.Write(t, "FuzzSubRegister", fmt.Sprint(i), b)
	}
}
