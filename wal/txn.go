package wal

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// relation is what the reader knows of a table from pgoutput's Relation
// message, its column types and its primary key.
type relation struct {
	id            uint32
	schema, table string
	columns       []Column
	types         []*typeInfo
	identity      []bool // replica identity columns
}

func newRelation(m msgRelation, types []*typeInfo, primaryKey []string) *relation {
	r := &relation{id: m.id, schema: m.schema, table: m.name, types: types,
		columns: make([]Column, len(m.columns)), identity: make([]bool, len(m.columns))}
	for i, c := range m.columns {
		r.columns[i] = Column{Name: c.name, Type: types[i].name, Key: slices.Contains(primaryKey, c.name), class: types[i].class}
		r.identity[i] = c.key
	}
	return r
}

// assembler turns pgoutput's messages into transactions. It holds the
// relation cache and the transaction in progress, and does no I/O but
// writing a transaction's spill file: the reader resolves a relation's
// types before it calls addRelation.
type assembler struct {
	relations map[uint32]*relation
	tx        *Transaction
	xid       uint32 // tx's
	seq       uint32 // the next change's Seq: every change counts, kept or not

	// What the reader sets; the zero values keep every change in memory.
	keep     func(*Change) bool // a change it refuses is dropped
	budget   *txBudget          // nil: no bound
	spillDir string             // "": os.TempDir()
}

var errNoBegin = errors.New("pgoutput: change outside a transaction")

func newAssembler() *assembler {
	return &assembler{relations: map[uint32]*relation{}}
}

func (a *assembler) begin(m msgBegin) error {
	if a.tx != nil {
		return errors.New("pgoutput: begin inside a transaction")
	}
	a.tx = &Transaction{CommitTime: m.time.UTC(), hold: &txHold{budget: a.budget, xid: m.xid}}
	a.xid, a.seq = m.xid, 0
	return nil
}

// abort drops the transaction in progress (the stream ended inside it).
func (a *assembler) abort() {
	if a.tx != nil {
		a.tx.Release()
		a.tx = nil
	}
}

func (a *assembler) addRelation(r *relation) { a.relations[r.id] = r }

func (a *assembler) row(m msgRow) error {
	if a.tx == nil {
		return errNoBegin
	}
	r := a.relations[m.relation]
	if r == nil {
		return fmt.Errorf("pgoutput: change of unknown relation %d", m.relation)
	}
	c, err := r.change(m)
	if err != nil {
		return err
	}
	return a.add(c)
}

func (a *assembler) truncate(m msgTruncate) error {
	if a.tx == nil {
		return errNoBegin
	}
	for _, id := range m.relations {
		r := a.relations[id]
		if r == nil {
			return fmt.Errorf("pgoutput: truncate of unknown relation %d", id)
		}
		if err := a.add(&Change{Kind: Truncate, Schema: r.schema, Table: r.table, Columns: r.columns}); err != nil {
			return err
		}
	}
	return nil
}

// message notes a logical decoding message: a transactional one of
// meshcast's event trigger marks its transaction as a catalog change.
// Others (and one outside a transaction) are not the reader's business.
func (a *assembler) message(m msgMessage) {
	if a.tx != nil && m.transactional && m.prefix == catalogPrefix {
		a.tx.catalog = true
	}
}

// add takes the next change of the transaction: a row change keep
// refuses is dropped; the others (any other kind too: a truncate, a marker
// in the stream) are held in memory while the budget allows and in the
// spill file from then on, in order.
func (a *assembler) add(c *Change) error {
	c.Seq = a.seq
	a.seq++
	c.CommitTime = a.tx.CommitTime
	c.xid = a.xid
	h := a.tx.hold
	if a.keep != nil && c.Kind >= Insert && c.Kind <= Delete && !a.keep(c) {
		h.skipped++
		return nil
	}
	if h.spill == nil {
		if n := c.memSize(); a.budget.reserve(n) {
			h.mem += n
			a.tx.Changes = append(a.tx.Changes, c)
			return nil
		}
		sf, err := newSpillFile(a.spillDir)
		if err != nil {
			return fmt.Errorf("a transaction larger than the memory budget cannot go to disk: %w", err)
		}
		h.spill = sf
	}
	if err := h.spill.write(c); err != nil {
		return fmt.Errorf("write a large transaction to disk: %w", err)
	}
	return nil
}

