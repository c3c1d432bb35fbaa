package wal

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func codecSamples() []*Change {
	ts := time.Date(2024, 5, 1, 10, 0, 0, 123456000, time.UTC)
	ins := todoChange(Insert, map[string]string{"id": "5", "title": `"Buy \"milk\""`, "done": "false", "due": "null"})
	ins.LSN, ins.Seq, ins.CommitTime = 0x16B374D848, 3, ts
	upd := todoChange(Update, map[string]string{"id": "5", "title": `"x"`})
	upd.OldRecord = row(map[string]string{"id": "5"})
	upd.LSN, upd.CommitTime = 1, ts
	del := todoChange(Delete, map[string]string{"id": "5"})
	del.CommitTime = ts
	trunc := &Change{Kind: Truncate, Schema: "s", Table: "t", Columns: todoColumns, CommitTime: ts}
	return []*Change{ins, upd, del, trunc}
}

func TestChangeBinaryRoundTrip(t *testing.T) {
	for _, c := range codecSamples() {
		b := c.AppendBinary(nil)
		got, err := DecodeChange(b)
		if err != nil {
			t.Fatalf("%v: %v", c.Kind, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%v: round trip\n got %+v\nwant %+v", c.Kind, got, c)
		}
		if !bytes.Equal(got.AppendData(nil, nil), c.AppendData(nil, nil)) {
			t.Errorf("%v: data differs after the round trip", c.Kind)
		}
		for i := range b {
			if _, err := DecodeChange(b[:i]); err == nil {
				t.Errorf("%v: truncated to %d bytes decoded", c.Kind, i)
			}
		}
		if _, err := DecodeChange(append(b, 0)); err == nil {
			t.Errorf("%v: trailing byte decoded", c.Kind)
		}
	}
}

func FuzzDecodeChange(f *testing.F) {
	for _, c := range codecSamples() {
		f.Add(c.AppendBinary(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeChange(b)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		if again := c.AppendBinary(nil); !bytes.Equal(again, b) {
			// Varints have one canonical form; anything else is a bug.
			if c2, err := DecodeChange(again); err != nil || !reflect.DeepEqual(c2, c) {
				t.Fatalf("re-encoding differs: %x vs %x", again, b)
			}
		}
		c.AppendData(nil, nil) // must not panic
		m := NewMatcher()
		m.Add(&Subscription{ID: 1, Schema: c.Schema, Table: c.Table, Filters: []Filter{{Column: "id", Op: OpGt, Value: "1"}}})
		m.Match(c, nil)
	})
}
