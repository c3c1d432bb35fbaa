// Package filtertest generates random rows and random postgres_changes
// filters together with the same predicates in SQL, for differential tests
// that hold meshcast's matching against Postgres's WHERE (the wal package's
// matcher, and the edge end to end). It imports nothing of meshcast.
package filtertest

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Domain is a column of the test table and the values rows and filters
// draw from: SQL literals, the last one "NULL".
type Domain struct {
	Name, Type string
	Values     []string
}

// Domains are the columns of the test table: every class of type the
// matcher compares differently, with the values where comparisons go wrong
// (NaN, infinities, -0, trailing blanks, BC dates, 24:00, month-long
// intervals, empty bytea, NULL). The enum type mood ('sad', 'ok', 'happy')
// must exist.
var Domains = []Domain{
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

// Schema creates the enum and a table name (id int PRIMARY KEY, then a
// column per Domain) with REPLICA IDENTITY FULL, so deletes carry every
// old value.
func Schema(name string) string {
	var cols []string
	for _, d := range Domains {
		cols = append(cols, d.Name+" "+d.Type)
	}
	return `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE TABLE ` + name + ` (id int PRIMARY KEY, ` + strings.Join(cols, ", ") + `);
		ALTER TABLE ` + name + ` REPLICA IDENTITY FULL;`
}

// Inserts is n INSERT statements into table (made by Schema), of random
// rows with keys 0 to n-1.
func Inserts(r *rand.Rand, table string, n int) string {
	var b strings.Builder
	for id := range n {
		fmt.Fprintf(&b, "INSERT INTO %s VALUES %s;\n", table, row(r, id))
	}
	return b.String()
}

// row is the VALUES list of a random row with key id.
func row(r *rand.Rand, id int) string {
	vals := []string{fmt.Sprint(id)}
	for _, d := range Domains {
		v := d.Values[r.IntN(len(d.Values))]
		if v != "NULL" {
			v = SQLQuote(v)
		}
		vals = append(vals, v)
	}
	return "(" + strings.Join(vals, ", ") + ")"
}

var (
	patterns = []string{"a%", "%b", "_", "%", "a_b", `a\_b`, `a\%b`, "A%", "%é%", "", "ab__", "%b%c", "__"}
	regexps  = []string{"^a", "b$", "a.b", "^[a-c]+$", "^$", "m", "^.$", "A|Z", `x\\y`, "^a.*c$"}
)

// SQLQuote quotes s as an SQL string literal.
func SQLQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

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

// Filter is a filter in Supabase's grammar and the same predicate in SQL.
type Filter struct {
	Grammar string // col=op.value, or several joined by commas (AND)
	SQL     string
}

// RandomFilter returns a random filter of one column: any operator the
// column's type has (eq neq lt lte gt gte in like ilike match imatch is
// isdistinct), negated a third of the time.
func RandomFilter(r *rand.Rand) Filter {
	for {
		d := Domains[r.IntN(len(Domains))]
		nonNull := d.Values[:len(d.Values)-1]
		v := nonNull[r.IntN(len(nonNull))]
		col := d.Name
		lit := SQLQuote(v) + "::" + d.Type
		textual := d.Name == "t" || d.Name == "c"
		var op, value, sql string
		switch k := r.IntN(13); {
		case k < 6:
			if d.Name == "e" && k >= 2 {
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
			sql = fmt.Sprintf("%s = ANY(%s::%s[])", col, SQLQuote(arr), d.Type)
		case k == 7 || k == 8:
			if !textual {
				continue
			}
			p := patterns[r.IntN(len(patterns))]
			op = []string{"like", "ilike"}[k-7]
			value, sql = grammarQuote(p), fmt.Sprintf("%s %s %s", col, strings.ToUpper(op), SQLQuote(p))
		case k == 9 || k == 10:
			if !textual {
				continue
			}
			p := regexps[r.IntN(len(regexps))]
			op = []string{"match", "imatch"}[k-9]
			value, sql = grammarQuote(p), fmt.Sprintf("%s %s %s", col, []string{"~", "~*"}[k-9], SQLQuote(p))
		case k == 11:
			kw := "null"
			if d.Name == "bo" {
				kw = []string{"null", "true", "false", "unknown"}[r.IntN(4)]
			}
			op, value, sql = "is", kw, fmt.Sprintf("%s IS %s", col, strings.ToUpper(kw))
		default:
			op, value, sql = "isdistinct", grammarQuote(v), fmt.Sprintf("%s IS DISTINCT FROM %s", col, lit)
		}
		if r.IntN(3) == 0 {
			return Filter{col + "=not." + op + "." + value, "NOT (" + sql + ")"}
		}
		return Filter{col + "=" + op + "." + value, sql}
	}
}

// RandomAnd returns 1 to max random filters ANDed (comma-joined).
func RandomAnd(r *rand.Rand, max int) Filter {
	var gs, ss []string
	for range 1 + r.IntN(max) {
		f := RandomFilter(r)
		gs, ss = append(gs, f.Grammar), append(ss, f.SQL)
	}
	return Filter{strings.Join(gs, ","), strings.Join(ss, " AND ")}
}
