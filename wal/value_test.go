package wal

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// oracleSchema has a column of every type the decoder knows, and some it
// only passes through as text.
const oracleSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'with "quote"');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN tags AS text[];
CREATE DOMAIN js AS jsonb;
CREATE TYPE pair AS (a int4, b text, c timestamptz);
CREATE TABLE oracle (
	id serial PRIMARY KEY,
	i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, n2 numeric(10,2), b bool,
	t text, vc varchar(20), c char(5), ch "char", nm name, u uuid, j json, jb jsonb,
	d date, tm time, ttz timetz, ts timestamp, tstz timestamptz(6), iv interval, by bytea,
	ta text[], ia int4[], ia2 int4[], ba bool[], tsa timestamptz[], ja jsonb[], na numeric[], boxes box[],
	e mood, ea mood[], dm posint, dt tags, dj js, comp pair, compa pair[],
	inet inet, pt point, money money, r int4range, bits varbit, tsv tsvector, o oid, x xml, iv2 int2vector
);
CREATE PUBLICATION p FOR ALL TABLES;
`

var oracleRows = []string{
	// Typical values.
	`(1, 2, 3, 1.5, 2.25, 3.125, 4.10, true,
	  'hello', 'var', 'ab', 'x', 'nm', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1, "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}',
	  '2024-05-01', '10:00:00', '10:00:00+02', '2024-05-01 10:00:00.123456', '2024-05-01 10:00:00.123456+00', '1 day 02:00:00', '\x0102',
	  '{a,b}', '{1,2,3}', '{{1,2},{3,4}}', '{t,f}', '{"2024-05-01 10:00:00+02"}', '{"{\"a\": 1}"}', '{1.5,NaN}', '{(1,2),(3,4);(5,6),(7,8)}',
	  'ok', '{sad,happy}', 5, '{x,y}', '{"k": [true, null]}', '(1,"two, 2","2024-05-01 10:00:00+00")', '{"(1,a,)","(,,)"}',
	  '192.168.0.1/24', '(1.5,2)', 12.5, '[1,10)', B'101', 'a fat cat', 42, '<a>x</a>', '1 2 3')`,
	// Edges.
	`(-32768, -2147483648, -9223372036854775808, 'NaN', 'Infinity', 'NaN', -0.00, false,
	  E'quote" back\\ nl\n tab\t ctl\x01 uni é 😀', '', 'a', ' ', 'N', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '  [1 ,  {"x":"y"} ]  ', '{"a":{"b":{"c":[]}}, "a":2}',
	  'infinity', '24:00:00', '00:00:00.000001-14:59', '-infinity', 'infinity', '-1 year -2 mons +3 days -04:05:06.789', '',
	  '{"",NULL,"NULL","a,b","{}","\"q\"","back\\slash"," sp "}', '{}', '[0:1]={5,6}', '{NULL}', '{infinity,NULL}', '{}', '{-0.0,1e-30,Infinity}', '{}',
	  'with "quote"', '{}', 2147483647, '{}', 'null', '(,,)', '{}',
	  '::1', '(0,0)', -1.5, 'empty', B'', '', 0, '', '')`,
	`(32767, 2147483647, 9223372036854775807, '-Infinity', '-Infinity', 'Infinity', 99999999.99, NULL,
	  NULL, NULL, NULL, NULL, NULL, NULL, 'null', '1.0e10', '0044-03-15 BC', '23:59:59.999999', '23:59:59.999999+15:59',
	  '0044-03-15 10:00:01.5 BC', '1800-05-01 10:00:00+03:30', '178000000 years', '\xdeadbeef00',
	  NULL, NULL, '{{{1}},{{2}}}', NULL, NULL, NULL, NULL, NULL,
	  NULL, '{NULL,ok}', NULL, '{NULL}', '"str"', NULL, '{NULL}',
	  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
	`(0, 0, 0, 1e-38, 1e308, 123456789012345678901234567890.123456789, 0.5, 'f', 'z', 'z', 'zzzzz', 'z', 'z',
	  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{}', '[]', '10000-01-01', '00:00', '00:00+00', '294276-12-31 23:59:59.999999',
	  '2024-02-29 23:59:59.999999-08', '-178000000 years', '\x00', '{"\\u00e9"}', '{-1}', '{{NULL,NULL}}', '{f}', '{-infinity}', '{null,"[]"}', '{0}', '{(0,0),(0,0)}',
	  'sad', '{"with \"quote\""}', 1, '{"a b"}', '[]', '(0,"",)', '{"(2,\"\",)"}', '0.0.0.0', '(-1,-1)', 0, '(,)', B'1', 'x:1', 4294967295, '<x/>', '0')`,
}

