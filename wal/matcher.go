package wal

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/wal/internal/shrink"
)

// Subscription is one postgres_changes binding of one channel, as the node
// that holds the channel registers it with the reader's owner.
type Subscription struct {
	ID     uint64 // cluster-unique; the id the client sees
	Node   string // the node that holds the channel
	Schema string // "*": every schema
	Table  string // "" or "*": every table of Schema
	Event  Kind   // 0: every kind ("*")
	// Filters must all hold. On a Delete they test the old values.
	Filters []Filter
	// Columns limits what the subscriber sees to these columns and the
	// primary key (its select, and what its role may read); nil is all.
	Columns []string
	// Role and Claims are the JWT's role and claims (JSON), for RLS.
	Role, Claims string

	// from, on the owner, is the history's head when a new subscription
	// was added (owner.AddSubs.Fresh), raised to the end of the
	// transactions read by then: a change at or before it that only such
	// subscriptions match is not routed (freshOnly). Set before Add,
	// never after.
	from Pos
}

// Matcher finds the subscriptions a change reaches. Equality filters (eq,
// and in) are hashed per table and column, so a change costs the
// subscriptions it matches plus those of its table with no equality filter,
// not every subscription.
//
// A Matcher learns a table's column types from the first change of it and
// compiles the table's subscriptions then (again when the columns change):
// a subscription whose filters do not compile against its table (an
// unknown column, a value that does not cast, an operator the type lacks)
// matches nothing. The Validator refuses such bindings at join.
//
// A Matcher is safe for concurrent use; Match holds its lock.
type Matcher struct {
	mu      sync.Mutex
	subs    shrink.Map[uint64, *Subscription]
	byTable map[tableName]*shrink.Map[uint64, *Subscription]
	wild    shrink.Map[uint64, *Subscription] // Schema "*" or Table "" or "*"
	index   map[tableName]*tableIndex

	// regexBytes, if positive, bounds the bytes of a value a match or
	// imatch filter scans: a longer value does not match it (negated or
	// not), counted in regexSkipped. RE2 is linear in the value, but at up
	// to some 30 ns per program instruction per byte a 100 KB value costs
	// a 64-instruction pattern some 0.2 s, on the owner's one routing
	// goroutine, for every change.
	regexBytes   int
	regexSkipped *metrics.Counter

	// Scratch of Match.
	datums  []datum
	parsed  []int8   // 0 not yet, 1 ok, -1 failed
	texts   [][]byte // a column's text, once a pattern needed it
	scratch []byte
}

type tableName struct{ schema, table string }

// tableIndex is a table's subscriptions compiled against its columns.
// Removing one marks it dead; once the dead outnumber the living, the
// index is laid out again from the living, so that what subscriptions
// leave behind is freed as they go, not at the table's next change.
type tableIndex struct {
	columns []Column
	eq      []map[string]*[3][]*compiled // by column, then value key, then kind
	scan    [3][]*compiled               // subscriptions without an equality filter
	entries shrink.Map[uint64, *compiled]
	dead    int // removed entries still in eq or scan
}

type compiled struct {
	sub     *Subscription
	filters []cfilter
	indexed int // the filter the eq index checked, -1 if none
	dead    bool
}

// NewMatcher returns an empty Matcher whose match and imatch filters scan
// values of any length.
func NewMatcher() *Matcher { return NewMatcherBounded(0, nil) }

// NewMatcherBounded returns an empty Matcher whose match and imatch
// filters scan at most regexBytes bytes of a value (if zero or negative,
// any): a longer value does not match such a filter, negated or not (the
// binding does not see the change), and skipped, if set, counts it.
func NewMatcherBounded(regexBytes int, skipped *metrics.Counter) *Matcher {
	return &Matcher{
		byTable:      map[tableName]*shrink.Map[uint64, *Subscription]{},
		index:        map[tableName]*tableIndex{},
		regexBytes:   regexBytes,
		regexSkipped: skipped,
	}
}

