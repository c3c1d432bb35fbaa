package dbcast

import (
	"encoding/json"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/wal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// FuzzDecode: any values in a row of realtime.messages (the app writes
// them; the owner's decoder made them JSON) decode or fail, never panic,
// and what decodes names a topic and an id.
func FuzzDecode(f *testing.F) {
	f.Add(`"id1"`, `"room"`, `"broadcast"`, `{"a":1}`, `null`, `true`)
	f.Add(`"id1"`, `"room"`, `"broadcast"`, `null`, `"\\x00ff"`, `false`)
	f.Add(`"id1"`, `"room"`, `"presence"`, `null`, `null`, `null`)
	f.Add(`1`, `["x"]`, `"broadcast"`, `"s"`, `"\\xz"`, `"true"`)
	f.Fuzz(func(t *testing.T, id, topic, ext, payload, binary, private string) {
		c := &wal.Change{Kind: wal.Insert, Schema: Schema, Table: Table}
		for _, col := range []struct{ name, v string }{{"id", id}, {"topic", topic}, {"extension", ext},
			{"payload", payload}, {"binary_payload", binary}, {"private", private}} {
			c.Columns = append(c.Columns, wal.Column{Name: col.name})
			c.Record = append(c.Record, json.RawMessage(col.v))
		}
		m, err := Decode(c)
		if err == nil && (m.ID == "" || m.Topic == "") {
			t.Fatalf("decoded %+v without id or topic", m)
		}
	})
}
