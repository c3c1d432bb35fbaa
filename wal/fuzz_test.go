package wal

import (
	"encoding/binary"
	"encoding/json"
	"testing"
)

// FuzzParseMessage feeds pgoutput messages, well formed and not, through
// the decoder and the assembler: they must error, never panic, and every
// change they make must encode to valid JSON.
func FuzzParseMessage(f *testing.F) {
	rel := relationMessage(16384, "public", "t", []relColumn{
		{key: true, name: "id", oid: oidInt4}, {name: "v", oid: oidText}, {name: "a", oid: 1007}})
	f.Add(rel)
	f.Add(insertMessage(16384, tuple('t', "1", 't', "x", 't', "{1,2}")))
	f.Add(insertMessage(16384, tuple('t', "1", 'n', "", 'u', "")))
	f.Add([]byte{'B', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3})
	f.Add([]byte{'T', 0, 0, 0, 1, 0, 0, 0, 0x40, 0})
	f.Add([]byte{'U', 0, 0, 0x40, 0, 'O', 0, 1, 'n', 'N', 0, 1, 'u'})
	f.Add(catalogMessage(true, "GRANT"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a := newAssembler()
		m, err := parseMessage(rel)
		if err != nil {
			t.Fatal(err)
		}
		r := m.(msgRelation)
		types := make([]*typeInfo, len(r.columns))
		for i, c := range r.columns {
			types[i] = builtinTypes[c.oid]
		}
		a.addRelation(newRelation(r, types, []string{"id"}))
		a.begin(msgBegin{})
		m, err = parseMessage(b)
		if err != nil {
			return
		}
		switch m := m.(type) {
		case msgRow:
			err = a.row(m)
		case msgTruncate:
			err = a.truncate(m)
		case msgMessage:
			a.message(m)
		}
		if err != nil {
			return
		}
		tx, _ := a.commit(msgCommit{})
		for _, c := range tx.Changes {
			if out := c.AppendData(nil, nil); !json.Valid(out) {
				t.Fatalf("invalid JSON %s", out)
			}
		}
	})
}

// FuzzAppendValue converts arbitrary text as each type: an error or valid
// JSON, never a panic.
func FuzzAppendValue(f *testing.F) {
	for _, s := range []string{"1", "-1.5e+30", "NaN", "t", `{"a": 1}`, "2024-05-01 10:00:00+00", "0044-03-15 10:00:00 BC",
		`{1,NULL,"a\"b"}`, "[0:1]={1,2}", "{{1,2},{3,4}}", `(1,"a ""b""",)`, "1 2 3", "", "{", "(", `"`, "\xff"} {
		for oid := range builtinTypes {
			f.Add(oid, []byte(s))
		}
		f.Add(uint32(0), []byte(s))
	}
	comp := &typeInfo{name: "pair", class: classComposite, delim: ',', fields: []field{
		{name: "a", typ: builtinTypes[oidInt4]}, {name: "b", typ: builtinTypes[1009]}}}
	compArray := &typeInfo{name: "_pair", class: classArray, elem: comp, delim: ','}
	f.Fuzz(func(t *testing.T, oid uint32, text []byte) {
		typ := builtinTypes[oid]
		switch {
		case oid == 0:
			typ = comp
		case oid == 1:
			typ = compArray
		case typ == nil:
			typ = &typeInfo{name: "other", class: classOther}
		}
		out, err := appendValue(nil, typ, text)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%s %q: invalid JSON %s", typ.name, text, out)
		}
	})
}

func relationMessage(id uint32, schema, name string, cols []relColumn) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, schema...), 0)
	b = append(append(b, name...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		flag := byte(0)
		if c.key {
			flag = 1
		}
		b = append(b, flag)
		b = append(append(b, c.name...), 0)
		b = binary.BigEndian.AppendUint32(b, c.oid)
		b = binary.BigEndian.AppendUint32(b, uint32(c.mod))
	}
	return b
}

// tuple encodes TupleData from kind, text pairs.
func tuple(kv ...any) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(kv)/2))
	for i := 0; i < len(kv); i += 2 {
		k := byte(kv[i].(rune))
		b = append(b, k)
		if k == 't' || k == 'b' {
			s := kv[i+1].(string)
			b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
			b = append(b, s...)
		}
	}
	return b
}

func insertMessage(rel uint32, tuple []byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'I'}, rel)
	return append(append(b, 'N'), tuple...)
}

// catalogMessage is a logical decoding message of the catalog event
// trigger, as pgoutput sends it.
func catalogMessage(transactional bool, tag string) []byte {
	b := []byte{'M', 0}
	if transactional {
		b[1] = 1
	}
	b = append(b, 0, 0, 0, 0, 0, 0, 0x40, 0) // its LSN
	b = append(b, catalogPrefix+"\x00"...)
	b = append(b, 0, 0, 0, byte(len(tag)))
	return append(b, tag...)
}