// commit ends the transaction in progress and returns it.
func (a *assembler) commit(m msgCommit) (*Transaction, error) {
	tx := a.tx
	if tx == nil {
		return nil, errors.New("pgoutput: commit without begin")
	}
	a.tx = nil
	tx.LSN = m.end
	tx.xid = a.xid
	tx.CommitTime = m.time.UTC()
	for _, c := range tx.Changes {
		c.LSN, c.CommitTime = tx.LSN, tx.CommitTime
	}
	if sp := tx.hold.spill; sp != nil {
		if err := sp.finish(); err != nil {
			tx.Release()
			return nil, fmt.Errorf("write a large transaction to disk: %w", err)
		}
	}
	return tx, nil
}

// change decodes a row message of r.
func (r *relation) change(m msgRow) (*Change, error) {
	c := &Change{Kind: m.kind, Schema: r.schema, Table: r.table, Columns: r.columns}
	n := len(r.columns)
	for _, t := range [2][]tupleValue{m.newTuple, m.oldTuple} {
		if t != nil && len(t) != n {
			return nil, fmt.Errorf("pgoutput: %s.%s tuple has %d columns, relation %d", r.schema, r.table, len(t), n)
		}
	}
	// One buffer holds every value; rows slice it once it stops growing.
	size := 0
	for _, t := range [2][]tupleValue{m.newTuple, m.oldTuple} {
		for _, v := range t {
			size += len(v.data) + 8
		}
	}
	buf := make([]byte, 0, size+size/8)
	var spans [2][][2]int
	tuples := [2][]tupleValue{m.newTuple, m.oldTuple}
	for k, t := range tuples {
		if t == nil {
			continue
		}
		spans[k] = make([][2]int, n)
		for i, v := range t {
			// A key-only old tuple carries the other columns as nulls.
			if k == 1 && m.old == 'K' && !r.identity[i] {
				spans[k][i] = [2]int{-1, -1}
				continue
			}
			start := len(buf)
			switch v.kind {
			case 'n':
				buf = append(buf, "null"...)
			case 't':
				var err error
				if buf, err = appendValue(buf, r.types[i], v.data); err != nil {
					return nil, fmt.Errorf("%s.%s column %s: %w", r.schema, r.table, r.columns[i].Name, err)
				}
			case 'u':
				spans[k][i] = [2]int{-1, -1}
				continue
			default:
				return nil, fmt.Errorf("%s.%s column %s: binary values are not requested", r.schema, r.table, r.columns[i].Name)
			}
			spans[k][i] = [2]int{start, len(buf)}
		}
	}
	rows := [2][]json.RawMessage{}
	for k := range spans {
		if spans[k] == nil {
			continue
		}
		rows[k] = make([]json.RawMessage, n)
		for i, s := range spans[k] {
			if s[0] >= 0 {
				rows[k][i] = buf[s[0]:s[1]:s[1]]
			}
		}
	}
	r.setRows(c, rows)
	return c, nil
}

// setRows sets c's record and old record from the new and old tuples'
// rows as its kind has them.
func (r *relation) setRows(c *Change, rows [2][]json.RawMessage) {
	n := len(r.columns)
	switch c.Kind {
	case Insert:
		c.Record = rows[0]
	case Update:
		c.Record, c.OldRecord = rows[0], rows[1]
		if c.OldRecord == nil {
			// The key did not change, so pgoutput sent no old tuple:
			// old_record is the key's values, as wal2json gives them.
			c.OldRecord = make([]json.RawMessage, n)
			for i, v := range c.Record {
				if r.identity[i] {
					c.OldRecord[i] = v
				}
			}
		}
		for i, v := range c.Record {
			if v == nil {
				c.Record[i] = c.OldRecord[i]
			}
		}
	case Delete:
		c.OldRecord = rows[1]
	}
}
