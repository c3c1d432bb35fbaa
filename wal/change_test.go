package wal

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAppendData(t *testing.T) {
	ts := time.Date(2024, 5, 1, 10, 0, 0, 123987000, time.UTC)
	c := todoChange(Update, map[string]string{"id": "1", "title": `"a \"b\""`, "done": "true"})
	c.OldRecord = row(map[string]string{"id": "1"})
	c.CommitTime = ts
	want := `{"columns":[{"name":"id","type":"int8"},{"name":"title","type":"text"},{"name":"done","type":"bool"},` +
		`{"name":"due","type":"timestamptz"},{"name":"score","type":"numeric"},{"name":"mood","type":"mood"}],` +
		`"commit_timestamp":"2024-05-01T10:00:00.123Z","errors":null,"old_record":{"id":1},` +
		`"record":{"id":1,"title":"a \"b\"","done":true},"schema":"public","table":"todos","type":"UPDATE"}`
	if got := string(c.AppendData(nil, nil)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// A selection keeps the key.
	want = `{"columns":[{"name":"id","type":"int8"},{"name":"done","type":"bool"}],` +
		`"commit_timestamp":"2024-05-01T10:00:00.123Z","errors":null,"old_record":{"id":1},` +
		`"record":{"id":1,"done":true},"schema":"public","table":"todos","type":"UPDATE"}`
	if got := string(c.AppendData(nil, []string{"done"})); got != want {
		t.Errorf("select: got  %s\nwant %s", got, want)
	}
	// Inserts have no old_record, deletes no record.
	ins := todoChange(Insert, map[string]string{"id": "2"})
	if got := string(ins.AppendData(nil, nil)); strings.Contains(got, "old_record") || !strings.Contains(got, `"record":{"id":2}`) {
		t.Errorf("insert: %s", got)
	}
	del := todoChange(Delete, map[string]string{"id": "2"})
	if got := string(del.AppendData(nil, nil)); strings.Contains(got, `"record"`) || !strings.Contains(got, `"old_record":{"id":2}`) {
		t.Errorf("delete: %s", got)
	}
}

func TestAppendDataTooLarge(t *testing.T) {
	big := `"` + strings.Repeat("x", maxRowBytes) + `"`
	c := todoChange(Insert, map[string]string{"id": "1", "title": big, "mood": `"` + strings.Repeat("y", 62) + `"`, "due": `"` + strings.Repeat("z", 63) + `"`})
	var d struct {
		Columns []map[string]string
		Errors  []string
		Record  map[string]json.RawMessage
	}
	if err := json.Unmarshal(c.AppendData(nil, nil), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Errors) != 1 || d.Errors[0] != "Error 413: Payload Too Large" {
		t.Errorf("errors %v", d.Errors)
	}
	// Values of at most 64 bytes (as JSON) stay; columns are all there.
	if _, ok := d.Record["title"]; ok || d.Record["id"] == nil || d.Record["mood"] == nil || d.Record["due"] != nil || len(d.Columns) != 6 {
		t.Errorf("record keys %v, %d columns", keys(d.Record), len(d.Columns))
	}
}

func TestAppendDataNoKey(t *testing.T) {
	cols := []Column{{Name: "x", Type: "int4", class: classInt}}
	c := &Change{Kind: Update, Schema: "public", Table: "nokey", Columns: cols,
		Record: []json.RawMessage{json.RawMessage("1")}, OldRecord: []json.RawMessage{nil}}
	want := `{"columns":[],"commit_timestamp":null,"errors":["Error 400: Bad Request, no primary key"],"old_record":{},"record":{},` +
		`"schema":"public","table":"nokey","type":"UPDATE"}`
	if got := string(c.AppendData(nil, nil)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
