package wal

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/meshcast/meshcast/wal/pgtest"
)

// diffColumns are the columns of the differential test's table, with the
// values rows and filters draw from (SQL literals; NULL for null).
var diffDomains = []struct {
	name, typ string
	values    []string
}{
	{"i", "int4", []string{"-3", "-1", "0", "1", "2", "3", "10", "NULL"}},
	{"b", "int8", []string{"-1099511627776", "0", "5", "1099511627776", "9223372036854775807", "NULL"}},
	{"f", "float8", []string{"-1.5", "0", "-0", "2.5", "1e-300", "NaN", "Infinity", "-Infinity", "NULL"}},
	{"f4", "float4", []string{"1.1", "0.3", "-2", "NaN", "NULL"}},
	{"n", "numeric", []string{"1.5", "1.50", "-2", "0", "0.00001", "100", "1e3", "NaN", "Infinity", "-Infinity", "NULL"}},
	{"t", "text", []string{"", "a", "A", "ab", "b", "abc", "Buy milk", "a%b", "a_b", `x\y`, "é", "Z", "a\nb", "NULL"}},
	{"c", "char(4)", []string{"a", "ab", "ab  ", " a", "NULL"}},
	{"bo", "bool", []string{"true", "false", "NULL"}},
	{"ts", "timestamptz", []string{"2024-05-01 10:00:00+00", "2024-05-01 12:00:00+02", "2024-05-01 10:00:00.5+00", "1999-12-31 23:59:59-05",
		"infinity", "-infinity", "0044-03-15 10:00:00+00 BC", "NULL"}},
	{"tsn", "timestamp", []string{"2024-05-01 10:00:00", "2024-05-01 10:00:00.000001", "2000-01-01 00:00:00", "NULL"}},
	{"dt", "date", []string{"2024-05-01", "2024-02-29", "1970-01-01", "infinity", "0001-01-01 BC", "NULL"}},
	{"tm", "time", []string{"00:00:00", "10:00:00", "10:00:00.5", "23:59:59.999999", "24:00:00", "NULL"}},
	{"tz", "timetz", []string{"10:00:00+00", "12:00:00+02", "10:00:00+02", "NULL"}},
	{"u", "uuid", []string{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff", "NULL"}},
	{"iv", "interval", []string{"1 day", "24 hours", "1 mon", "30 days", "-1 hours", "00:00:00", "1 year 2 mons 3 days 04:05:06.5", "NULL"}},
	{"e", "mood", []string{"sad", "ok", "happy", "NULL"}},
	{"by", "bytea", []string{`\x00`, `\x0102`, `\x`, `\xff`, "NULL"}},
}

var (
	diffPatterns = []string{"a%", "%b", "_", "%", "a_b", `a\_b`, `a\%b`, "A%", "%é%", "", "ab__", "%b%c", "__"}
	diffRegexps  = []string{"^a", "b$", "a.b", "^[a-c]+$", "^$", "m", "^.$", "A|Z", `x\\y`, "^a.*c$"}
)

func sqlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// grammarQuote quotes a value for the filter grammar.
func grammarQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// arrayQuote quotes an element of a Postgres array literal.
func arrayQuote(s string) string {
	if s == "NULL" {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

type diffFilter struct {
	grammar string // col=op.value
	sql     string // the same predicate in SQL
}

func randomFilter(r *rand.Rand) diffFilter {
	for {
		d := diffDomains[r.IntN(len(diffDomains))]
		nonNull := d.values[:len(d.values)-1]
		v := nonNull[r.IntN(len(nonNull))]
		col := d.name
		lit := sqlQuote(v) + "::" + d.typ
		textual := d.name == "t" || d.name == "c"
		var op, value, sql string
		switch k := r.IntN(13); {
		case k < 6:
			if d.name == "e" && k >= 2 {
				continue // enums: equality only
			}
			op = []string{"eq", "neq", "lt", "lte", "gt", "gte"}[k]
			sqlOp := []string{"=", "<>", "<", "<=", ">", ">="}[k]
			value, sql = grammarQuote(v), fmt.Sprintf("%s %s %s", col, sqlOp, lit)
		case k == 6:
			n := 1 + r.IntN(4)
			var elems []string
			for range n {
				if r.IntN(8) == 0 {
					elems = append(elems, "NULL")
				} else {
					elems = append(elems, nonNull[r.IntN(len(nonNull))])
				}
			}
			var q []string
			for _, e := range elems {
				q = append(q, arrayQuote(e))
			}
			arr := "{" + strings.Join(q, ",") + "}"
			op, value = "in", "("+strings.Join(q, ",")+")"
			sql = fmt.Sprintf("%s = ANY(%s::%s[])", col, sqlQuote(arr), d.typ)
		case k == 7 || k == 8:
			if !textual {
				continue
			}
			p := diffPatterns[r.IntN(len(diffPatterns))]
			op = []string{"like", "ilike"}[k-7]
			value, sql = grammarQuote(p), fmt.Sprintf("%s %s %s", col, strings.ToUpper(op), sqlQuote(p))
		case k == 9 || k == 10:
			if !textual {
				continue
			}
			p := diffRegexps[r.IntN(len(diffRegexps))]
			op = []string{"match", "imatch"}[k-9]
			value, sql = grammarQuote(p), fmt.Sprintf("%s %s %s", col, []string{"~", "~*"}[k-9], sqlQuote(p))
		case k == 11:
			kw := "null"
			if d.name == "bo" {
				kw = []string{"null", "true", "false", "unknown"}[r.IntN(4)]
			}
			op, value, sql = "is", kw, fmt.Sprintf("%s IS %s", col, strings.ToUpper(kw))
		default:
			op, value, sql = "isdistinct", grammarQuote(v), fmt.Sprintf("%s IS DISTINCT FROM %s", col, lit)
		}
		if r.IntN(3) == 0 {
			return diffFilter{col + "=not." + op + "." + value, "NOT (" + sql + ")"}
		}
		return diffFilter{col + "=" + op + "." + value, sql}
	}
}

// TestMatcherAgreesWithPostgres is the differential test: random rows and
// random filters of every operator, negated or not, ANDed; the rows each
// subscription matches, on insert (new values) and on delete (old values),
// are the rows the same predicate selects in SQL.
func TestMatcherAgreesWithPostgres(t *testing.T) {
	pg := pgtest.Shared(t)
	var cols []string
	for _, d := range diffDomains {
		cols = append(cols, d.name+" "+d.typ)
	}
	pg.Exec(`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE TABLE d (id int PRIMARY KEY, ` + strings.Join(cols, ", ") + `);
		ALTER TABLE d REPLICA IDENTITY FULL;
		CREATE PUBLICATION p FOR TABLE d;`)
	pg.Exec("SELECT pg_create_logical_replication_slot('diff', 'pgoutput')")

	r := rand.New(rand.NewPCG(1, 2))
	const nRows, nSubs = 150, 500
	var sb strings.Builder
	for id := range nRows {
		vals := []string{fmt.Sprint(id)}
		for _, d := range diffDomains {
			v := d.values[r.IntN(len(d.values))]
			if v != "NULL" {
				v = sqlQuote(v)
			}
			vals = append(vals, v)
		}
		fmt.Fprintf(&sb, "INSERT INTO d VALUES (%s);\n", strings.Join(vals, ", "))
	}
	pg.Exec(sb.String())
	// The SQL side evaluates on a copy of the rows.
	pg.Exec("CREATE TABLE d2 AS SELECT * FROM d")
	pg.Exec("DELETE FROM d")

	conn := connect(t, pg.URL())
	txs := slotTransactions(t, conn, "diff", "p")
	var changes []*Change
	for _, tx := range txs {
		changes = append(changes, tx.Changes...)
	}
	if len(changes) != 2*nRows {
		t.Fatalf("%d changes, want %d", len(changes), 2*nRows)
	}

	m := NewMatcher()
	subs := make([]diffFilter, nSubs)
	ctx := context.Background()
	for i := range subs {
		var gs, ss []string
		for range 1 + r.IntN(3) {
			f := randomFilter(r)
			gs, ss = append(gs, f.grammar), append(ss, f.sql)
		}
		subs[i] = diffFilter{strings.Join(gs, ","), strings.Join(ss, " AND ")}
		filters, err := ParseFilter(subs[i].grammar)
		if err != nil {
			t.Fatalf("%s: %v", subs[i].grammar, err)
		}
		m.Add(&Subscription{ID: uint64(i), Node: "n", Schema: "public", Table: "d", Filters: filters})
	}
	got := make([][2][]int, nSubs) // per subscription: ids matched on insert, on delete
	for _, c := range changes {
		var id int
		row := c.Record
		k := 0
		if c.Kind == Delete {
			row, k = c.OldRecord, 1
		}
		fmt.Sscan(string(row[0]), &id)
		for _, s := range m.Match(c, nil) {
			got[s.ID][k] = append(got[s.ID][k], id)
		}
	}
	fails := 0
	for i, s := range subs {
		rows, err := conn.Query(ctx, "SELECT id FROM d2 WHERE "+s.sql+" ORDER BY id")
		if err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
		want, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
		for k, kind := range []string{"insert", "delete"} {
			g := got[i][k]
			slices.Sort(g)
			if !slices.Equal(g, want) && fails < 20 {
				fails++
				t.Errorf("%s (%s) on %s:\n got %v\nwant %v", s.grammar, s.sql, kind, g, want)
			}
		}
	}
	t.Logf("%d subscriptions, %d changes", nSubs, len(changes))
}
