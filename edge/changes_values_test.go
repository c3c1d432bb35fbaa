package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

const valuesSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'with "quote"');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE vals (
	id int8 PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, b bool, t text, vc varchar(20),
	u uuid, j json, jb jsonb, d date, tm time, ts timestamp, tstz timestamptz, iv interval, by bytea,
	ta text[], ia int4[], e mood, dm posint);
CREATE TABLE vals_full (LIKE vals INCLUDING ALL);
ALTER TABLE vals_full REPLICA IDENTITY FULL;
CREATE TABLE toasty (id int4 PRIMARY KEY, big text, n int4);
ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE toasty_full (LIKE toasty INCLUDING ALL);
ALTER TABLE toasty_full REPLICA IDENTITY FULL;
CREATE TABLE seq (id int4 PRIMARY KEY, note text);
CREATE PUBLICATION supabase_realtime FOR ALL TABLES;
`

// valueRows are rows of vals: typical values, then edge cases (extremes,
// NaN and infinities, empty strings and arrays, JSON null, BC dates,
// 24:00, negative intervals, quotes, backslashes and non-ASCII text).
var valueRows = []string{
	`(1, 32767, -2147483648, 9223372036854775807, 1.1, 0.1, 12345678901234567890.123456789, true,
	  E'a "quoted" \\ back\\slash é 😀\nnl', 'varchar', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
	  '{"b": 1, "a": [1, 2.50, {"c": null}], "a": "dup"}', '{"k": [true, null, 1e30, "é"]}',
	  '2024-02-29', '23:59:59.999999', '2024-05-01 10:00:00.123456', '2024-05-01 12:00:00.5+02',
	  '1 year 2 mons 3 days 04:05:06.789', '\x00ff', '{a,"b c",NULL,"\"q\"",é,"back\\slash"}', '{1,NULL,-3}', 'happy', 42)`,
	`(2, -32768, 0, -9223372036854775808, 'NaN', '-Infinity', 'NaN', false, '', '', '00000000-0000-0000-0000-000000000000',
	  'null', '"str"', '-infinity', '24:00:00', 'infinity', '0044-03-15 10:00:00+00 BC', '-1 days -00:00:01', '\x',
	  '{}', '{{1,2},{3,4}}', 'with "quote"', 2147483647)`,
	`(3, 0, 1, -1, '-0', 1e-300, '-Infinity', NULL, 'z', NULL, NULL, '[]', '{}', '1970-01-01', '00:00:00', '2000-01-01 00:00:00',
	  'infinity', '00:00:00', '\xdeadbeef', '{""}', '{}', 'sad', 1)`,
	`(4)`, // every other column NULL
}

// The record a client receives is what to_jsonb gives for the row, for a
// column of every common type, on insert, update and delete; old_record
// is the key with the default replica identity and the whole old row with
// FULL; columns name each column's pg type.
func TestChangesValuesAreToJSONB(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(valuesSchema)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_values"})
	conn := pgConn(t, pg)
	c := ts.connect(t)
	ids, sys := joinWithBindings(t, c, "1", "realtime:values",
		`[{"event":"*","schema":"public","table":"vals"},{"event":"*","schema":"public","table":"vals_full"}]`)
	if sys != `"Subscribed to PostgreSQL"` {
		t.Fatalf("join: %s", sys)
	}
	for ti, table := range []string{"vals", "vals_full"} {
		full := table == "vals_full"
		row := func(id int) []byte {
			return queryJSON(t, conn, "SELECT to_jsonb(r)::text FROM "+table+" r WHERE id = $1", id)
		}
		check := func(what string, got changeOf, kind string, record, old []byte) {
			t.Helper()
			d := got.Data
			if d.Type != kind || d.Schema != "public" || d.Table != table || string(d.Errors) != "null" {
				t.Errorf("%s %s: type %q schema %q table %q errors %s", table, what, d.Type, d.Schema, d.Table, d.Errors)
			}
			if fmt.Sprint(got.IDs) != fmt.Sprint(ids[ti:ti+1]) {
				t.Errorf("%s %s: ids %v, want %v", table, what, got.IDs, ids[ti:ti+1])
			}
			if (record == nil) != (d.Record == nil) || record != nil && !pgtest.SameJSON(d.Record, record) {
				t.Errorf("%s %s: record\n got %s\nwant %s", table, what, d.Record, record)
			}
			if record != nil {
				// Each value byte for byte as to_jsonb prints it (json's
				// duplicate keys and spacing included).
				var g, w map[string]json.RawMessage
				json.Unmarshal(d.Record, &g)
				json.Unmarshal(record, &w)
				for k, wv := range w {
					if string(g[k]) != string(wv) {
						t.Errorf("%s %s: %s is %s, to_jsonb %s", table, what, k, g[k], wv)
					}
				}
			}
			if (old == nil) != (d.OldRecord == nil) || old != nil && !pgtest.SameJSON(d.OldRecord, old) {
				t.Errorf("%s %s: old_record\n got %s\nwant %s", table, what, d.OldRecord, old)
			}
			if ct, err := time.Parse("2006-01-02T15:04:05.000Z", d.CommitTimestamp); err != nil || time.Since(ct).Abs() > time.Minute {
				t.Errorf("%s %s: commit_timestamp %q (%v)", table, what, d.CommitTimestamp, err)
			}
		}

		start := time.Now()
		for _, r := range valueRows {
			execSQL(t, conn, "INSERT INTO "+table+" VALUES "+r)
		}
		got := collectChanges(t, c, len(valueRows), testWait)
		for i, ch := range got {
			check(fmt.Sprintf("insert of row %d", i+1), ch, "INSERT", row(i+1), nil)
		}
		wantCols := queryJSON(t, conn, `SELECT jsonb_agg(jsonb_build_object('name', a.attname, 'type', ty.typname) ORDER BY a.attnum)::text
			FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
			WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, table)
		if cols, _ := json.Marshal(got[0].Data.Columns); !pgtest.SameJSON(cols, wantCols) {
			t.Errorf("%s columns\n got %s\nwant %s", table, cols, wantCols)
		}

		// Row 1 takes row 2's values; row 2's key changes; row 3 goes.
		before1, before3 := row(1), row(3)
		execSQL(t, conn, `UPDATE `+table+` SET (i2, i4, i8, f4, f8, n, b, t, vc, u, j, jb, d, tm, ts, tstz, iv, by, ta, ia, e, dm) =
			(SELECT i2, i4, i8, f4, f8, n, b, t, vc, u, j, jb, d, tm, ts, tstz, iv, by, ta, ia, e, dm FROM `+table+` WHERE id = 2) WHERE id = 1`)
		before2 := row(2)
		execSQL(t, conn, "UPDATE "+table+" SET id = 20 WHERE id = 2")
		execSQL(t, conn, "DELETE FROM "+table+" WHERE id = 3")
		got = collectChanges(t, c, 3, testWait)
		old1, old2, old3 := []byte(`{"id":1}`), []byte(`{"id":2}`), []byte(`{"id":3}`)
		if full {
			old1, old2, old3 = before1, before2, before3
		}
		check("update of every column", got[0], "UPDATE", row(1), old1)
		check("update of the key", got[1], "UPDATE", row(20), old2)
		check("delete", got[2], "DELETE", nil, old3)
		t.Logf("%s: %d changes checked in %v", table, len(valueRows)+3, time.Since(start).Round(time.Millisecond))
	}
}