func TestValuesMatchToJSONB(t *testing.T) {
	pg := pgtest.Shared(t)
	// The database's own settings must not leak into the decoding.
	for _, set := range []string{"timezone = 'Asia/Kolkata'", "datestyle = 'SQL, DMY'",
		"intervalstyle = 'sql_standard'", "extra_float_digits = 0", "bytea_output = 'escape'"} {
		pg.Exec("ALTER DATABASE " + pg.Database() + " SET " + set)
	}
	pg.Exec(oracleSchema)
	pg.Exec("SELECT pg_create_logical_replication_slot('oracle', 'pgoutput')")
	cols := "i2, i4, i8, f4, f8, n, n2, b, t, vc, c, ch, nm, u, j, jb, d, tm, ttz, ts, tstz, iv, by, ta, ia, ia2, ba, tsa, ja, na, boxes, " +
		"e, ea, dm, dt, dj, comp, compa, inet, pt, money, r, bits, tsv, o, x, iv2"
	for _, row := range oracleRows {
		pg.Exec("INSERT INTO oracle (" + cols + ") VALUES " + row)
	}
	pg.Exec("INSERT INTO oracle DEFAULT VALUES") // all NULL
	// json as written: duplicate keys, whitespace, nesting, escapes.
	for _, j := range jsonCases {
		pg.Exec("INSERT INTO oracle (j, dj) VALUES ('" + strings.ReplaceAll(j, "'", "''") + "', '" + strings.ReplaceAll(j, "'", "''") + "')")
	}

	conn := connect(t, pg.URL())
	txs := slotTransactions(t, conn, "oracle", "p")
	ctx := context.Background()
	rows, err := conn.Query(ctx, "SELECT id, to_jsonb(o_row)::text FROM oracle o_row ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{}
	for rows.Next() {
		var id int
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		want[id] = s
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(txs) != len(oracleRows)+1+len(jsonCases) {
		t.Fatalf("%d transactions, want %d", len(txs), len(oracleRows)+1+len(jsonCases))
	}
	for _, tx := range txs {
		c := tx.Changes[0]
		got := recordJSON(t, c)
		var id int
		json.Unmarshal(c.Record[0], &id)
		if !pgtest.SameJSON(got, []byte(want[id])) {
			t.Errorf("row %d:\n got %s\nwant %s", id, got, want[id])
			diffColumns(t, got, []byte(want[id]))
		}
		// Byte for byte, as to_jsonb prints each value.
		var g, w map[string]json.RawMessage
		json.Unmarshal(got, &g)
		json.Unmarshal([]byte(want[id]), &w)
		for k, wv := range w {
			if string(g[k]) != string(wv) {
				t.Errorf("row %d column %s: got %s, want %s", id, k, g[k], wv)
			}
		}
	}
	// columns carry the typnames.
	c := txs[0].Changes[0]
	var types []string
	for _, col := range c.Columns {
		types = append(types, col.Name+":"+col.Type)
	}
	wantTypes := "id:int4 i2:int2 i4:int4 i8:int8 f4:float4 f8:float8 n:numeric n2:numeric b:bool t:text vc:varchar c:bpchar ch:char nm:name " +
		"u:uuid j:json jb:jsonb d:date tm:time ttz:timetz ts:timestamp tstz:timestamptz iv:interval by:bytea ta:_text ia:_int4 ia2:_int4 " +
		"ba:_bool tsa:_timestamptz ja:_jsonb na:_numeric boxes:_box e:mood ea:_mood dm:posint dt:tags dj:js comp:pair compa:_pair " +
		"inet:inet pt:point money:money r:int4range bits:varbit tsv:tsvector o:oid x:xml iv2:int2vector"
	if got := strings.Join(types, " "); got != wantTypes {
		t.Errorf("columns\n got %s\nwant %s", got, wantTypes)
	}
}

// recordJSON is the record object AppendData gives for c.
func recordJSON(t testing.TB, c *Change) []byte {
	t.Helper()
	var data struct {
		Record    json.RawMessage `json:"record"`
		OldRecord json.RawMessage `json:"old_record"`
	}
	b := c.AppendData(nil, nil)
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatalf("AppendData gave invalid JSON: %v\n%s", err, b)
	}
	if c.Kind == Delete {
		return data.OldRecord
	}
	return data.Record
}

func diffColumns(t testing.TB, got, want []byte) {
	var g, w map[string]json.RawMessage
	json.Unmarshal(got, &g)
	json.Unmarshal(want, &w)
	for k, wv := range w {
		if !pgtest.SameJSON(g[k], wv) {
			t.Errorf("  %s: got %s want %s", k, g[k], wv)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("  %s: extra", k)
		}
	}
}
