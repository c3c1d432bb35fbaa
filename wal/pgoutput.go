package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// This file decodes pgoutput's logical replication messages (protocol
// version 1, https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html).
// pglogrepl has decoders too, but they index past the end of short input;
// these check every length, since a decoder of remote input must not panic.

var errShort = errors.New("pgoutput: message ends early")

// pgEpoch is Postgres's timestamp origin.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type msgBegin struct {
	finalLSN LSN
	time     time.Time
	xid      uint32
}

type msgCommit struct {
	lsn, end LSN
	time     time.Time
}

type msgRelation struct {
	id       uint32
	schema   string
	name     string
	identity byte // replica identity: d(efault), n(othing), f(ull), i(ndex)
	columns  []relColumn
}

type relColumn struct {
	key  bool // part of the replica identity
	name string
	oid  uint32
	mod  int32
}

type msgType struct {
	oid          uint32
	schema, name string
}

// msgRow is an Insert, Update or Delete. old is 'K' (key), 'O' (old row) or
// 0 (none); the tuples alias the message.
type msgRow struct {
	kind     Kind
	relation uint32
	old      byte
	oldTuple []tupleValue
	newTuple []tupleValue
}

// msgMessage is a logical decoding message (pg_logical_emit_message),
// sent when the messages option is on (Postgres 14+). A transactional one
// arrives inside its transaction, in commit order.
type msgMessage struct {
	transactional bool
	lsn           LSN
	prefix        string
	content       []byte
}

type msgTruncate struct {
	options   uint8
	relations []uint32
}

// tupleValue is one column of a tuple: kind 'n' (null), 'u' (unchanged
// TOAST, not sent), 't' (text) or 'b' (binary).
type tupleValue struct {
	kind byte
	data []byte
}

// decoder reads big-endian fields; the first short read sets err and every
// later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errShort
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) time() time.Time {
	us := int64(d.u64())
	return pgEpoch.Add(time.Duration(us) * time.Microsecond)
}

func (d *decoder) str() string {
	if d.err != nil {
		return ""
	}
	for i, c := range d.b {
		if c == 0 {
			s := string(d.b[:i])
			d.b = d.b[i+1:]
			return s
		}
	}
	d.err = errShort
	return ""
}

// tuple reads TupleData, reusing buf.
func (d *decoder) tuple(buf []tupleValue) []tupleValue {
	n := int(d.u16())
	// Each column takes at least its kind byte: a count the message cannot
	// hold is malformed before anything is allocated.
	if n > len(d.b) {
		d.err = errShort
		return buf[:0]
	}
	buf = buf[:0]
	for range n {
		v := tupleValue{kind: d.u8()}
		switch v.kind {
		case 'n', 'u':
		case 't', 'b':
			v.data = d.take(int(d.u32()))
		default:
			if d.err == nil {
				d.err = fmt.Errorf("pgoutput: tuple column kind %q", v.kind)
			}
		}
		if d.err != nil {
			return buf
		}
		buf = append(buf, v)
	}
	return buf
}

func (d *decoder) done(what string) error {
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%s: %d trailing bytes", what, len(d.b))
	}
	return nil
}

// parseMessage decodes one pgoutput message. It returns nil, nil for
// messages the reader has no use for (Origin).
// Tuples alias b.
func parseMessage(b []byte) (any, error) {
	if len(b) == 0 {
		return nil, errShort
	}
	d := decoder{b: b[1:]}
	switch b[0] {
	case 'B':
		m := msgBegin{finalLSN: LSN(d.u64()), time: d.time(), xid: d.u32()}
		return m, d.done("begin")
	case 'C':
		d.u8() // flags, unused
		m := msgCommit{lsn: LSN(d.u64()), end: LSN(d.u64()), time: d.time()}
		return m, d.done("commit")
	case 'R':
		m := msgRelation{id: d.u32(), schema: d.str(), name: d.str(), identity: d.u8()}
		n := int(d.u16())
		if n > len(d.b) {
			return nil, fmt.Errorf("relation: %w", errShort)
		}
		m.columns = make([]relColumn, 0, n)
		for range n {
			c := relColumn{key: d.u8()&1 != 0, name: d.str(), oid: d.u32(), mod: int32(d.u32())}
			m.columns = append(m.columns, c)
		}
		return m, d.done("relation")
	case 'Y':
		m := msgType{oid: d.u32(), schema: d.str(), name: d.str()}
		return m, d.done("type")
	case 'I':
		m := msgRow{kind: Insert, relation: d.u32()}
		if k := d.u8(); d.err == nil && k != 'N' {
			return nil, fmt.Errorf("insert: tuple kind %q", k)
		}
		m.newTuple = d.tuple(nil)
		return m, d.done("insert")
	case 'U':
		m := msgRow{kind: Update, relation: d.u32()}
		k := d.u8()
		if k == 'K' || k == 'O' {
			m.old = k
			m.oldTuple = d.tuple(nil)
			k = d.u8()
		}
		if d.err == nil && k != 'N' {
			return nil, fmt.Errorf("update: tuple kind %q", k)
		}
		m.newTuple = d.tuple(nil)
		return m, d.done("update")
	case 'D':
		m := msgRow{kind: Delete, relation: d.u32()}
		m.old = d.u8()
		if d.err == nil && m.old != 'K' && m.old != 'O' {
			return nil, fmt.Errorf("delete: tuple kind %q", m.old)
		}
		m.oldTuple = d.tuple(nil)
		return m, d.done("delete")
	case 'T':
		n := int(d.u32())
		m := msgTruncate{options: d.u8()}
		if n > len(d.b)/4 {
			return nil, fmt.Errorf("truncate: %w", errShort)
		}
		m.relations = make([]uint32, n)
		for i := range m.relations {
			m.relations[i] = d.u32()
		}
		return m, d.done("truncate")
	case 'M':
		m := msgMessage{transactional: d.u8()&1 != 0, lsn: LSN(d.u64()), prefix: d.str()}
		m.content = d.take(int(d.u32()))
		return m, d.done("message")
	case 'O':
		return nil, nil
	}
	return nil, fmt.Errorf("pgoutput: unknown message type %q", b[0])
}