// An update that leaves a TOASTed value alone: Postgres does not send the
// value, so with the default replica identity record leaves the column
// out, and with FULL it has it (from the old row). Inserts carry it whole.
func TestChangesUnchangedTOAST(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(valuesSchema)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_toast"})
	conn := pgConn(t, pg)
	c := ts.connect(t)
	joinWithBindings(t, c, "1", "realtime:toast",
		`[{"event":"*","schema":"public","table":"toasty"},{"event":"*","schema":"public","table":"toasty_full"}]`)
	for _, table := range []string{"toasty", "toasty_full"} {
		// md5 chains are incompressible enough, and EXTERNAL storage keeps
		// them uncompressed: the value is stored out of line.
		execSQL(t, conn, "INSERT INTO "+table+" SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 400) i")
		inserted := queryJSON(t, conn, "SELECT to_jsonb(t)::text FROM "+table+" t WHERE id = 1")
		execSQL(t, conn, "UPDATE "+table+" SET n = 1 WHERE id = 1")
		got := collectChanges(t, c, 2, testWait)
		whole := queryJSON(t, conn, "SELECT to_jsonb(t)::text FROM "+table+" t WHERE id = 1")
		if got[0].Data.Type != "INSERT" || !pgtest.SameJSON(got[0].Data.Record, inserted) {
			t.Errorf("%s insert: record %.200s", table, got[0].Data.Record)
		}
		want := queryJSON(t, conn, "SELECT (to_jsonb(t) - 'big')::text FROM "+table+" t WHERE id = 1")
		if table == "toasty_full" {
			want = whole
		}
		if got[1].Data.Type != "UPDATE" || !pgtest.SameJSON(got[1].Data.Record, want) {
			t.Errorf("%s update leaving the TOASTed value: record\n got %.200s\nwant %.200s", table, got[1].Data.Record, want)
		}
	}
}

