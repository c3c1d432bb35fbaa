package wal

import (
	"context"
	"encoding/json"
	"math/big"
	"strings"
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
		'proto_version', '1', 'publication_names', $2)`, slot, publication)
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

// jsonEqual compares JSON texts as values, numbers by their exact decimal
// value (jsonb prints 1e+30 as 1000000000000000000000000000000).
func jsonEqual(a, b []byte) bool {
	va, err1 := decodeJSON(a)
	vb, err2 := decodeJSON(b)
	return err1 == nil && err2 == nil && valueEqual(va, vb)
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

func valueEqual(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		ra, ok1 := new(big.Rat).SetString(a.String())
		rb, ok2 := new(big.Rat).SetString(b.String())
		return ok1 && ok2 && ra.Cmp(rb) == 0
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !valueEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !valueEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}
