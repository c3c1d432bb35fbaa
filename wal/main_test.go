package wal

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/meshcast/meshcast/wal/pgtest"
	"go.uber.org/goleak"
)

// TestMain shares one Postgres between the package's tests (each test gets
// its own database) and fails the package if a goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Main(m)) }

// connect opens a connection with the reader's session settings, closed
// when t ends.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// slotTransactions consumes what slot holds through the SQL interface to
// logical decoding, and decodes it as the reader does.
func slotTransactions(t testing.TB, conn *pgx.Conn, slot, publication string) []*Transaction {
	t.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'messages', 'true')`, slot, publication)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	types := newTypeCache()
	a := newAssembler()
	var txs []*Transaction
	for _, b := range msgs {
		m, err := parseMessage(b)
		if err != nil {
			t.Fatalf("parse %q: %v", b, err)
		}
		switch m := m.(type) {
		case msgBegin:
			err = a.begin(m)
		case msgRelation:
			var r *relation
			if r, err = types.relation(ctx, conn, m); err == nil {
				a.addRelation(r)
			}
		case msgType:
			types.forget(m.oid)
		case msgRow:
			err = a.row(m)
		case msgTruncate:
			err = a.truncate(m)
		case msgMessage:
			a.message(m)
		case msgCommit:
			var tx *Transaction
			if tx, err = a.commit(m); err == nil {
				txs = append(txs, tx)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return txs
}
