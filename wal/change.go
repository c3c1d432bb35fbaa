package wal

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// LSN is a position in Postgres's write-ahead log.
type LSN uint64

// String formats l as Postgres does, e.g. 16/B374D848.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// Kind is what a change did. The zero Kind, in a Subscription, means every
// kind (Supabase's event "*").
type Kind uint8

// Kinds of change.
const (
	Insert Kind = 1 + iota
	Update
	Delete
	Truncate
)

// String is the kind's Supabase event name, "*" for the zero Kind.
func (k Kind) String() string {
	switch k {
	case Insert:
		return "INSERT"
	case Update:
		return "UPDATE"
	case Delete:
		return "DELETE"
	case Truncate:
		return "TRUNCATE"
	case 0:
		return "*"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ParseEvent maps a binding's event to a Kind as Supabase does: INSERT,
// UPDATE and DELETE in any case, and anything else to 0, every kind.
func ParseEvent(event string) Kind {
	switch len(event) {
	case 6:
		switch {
		case equalFold(event, "INSERT"):
			return Insert
		case equalFold(event, "UPDATE"):
			return Update
		case equalFold(event, "DELETE"):
			return Delete
		}
	}
	return 0
}

// Column is a column of a changed table.
type Column struct {
	Name string
	Type string // pg_type.typname: int4, _text, an enum's or a domain's name
	Key  bool   // part of the primary key
	// class is how values of the column (of its base type) decode and
	// compare.
	class class
}

// Transaction is a committed transaction's changes, in the order they were
// made.
type Transaction struct {
	// LSN is the end of the transaction's commit record: Ack(LSN) accepts
	// it, and a reader started afresh resumes after the last LSN acked.
	LSN        LSN
	CommitTime time.Time // UTC, microseconds
	// Changes are the changes held in memory. Those of a transaction
	// larger than the reader's memory budget continue in a temporary
	// file: Range reads them all, Len counts them (see spill.go).
	Changes []*Change

	hold *txHold // what it holds until Release; nil: nothing

	// xid is the transaction's ID on the node that read it; catalog is
	// set when it changed privileges, policies, the publication or tables
	// (a meshcast.catalog message of the event trigger, see catalog.go).
	xid     uint32
	catalog bool
	// mark is set on the reader's empty marking transactions
	// (Reader.markIdle): every change before LSN was handed over.
	mark bool
}

// Change is one row inserted, updated or deleted, or one table truncated.
//
// Record and OldRecord hold the JSON of each column's value as to_jsonb
// gives it, by column index; a nil entry is a value Postgres did not send
// (an unchanged TOAST value, or a column outside the replica identity).
// Changes are shared read-only once the reader hands them out.
type Change struct {
	Kind          Kind
	Schema, Table string
	Columns       []Column // shared by the changes of a table; read-only
	// Record is the new row of an Insert or Update. An unchanged TOAST
	// value is taken from OldRecord when that has it, else it is nil.
	Record []json.RawMessage
	// OldRecord is, for an Update, the replica identity's old values (the
	// key, or the whole row with REPLICA IDENTITY FULL); for a Delete, the
	// old key or row.
	OldRecord  []json.RawMessage
	LSN        LSN    // its transaction's LSN
	Seq        uint32 // its position in the transaction: (LSN, Seq) orders changes
	CommitTime time.Time

	// xid is its transaction's ID, on the node that read it (not in the
	// binary form): the RLS check waits until its snapshot covers it.
	xid uint32
}

// Limits of Supabase's apply_rls: a row over maxRowBytes is sent with only
// its values of at most maxValueBytes, and errors saying so.
const (
	maxRowBytes   = 1024 * 1024
	maxValueBytes = 64
)

// The errors field of a change, as Supabase sends it.
const (
	errTooLarge = `["Error 413: Payload Too Large"]`
	errNoKey    = `["Error 400: Bad Request, no primary key"]`
)

// AppendData appends the change as the "data" object of a Supabase
// postgres_changes message:
//
//	{"columns":[{"name":"id","type":"int8"},…],"commit_timestamp":"2024-05-01T10:00:00.123Z",
//	 "errors":null,"old_record":{…},"record":{…},"schema":"public","table":"todos","type":"UPDATE"}
//
// with old_record for updates and deletes only and record for inserts and
// updates only. columns, when not nil, limits columns, record and
// old_record to those names and the key (a binding's select, and the
// columns its role may read). A row over 1 MiB has its values over 64
// bytes left out and errors ["Error 413: Payload Too Large"]; an insert or
// update of a table without a primary key is sent as Supabase sends it,
// with errors ["Error 400: Bad Request, no primary key"] and no values.
func (c *Change) AppendData(dst []byte, columns []string) []byte {
	keep := func(i int) bool {
		return columns == nil || c.Columns[i].Key || slices.Contains(columns, c.Columns[i].Name)
	}
	if (c.Kind == Insert || c.Kind == Update) && !c.hasKey() {
		dst = append(dst, `{"columns":[],"commit_timestamp":null,"errors":`...)
		dst = append(dst, errNoKey...)
		if c.Kind == Update {
			dst = append(dst, `,"old_record":{}`...)
		}
		dst = append(dst, `,"record":{}`...)
		return c.appendTail(dst)
	}
	dst = append(dst, `{"columns":[`...)
	n := 0
	for i, col := range c.Columns {
		if !keep(i) {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, `{"name":`...)
		dst = appendJSONString(dst, []byte(col.Name))
		dst = append(dst, `,"type":`...)
		dst = appendJSONString(dst, []byte(col.Type))
		dst = append(dst, '}')
	}
	dst = append(dst, `],"commit_timestamp":"`...)
	dst = c.CommitTime.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	dst = append(dst, `","errors":`...)
	tooLarge := c.rowBytes() > maxRowBytes
	if tooLarge {
		dst = append(dst, errTooLarge...)
	} else {
		dst = append(dst, "null"...)
	}
	if c.Kind == Update || c.Kind == Delete {
		dst = append(dst, `,"old_record":`...)
		dst = c.appendRow(dst, c.OldRecord, keep, tooLarge)
	}
	if c.Kind == Insert || c.Kind == Update {
		dst = append(dst, `,"record":`...)
		dst = c.appendRow(dst, c.Record, keep, tooLarge)
	}
	return c.appendTail(dst)
}

func (c *Change) appendTail(dst []byte) []byte {
	dst = append(dst, `,"schema":`...)
	dst = appendJSONString(dst, []byte(c.Schema))
	dst = append(dst, `,"table":`...)
	dst = appendJSONString(dst, []byte(c.Table))
	dst = append(dst, `,"type":"`...)
	dst = append(dst, c.Kind.String()...)
	return append(dst, `"}`...)
}

func (c *Change) appendRow(dst []byte, row []json.RawMessage, keep func(int) bool, tooLarge bool) []byte {
	dst = append(dst, '{')
	n := 0
	for i, v := range row {
		if v == nil || !keep(i) || tooLarge && len(v) > maxValueBytes {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = appendJSONString(dst, []byte(c.Columns[i].Name))
		dst = append(dst, ':')
		dst = append(dst, v...)
	}
	return append(dst, '}')
}

func (c *Change) hasKey() bool {
	for _, col := range c.Columns {
		if col.Key {
			return true
		}
	}
	return false
}

// rowBytes approximates the size of the change as Supabase measures it
// (the wal2json text of the change): names and values of both rows.
func (c *Change) rowBytes() int {
	n := 0
	for _, row := range [2][]json.RawMessage{c.Record, c.OldRecord} {
		for i, v := range row {
			if v != nil {
				n += len(c.Columns[i].Name) + len(v) + 6
			}
		}
	}
	return n
}

// equalFold is strings.EqualFold for ASCII.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