// Add adds s, replacing a subscription with its ID. The Matcher keeps s:
// do not change it afterwards.
func (m *Matcher) Add(s *Subscription) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(s.ID)
	m.subs.Put(s.ID, s)
	if wildcard(s) {
		m.wild.Put(s.ID, s)
		for name, idx := range m.index {
			if covers(s, name) {
				idx.add(s)
			}
		}
		return
	}
	name := tableName{s.Schema, s.Table}
	if m.byTable[name] == nil {
		m.byTable[name] = &shrink.Map[uint64, *Subscription]{}
	}
	m.byTable[name].Put(s.ID, s)
	if idx := m.index[name]; idx != nil {
		idx.add(s)
	}
}

func wildcard(s *Subscription) bool { return s.Schema == "*" || s.Table == "" || s.Table == "*" }

// covers says whether s is for table name.
func covers(s *Subscription, name tableName) bool {
	return (s.Schema == "*" || s.Schema == name.schema) && (s.Table == "" || s.Table == "*" || s.Table == name.table)
}

// Remove removes the subscription with id, if there is one.
func (m *Matcher) Remove(id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(id)
}

func (m *Matcher) remove(id uint64) {
	s := m.subs.M[id]
	if s == nil {
		return
	}
	m.subs.Delete(id)
	if wildcard(s) {
		m.wild.Delete(id)
		for name, idx := range m.index {
			if covers(s, name) {
				m.removeFrom(name, idx, id)
			}
		}
		return
	}
	name := tableName{s.Schema, s.Table}
	if t := m.byTable[name]; t != nil {
		if t.Delete(id); len(t.M) == 0 {
			delete(m.byTable, name)
		}
	}
	if idx := m.index[name]; idx != nil {
		m.removeFrom(name, idx, id)
	}
}

// removeFrom removes id from a table's index, and the index once empty.
func (m *Matcher) removeFrom(name tableName, idx *tableIndex, id uint64) {
	idx.remove(id)
	if len(idx.entries.M) == 0 {
		delete(m.index, name)
	}
}

// Len is the number of subscriptions.
func (m *Matcher) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.subs.M)
}

// Match appends to dst the subscriptions c reaches, sorted by Node and then
// ID (so grouped by node), and returns the extended slice. Truncates reach
// no one, as in Supabase.
func (m *Matcher) Match(c *Change, dst []*Subscription) []*Subscription {
	var row []json.RawMessage
	switch c.Kind {
	case Insert, Update:
		row = c.Record
	case Delete:
		row = c.OldRecord
	default:
		return dst
	}
	if len(row) != len(c.Columns) {
		return dst
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	name := tableName{c.Schema, c.Table}
	idx := m.index[name]
	if idx == nil || !sameColumns(idx.columns, c.Columns) {
		if m.byTable[name] == nil && len(m.wild.M) == 0 {
			delete(m.index, name)
			return dst
		}
		idx = m.build(name, c.Columns)
	}
	kind := int(c.Kind) - 1
	n := len(c.Columns)
	m.datums = slices.Grow(m.datums[:0], n)[:n]
	m.parsed = slices.Grow(m.parsed[:0], n)[:n]
	clear(m.parsed)
	m.texts = slices.Grow(m.texts[:0], n)[:n]
	defer clear(m.texts) // may be copies of large values

	start := len(dst)
	sources := 0
	for col, byKey := range idx.eq {
		if len(byKey) == 0 || row[col] == nil {
			continue
		}
		key, ok := valueKey(c.Columns[col].class, row[col], &m.scratch)
		if !ok {
			continue
		}
		b := byKey[string(key)]
		if b == nil || len(b[kind]) == 0 {
			continue
		}
		sources++
		for _, e := range b[kind] {
			if !e.dead && m.matches(e, row, c.Columns) {
				dst = append(dst, e.sub)
			}
		}
	}
	if len(idx.scan[kind]) > 0 {
		sources++
		for _, e := range idx.scan[kind] {
			if !e.dead && m.matches(e, row, c.Columns) {
				dst = append(dst, e.sub)
			}
		}
	}
	hits := dst[start:]
	if sources > 1 || !slices.IsSortedFunc(hits, bySubscription) {
		slices.SortFunc(hits, bySubscription)
	}
	return dst
}

func bySubscription(a, b *Subscription) int {
	if c := cmp.Compare(a.Node, b.Node); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// matches evaluates e's filters but the one its index bucket checked,
// parsing each column's value once per change.
func (m *Matcher) matches(e *compiled, row []json.RawMessage, cols []Column) bool {
	for i := range e.filters {
		if i == e.indexed {
			continue
		}
		f := &e.filters[i]
		if f.op == OpLike || f.op == OpILike || f.op == OpMatch || f.op == OpIMatch {
			v := row[f.col]
			if v == nil || string(v) == "null" {
				return false // not true, negated or not
			}
			if m.texts[f.col] == nil {
				m.texts[f.col], _ = jsonText(v, nil)
				if m.texts[f.col] == nil {
					m.texts[f.col] = []byte{}
				}
			}
			if f.re != nil && m.regexBytes > 0 && len(m.texts[f.col]) > m.regexBytes {
				if m.regexSkipped != nil {
					m.regexSkipped.Inc()
				}
				return false
			}
			if f.matchText(m.texts[f.col]) == f.negate {
				return false
			}
			continue
		}
		var ok bool
		if f.needsDatum() && row[f.col] != nil {
			switch m.parsed[f.col] {
			case 0:
				var d datum
				d, ok = valueDatum(cols[f.col].class, row[f.col])
				m.datums[f.col] = d
				m.parsed[f.col] = 1
				if !ok {
					m.parsed[f.col] = -1
				}
			case 1:
				ok = true
			}
		}
		if f.eval(row[f.col], &m.datums[f.col], ok) != resTrue {
			return false
		}
	}
	return true
}

func sameColumns(a, b []Column) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].class != b[i].class {
			return false
		}
	}
	return true
}