// A transaction's changes arrive in statement order, and transactions in
// commit order, not in the order they began; a TRUNCATE reaches no one, as
// in Supabase.
func TestChangesCommitOrder(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(valuesSchema)
	ts, _ := startChangesPair(t, pg, pairConfig{slot: "edge_order"})
	c := ts.connect(t)
	joinWithBindings(t, c, "1", "realtime:order", `[{"event":"*","schema":"public","table":"seq"}]`)
	ctx := context.Background()
	first, second := pgConn(t, pg), pgConn(t, pg)
	tx1, err := first.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(ctx)
	tx2, err := second.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(ctx)
	for _, s := range []struct {
		on  int
		sql string
	}{
		{1, "INSERT INTO seq VALUES (1, 'a')"},
		{2, "INSERT INTO seq VALUES (2, 'b')"},
		{2, "UPDATE seq SET note = 'b2' WHERE id = 2"},
		{1, "UPDATE seq SET note = 'a2' WHERE id = 1"},
		{1, "INSERT INTO seq VALUES (3, 'c')"},
		{1, "DELETE FROM seq WHERE id = 1"},
	} {
		tx := tx1
		if s.on == 2 {
			tx = tx2
		}
		if _, err := tx.Exec(ctx, s.sql); err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
	}
	if err := tx2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	execSQL(t, first, "TRUNCATE seq")
	execSQL(t, first, "INSERT INTO seq VALUES (4, 'd')")
	want := []string{"INSERT 2 b", "UPDATE 2 b2", "INSERT 1 a", "UPDATE 1 a2", "INSERT 3 c", "DELETE 1 ", "INSERT 4 d"}
	got := collectChanges(t, c, len(want), testWait)
	var seen []string
	last := ""
	for _, ch := range got {
		var r struct {
			ID   int    `json:"id"`
			Note string `json:"note"`
		}
		rec := ch.Data.Record
		if ch.Data.Type == "DELETE" {
			rec = ch.Data.OldRecord
		}
		json.Unmarshal(rec, &r)
		seen = append(seen, fmt.Sprintf("%s %d %s", ch.Data.Type, r.ID, r.Note))
		if ch.Data.CommitTimestamp < last {
			t.Errorf("commit_timestamp went back: %s after %s", ch.Data.CommitTimestamp, last)
		}
		last = ch.Data.CommitTimestamp
	}
	if strings.Join(seen, "; ") != strings.Join(want, "; ") {
		t.Errorf("changes in order\n got %s\nwant %s", strings.Join(seen, "; "), strings.Join(want, "; "))
	}
}
