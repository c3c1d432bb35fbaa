package wal

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
)

var todoColumns = []Column{
	{Name: "id", Type: "int8", Key: true, class: classInt},
	{Name: "title", Type: "text", class: classText},
	{Name: "done", Type: "bool", class: classBool},
	{Name: "due", Type: "timestamptz", class: classTimestampTZ},
	{Name: "score", Type: "numeric", class: classNumeric},
	{Name: "mood", Type: "mood", class: classEnum},
}

// row builds a row of todoColumns from JSON texts; a missing column is nil
// (not sent).
func row(vals map[string]string) []json.RawMessage {
	r := make([]json.RawMessage, len(todoColumns))
	for i, c := range todoColumns {
		if v, ok := vals[c.Name]; ok {
			r[i] = json.RawMessage(v)
		}
	}
	return r
}

func todoChange(kind Kind, vals map[string]string) *Change {
	c := &Change{Kind: kind, Schema: "public", Table: "todos", Columns: todoColumns}
	if kind == Delete {
		c.OldRecord = row(vals)
	} else {
		c.Record = row(vals)
	}
	return c
}

func mustFilter(t testing.TB, s string) []Filter {
	t.Helper()
	f, err := ParseFilter(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func ids(subs []*Subscription) []uint64 {
	var out []uint64
	for _, s := range subs {
		out = append(out, s.ID)
	}
	return out
}

func TestMatcherFilters(t *testing.T) {
	base := map[string]string{"id": "5", "title": `"Buy milk"`, "done": "false", "due": `"2024-05-01T10:00:00+00:00"`,
		"score": "1.50", "mood": `"ok"`}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		filter string
		vals   map[string]string
		want   bool
	}{
		{"", base, true},
		{"id=eq.5", base, true},
		{"id=eq.05", base, true}, // cast, then compared
		{"id=eq.6", base, false},
		{"id=neq.6", base, true},
		{"id=not.eq.5", base, false},
		{"id=lt.10", base, true}, // numeric, not text ("5" > "10")
		{"id=gt.10", base, false},
		{"id=lte.5,id=gte.5", base, true},
		{"id=gt.1,title=eq.nope", base, false},
		{"id=in.(1,5,9)", base, true},
		{"id=in.(1,9)", base, false},
		{"id=not.in.(1,9)", base, true},
		{"id=in.(1,NULL)", base, false},     // NULL in the list: null, not false...
		{"id=not.in.(1,NULL)", base, false}, // ...so its negation is null too
		{"id=in.(5,NULL)", base, true},
		{"id=eq.5", with("id", "null"), false},
		{"id=not.eq.5", with("id", "null"), false}, // NOT NULL is NULL
		{"id=is.null", with("id", "null"), true},
		{"id=not.is.null", with("id", "null"), false},
		{"id=not.is.null", base, true},
		{"done=is.false", base, true},
		{"done=is.true", base, false},
		{"done=not.is.true", base, true},
		{"done=is.unknown", with("done", "null"), true},
		{"done=not.is.true", with("done", "null"), true},
		{"done=eq.f", base, true},
		{"done=eq.no", base, true},
		{"id=isdistinct.5", base, false},
		{"id=isdistinct.6", base, true},
		{"id=isdistinct.5", with("id", "null"), true},
		{"id=not.isdistinct.5", with("id", "null"), false},
		{"id=not.isdistinct.5", base, true},
		{"title=like.Buy%", base, true},
		{"title=like.buy%", base, false},
		{"title=ilike.buy%", base, true},
		{"title=like.B_y milk", base, true},
		{"title=like.%milk", base, true},
		{"title=like.%mil", base, false},
		{`title=like.Buy\%`, base, false},
		{"title=not.like.%milk%", base, false},
		{"title=match.^Bu.*k$", base, true},
		{"title=match.^bu", base, false},
		{"title=imatch.^bu", base, true},
		{"title=lt.C", base, true}, // text compares bytes
		{"title=gt.Buy", base, true},
		{`title=eq."Buy milk"`, base, true},
		{"title=eq.Buy milk", base, true},
		{"due=gt.2024-05-01 09:00:00+00", base, true}, // temporal
		{"due=lt.2024-05-01T11:00:00+02:00", base, false},
		{"due=eq.2024-05-01 12:00:00+02", base, true},
		{"due=lt.infinity", base, true},
		{"due=gt.-infinity", base, true},
		{"score=eq.1.5", base, true}, // numeric equality ignores scale
		{"score=gt.1.499999999999999999999", base, true},
		{"score=lt.NaN", base, true},
		{"score=in.(1.500,2)", base, true},
		{"mood=eq.ok", base, true},
		{"mood=in.(sad,ok)", base, true},
		{"mood=neq.ok", base, false},
		{"mood=lt.ok", base, false}, // enums have no ordering here: refused
		{"nope=eq.1", base, false},  // unknown column
		{"id=eq.abc", base, false},  // does not cast
		{"title=eq.x", with("title", ""), false},
		{"title=is.null", with("title", ""), false}, // an unsent value is not NULL
	} {
		m := NewMatcher()
		m.Add(&Subscription{ID: 1, Node: "n1", Schema: "public", Table: "todos", Filters: mustFilter(t, tc.filter)})
		got := len(m.Match(todoChange(Insert, tc.vals), nil)) == 1
		if got != tc.want {
			t.Errorf("%q on %v: matched %v, want %v", tc.filter, tc.vals, got, tc.want)
		}
	}
}

func TestMatcherEventsTablesAndOrder(t *testing.T) {
	m := NewMatcher()
	add := func(id uint64, node, schema, table string, ev Kind, filter string) {
		m.Add(&Subscription{ID: id, Node: node, Schema: schema, Table: table, Event: ev, Filters: mustFilter(t, filter)})
	}
	add(1, "n2", "public", "todos", 0, "")
	add(2, "n1", "public", "todos", Insert, "")
	add(3, "n1", "public", "todos", Update, "id=eq.5")
	add(4, "n3", "public", "todos", Delete, "id=eq.5")
	add(5, "n1", "public", "*", 0, "")
	add(6, "n2", "public", "", Insert, "id=eq.5")
	add(7, "n1", "other", "*", 0, "")
	add(8, "n1", "public", "others", 0, "")
	add(9, "n2", "public", "todos", 0, "id=eq.5")
	add(10, "n1", "public", "todos", 0, "id=in.(4,5,6)")
	add(11, "n3", "*", "*", Update, "")
	add(12, "n3", "*", "todos", Update, "")
	add(13, "n3", "*", "others", Update, "")

	check := func(c *Change, want ...uint64) {
		t.Helper()
		got := ids(m.Match(c, nil))
		if !slices.Equal(got, want) {
			t.Errorf("%v %v: got %v, want %v", c.Kind, c.Record, got, want)
		}
	}
	five := map[string]string{"id": "5"}
	// Sorted by node, then ID.
	check(todoChange(Insert, five), 2, 5, 10, 1, 6, 9)
	check(todoChange(Update, five), 3, 5, 10, 1, 9, 11, 12)
	check(todoChange(Delete, five), 5, 10, 1, 9, 4) // old values
	check(todoChange(Insert, map[string]string{"id": "7"}), 2, 5, 1)
	check(&Change{Kind: Truncate, Schema: "public", Table: "todos", Columns: todoColumns})

	m.Remove(5)
	m.Remove(9)
	m.Remove(42) // unknown: no-op
	check(todoChange(Insert, five), 2, 10, 1, 6)
	// Replacing an ID replaces the subscription.
	add(2, "n1", "public", "todos", Insert, "id=eq.6")
	check(todoChange(Insert, five), 10, 1, 6)
	m.Remove(11)
	m.Remove(12)
	m.Remove(13)
	if m.Len() != 8 {
		t.Errorf("Len = %d", m.Len())
	}

	// A table whose columns change is compiled again: "id" becomes text.
	cols := slices.Clone(todoColumns)
	cols[0].class, cols[0].Type = classText, "text"
	c := &Change{Kind: Insert, Schema: "public", Table: "todos", Columns: cols, Record: row(map[string]string{"id": `"5"`})}
	check(c, 10, 1, 6)
	c.Record = row(map[string]string{"id": `"05"`}) // text now: 05 is not 5
	check(c, 1)
}

func TestMatcherManyRemovals(t *testing.T) {
	m := NewMatcher()
	for i := range uint64(1000) {
		m.Add(&Subscription{ID: i, Node: "n", Schema: "public", Table: "todos", Filters: mustFilter(t, fmt.Sprintf("id=eq.%d", i%10))})
	}
	m.Match(todoChange(Insert, map[string]string{"id": "1"}), nil) // builds the index
	for i := range uint64(1000) {
		if i%10 != 1 || i >= 500 {
			m.Remove(i)
		}
	}
	got := m.Match(todoChange(Insert, map[string]string{"id": "1"}), nil)
	if len(got) != 50 {
		t.Fatalf("%d matches, want 50", len(got))
	}
}

func heapBytes() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// Subscriptions that go give their memory back at once: not at the
// table's next change (the index kept dead entries until then), and not
// never (Go's maps keep what they grew to).
func TestMatcherGivesMemoryBack(t *testing.T) {
	m := NewMatcher()
	change := todoChange(Insert, map[string]string{"id": "1", "title": `"x"`})
	m.Add(&Subscription{ID: 1, Node: "n", Schema: "public", Table: "todos"})
	m.Match(change, nil)
	base := heapBytes()
	const n = 20_000
	for i := range uint64(n) {
		f := fmt.Sprintf("title=like.%%%s%d%%", strings.Repeat("a", 200), i)
		if i%2 == 0 {
			f = fmt.Sprintf("id=eq.%d", i)
		}
		m.Add(&Subscription{ID: 100 + i, Node: "n", Schema: "public", Table: "todos", Filters: mustFilter(t, f)})
	}
	m.Add(&Subscription{ID: 2, Node: "n", Schema: "*", Table: "*"})
	m.Match(change, nil) // compiles them all
	grown := heapBytes() - base
	for i := range uint64(n) {
		m.Remove(100 + i)
	}
	m.Remove(2)
	left := heapBytes() - base
	t.Logf("%d subscriptions: heap +%d KiB; after they went: %+d KiB", n, grown>>10, left>>10)
	if grown < 10<<20 {
		t.Fatalf("the subscriptions took only %d KiB: the test proves nothing", grown>>10)
	}
	if left > grown/20 {
		t.Errorf("%d KiB of %d KiB still held after every subscription went", left>>10, grown>>10)
	}
	if got := ids(m.Match(change, nil)); !slices.Equal(got, []uint64{1}) {
		t.Errorf("matches %v, want [1]", got)
	}
}