// build compiles the subscriptions of a table, and the wildcards that cover
// it, against columns.
func (m *Matcher) build(name tableName, columns []Column) *tableIndex {
	idx := &tableIndex{columns: columns, eq: make([]map[string]*[3][]*compiled, len(columns))}
	if t := m.byTable[name]; t != nil {
		for _, s := range t.M {
			idx.add(s)
		}
	}
	for _, s := range m.wild.M {
		if covers(s, name) {
			idx.add(s)
		}
	}
	m.index[name] = idx
	return idx
}

func (idx *tableIndex) add(s *Subscription) {
	e := &compiled{sub: s, indexed: -1}
	for _, f := range s.Filters {
		cf, err := compileFilter(f, idx.columns)
		if err != nil {
			return // matches nothing
		}
		e.filters = append(e.filters, cf)
	}
	idx.entries.Put(s.ID, e)
	for i, f := range e.filters {
		if len(f.keys) > 0 && !f.negate {
			e.indexed = i
			break
		}
	}
	idx.place(e)
}

// place files e in the equality index or the scan lists.
func (idx *tableIndex) place(e *compiled) {
	s := e.sub
	for kind := range 3 {
		if s.Event != 0 && int(s.Event)-1 != kind {
			continue
		}
		if e.indexed < 0 {
			idx.scan[kind] = append(idx.scan[kind], e)
			continue
		}
		f := &e.filters[e.indexed]
		if idx.eq[f.col] == nil {
			idx.eq[f.col] = map[string]*[3][]*compiled{}
		}
		for _, k := range uniq(f.keys) {
			b := idx.eq[f.col][k]
			if b == nil {
				b = new([3][]*compiled)
				idx.eq[f.col][k] = b
			}
			b[kind] = append(b[kind], e)
		}
	}
}

// remove marks id's entry dead, and lays the index out again once the
// dead outnumber the living (so that removals cost O(1) amortized).
func (idx *tableIndex) remove(id uint64) {
	e := idx.entries.M[id]
	if e == nil {
		return
	}
	e.dead = true
	idx.entries.Delete(id)
	if idx.dead++; idx.dead > len(idx.entries.M) {
		idx.compact()
	}
}

// compact lays the index out again from its living entries, already
// compiled, in fresh maps and slices.
func (idx *tableIndex) compact() {
	clear(idx.eq)
	idx.scan = [3][]*compiled{}
	idx.dead = 0
	live := slices.SortedFunc(maps.Values(idx.entries.M), func(a, b *compiled) int { return cmp.Compare(a.sub.ID, b.sub.ID) })
	for _, e := range live {
		idx.place(e)
	}
}

func uniq(keys []string) []string {
	if len(keys) < 2 {
		return keys
	}
	out := slices.Clone(keys)
	slices.Sort(out)
	return slices.Compact(out)
}
