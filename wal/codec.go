package wal

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The binary form of a Change, for the mesh:
//
//	u8 version (1) | uvarint LSN | uvarint Seq | varint commit time (Unix µs) | u8 kind
//	| string schema | string table
//	| uvarint columns | per column: string name, string type, u8 flags (1: key), u8 class
//	| u8 rows (1: Record, 2: OldRecord) | per row present, per column: uvarint value length + 1 (0: absent), value
//
// Strings are a uvarint length and the bytes. Values (JSON) are not checked
// again: only the reader, which checked them, writes this form.
const codecVersion = 1

var errCodec = errors.New("wal: malformed change")

// AppendBinary appends c in its binary form to dst.
func (c *Change) AppendBinary(dst []byte) []byte {
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(c.LSN))
	dst = binary.AppendUvarint(dst, uint64(c.Seq))
	dst = binary.AppendVarint(dst, c.CommitTime.UnixMicro())
	dst = append(dst, byte(c.Kind))
	dst = appendString(dst, c.Schema)
	dst = appendString(dst, c.Table)
	dst = binary.AppendUvarint(dst, uint64(len(c.Columns)))
	for _, col := range c.Columns {
		dst = appendString(dst, col.Name)
		dst = appendString(dst, col.Type)
		var flags byte
		if col.Key {
			flags = 1
		}
		dst = append(dst, flags, byte(col.class))
	}
	var rows byte
	if c.Record != nil {
		rows |= 1
	}
	if c.OldRecord != nil {
		rows |= 2
	}
	dst = append(dst, rows)
	for _, row := range [2][]json.RawMessage{c.Record, c.OldRecord} {
		if row == nil {
			continue
		}
		for i := range c.Columns {
			var v json.RawMessage
			if i < len(row) {
				v = row[i]
			}
			if v == nil {
				dst = append(dst, 0)
				continue
			}
			dst = binary.AppendUvarint(dst, uint64(len(v))+1)
			dst = append(dst, v...)
		}
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeChange decodes a Change from its binary form. The Change does not
// alias b.
func DecodeChange(b []byte) (*Change, error) {
	d := codecReader{b: b}
	if v := d.byte(); v != codecVersion {
		return nil, fmt.Errorf("%w: version %d", errCodec, v)
	}
	c := &Change{LSN: LSN(d.uvarint()), Seq: uint32(d.uvarint())}
	c.CommitTime = time.UnixMicro(d.varint()).UTC()
	c.Kind = Kind(d.byte())
	if c.Kind < Insert || c.Kind > Truncate {
		d.fail()
	}
	c.Schema, c.Table = d.string(), d.string()
	n := d.count(4) // each column takes at least four bytes
	c.Columns = make([]Column, n)
	for i := range c.Columns {
		col := Column{Name: d.string(), Type: d.string()}
		flags, cl := d.byte(), class(d.byte())
		if flags > 1 || cl >= numClasses {
			d.fail()
		}
		col.Key, col.class = flags == 1, cl
		c.Columns[i] = col
	}
	rows := d.byte()
	if rows > 3 {
		d.fail()
	}
	// One copy holds every value.
	buf := make([]byte, 0, len(d.b))
	for k := range 2 {
		if rows&(1<<k) == 0 {
			continue
		}
		row := make([]json.RawMessage, n)
		for i := range row {
			l := d.uvarint()
			if l == 0 {
				continue
			}
			v := d.take(l - 1)
			start := len(buf)
			buf = append(buf, v...)
			row[i] = buf[start:len(buf):len(buf)]
		}
		if k == 0 {
			c.Record = row
		} else {
			c.OldRecord = row
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errCodec, len(d.b))
	}
	return c, nil
}

// codecReader reads the binary form; the first error sticks and later
// reads return zero values.
type codecReader struct {
	b   []byte
	err error
}

func (d *codecReader) fail() {
	if d.err == nil {
		d.err = errCodec
	}
}

func (d *codecReader) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *codecReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *codecReader) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *codecReader) take(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *codecReader) string() string { return string(d.take(d.uvarint())) }

// count reads a count of items of at least min bytes each, refusing one the
// input cannot hold before anything is allocated.
func (d *codecReader) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}
