package wal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
)

// pgoutputStream frames pgoutput messages as the fuzz input of
// FuzzPgoutputStream: each one behind its length as 4 bytes.
func pgoutputStream(msgs [][]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	return b
}

// FuzzPgoutputStream feeds a replication stream of pgoutput messages
// (the WAL is a remote party too) through the decoder and the assembler as
// the reader does, with the column types of the built-in catalogue. The
// stream stops at the first error, as a session does; every transaction it
// completes must give changes whose JSON is valid, which the mesh codec
// carries without changing a byte of what a client gets, and which the
// matcher can match.
func FuzzPgoutputStream(f *testing.F) {
	rel := relationMessage(16384, "public", "t", []relColumn{
		{key: true, name: "id", oid: oidInt4}, {name: "v", oid: oidText}, {name: "a", oid: 1007}})
	begin := []byte{'B', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3}
	commit := []byte{'C', 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3}
	f.Add(pgoutputStream([][]byte{begin, rel, insertMessage(16384, tuple('t', "1", 't', "x", 't', "{1,2}")), commit}))
	f.Add(pgoutputStream([][]byte{begin, rel, insertMessage(16384, tuple('t', "1", 'n', "", 'u', "")), []byte{'T', 0, 0, 0, 1, 0, 0, 0, 0x40, 0}, commit}))
	f.Add(pgoutputStream([][]byte{begin, rel, catalogMessage(true, "REVOKE"), insertMessage(16384, tuple('t', "1", 't', "x", 't', "{1,2}")), commit}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		a := newAssembler()
		m := NewMatcher()
		for len(stream) >= 4 {
			n := binary.BigEndian.Uint32(stream)
			if uint64(n) > uint64(len(stream)-4) {
				return
			}
			b := stream[4 : 4+n]
			stream = stream[4+n:]
			msg, err := parseMessage(b)
			if err != nil {
				return
			}
			switch msg := msg.(type) {
			case msgBegin:
				err = a.begin(msg)
			case msgRelation:
				a.addRelation(fuzzRelation(msg))
				m.Add(&Subscription{ID: uint64(msg.id), Schema: msg.schema, Table: msg.name, Filters: []Filter{{Column: "id", Op: OpGt, Value: "1"}}})
			case msgRow:
				err = a.row(msg)
			case msgTruncate:
				err = a.truncate(msg)
			case msgMessage:
				a.message(msg)
			case msgCommit:
				var tx *Transaction
				if tx, err = a.commit(msg); err == nil {
					checkTransaction(t, tx, m)
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// fuzzRelation resolves a Relation message without a database: built-in
// types as they are, others as text passed through; the replica identity
// stands in for the primary key.
func fuzzRelation(m msgRelation) *relation {
	types := make([]*typeInfo, len(m.columns))
	var pk []string
	for i, c := range m.columns {
		types[i] = builtinTypes[c.oid]
		if types[i] == nil {
			types[i] = &typeInfo{name: "other", class: classOther}
		}
		if c.key {
			pk = append(pk, c.name)
		}
	}
	return newRelation(m, types, pk)
}

func checkTransaction(t *testing.T, tx *Transaction, m *Matcher) {
	t.Helper()
	for i, c := range tx.Changes {
		if c.Seq != uint32(i) || c.LSN != tx.LSN {
			t.Fatalf("change %d: seq %d, LSN %v of transaction %v", i, c.Seq, c.LSN, tx.LSN)
		}
		data := c.AppendData(nil, nil)
		if !json.Valid(data) {
			t.Fatalf("change %d: invalid JSON %s", i, data)
		}
		wire := c.AppendBinary(nil)
		d, err := DecodeChange(wire)
		if err != nil {
			t.Fatalf("change %d: the mesh codec cannot decode its own record: %v", i, err)
		}
		if again := d.AppendData(nil, nil); !bytes.Equal(again, data) {
			t.Fatalf("change %d: across the mesh\n %s\nbecomes\n %s", i, data, again)
		}
		m.Match(c, nil)
		m.Match(d, nil)
	}
}
