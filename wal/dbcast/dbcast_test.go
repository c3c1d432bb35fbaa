package dbcast

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/wal"
)

// row is an insert into realtime.messages with Supabase's columns (in an
// order of its own: columns are found by name).
func row(vals map[string]string) *wal.Change {
	c := &wal.Change{Kind: wal.Insert, Schema: Schema, Table: Table}
	for _, name := range []string{"payload", "topic", "id", "extension", "event", "private", "binary_payload", "inserted_at"} {
		c.Columns = append(c.Columns, wal.Column{Name: name})
		v, ok := vals[name]
		if !ok {
			v = "null"
		}
		c.Record = append(c.Record, json.RawMessage(v))
	}
	return c
}

func base() map[string]string {
	return map[string]string{"id": `"9f0c3c4e-0000-4000-8000-000000000001"`, "topic": `"room1"`, "extension": `"broadcast"`,
		"event": `"ev"`, "private": "true", "payload": `{"a": 1}`}
}

func with(m map[string]string, k, v string) map[string]string {
	m[k] = v
	return m
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *wal.Change
		want Message
		err  string
	}{
		{"json", row(base()), Message{ID: "9f0c3c4e-0000-4000-8000-000000000001", Topic: "room1", Event: "ev", Private: true, Payload: []byte(`{"a": 1}`)}, ""},
		{"binary", row(with(with(base(), "payload", "null"), "binary_payload", `"\\x00ff10"`)),
			Message{ID: "9f0c3c4e-0000-4000-8000-000000000001", Topic: "room1", Event: "ev", Private: true, Payload: []byte{0, 0xff, 0x10}, Binary: true}, ""},
		{"public, no event, no payload", row(with(with(with(base(), "private", "false"), "event", "null"), "payload", "null")),
			Message{ID: "9f0c3c4e-0000-4000-8000-000000000001", Topic: "room1", Payload: []byte(`{}`)}, ""},
		{"presence row", row(with(base(), "extension", `"presence"`)), Message{}, "not a broadcast"},
		{"no topic", row(with(base(), "topic", "null")), Message{}, "without id or topic"},
		{"topic not a string", row(with(base(), "topic", "12")), Message{}, "topic"},
		{"bad bytea", row(with(base(), "binary_payload", `"00ff"`)), Message{}, "binary_payload"},
		{"odd bytea", row(with(base(), "binary_payload", `"\\x0"`)), Message{}, "binary_payload"},
		{"another table", &wal.Change{Kind: wal.Insert, Schema: "public", Table: "messages"}, Message{}, "not an insert into realtime.messages"},
		{"an update", func() *wal.Change { c := row(base()); c.Kind = wal.Update; return c }(), Message{}, "not an insert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.c)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestAuthorize: the owner's RLS check never sees the nodes' broadcast
// subscriptions nor gives realtime.messages to wildcard bindings, and the
// hits keep the matcher's order (one frame per node).
func TestAuthorize(t *testing.T) {
	ours1, ours2 := Subscription(1), Subscription(5)
	ours1.Node, ours2.Node = "n1", "n2"
	explicit := &wal.Subscription{ID: 2, Node: "n1", Schema: "realtime", Table: "messages", Role: "authenticated", Claims: "{}"}
	hidden := &wal.Subscription{ID: 3, Node: "n1", Schema: "realtime", Table: "messages", Role: "anon", Claims: "{}"}
	wild := &wal.Subscription{ID: 4, Node: "n2", Schema: "*", Role: "authenticated", Claims: "{}"}
	forged := &wal.Subscription{ID: 6, Node: "n2", Schema: "realtime", Table: "messages", Role: role, Claims: "{}"}
	todo := &wal.Change{Kind: wal.Insert, Schema: "public", Table: "todos"}
	msg := row(base())
	var seen [][]*wal.Subscription
	inner := func(_ context.Context, _ []*wal.Change, hits [][]*wal.Subscription) error {
		seen = append(seen[:0], slices.Clone(hits[0]), slices.Clone(hits[1]))
		for i := range hits {
			hits[i] = slices.DeleteFunc(hits[i], func(s *wal.Subscription) bool { return s.Role == "anon" || s == forged })
		}
		return errors.New("inner's error")
	}
	hits := [][]*wal.Subscription{{ours1, explicit, hidden, ours2, wild, forged}, {wild, hidden}}
	err := Authorize(inner)(context.Background(), []*wal.Change{msg, todo}, hits)
	if err == nil || err.Error() != "inner's error" {
		t.Fatalf("err = %v, want inner's", err)
	}
	if ids(seen[0]) != "[2 3 6]" || ids(seen[1]) != "[4 3]" {
		t.Fatalf("inner saw %s and %s, want [2 3 6] (no broadcast subscription, no wildcard) and all of todos' [4 3]", ids(seen[0]), ids(seen[1]))
	}
	if ids(hits[0]) != "[1 2 5]" || ids(hits[1]) != "[4]" {
		t.Fatalf("kept %s and %s, want [1 2 5] in order and [4]", ids(hits[0]), ids(hits[1]))
	}
	// Without an inner check (a node without a JWT secret) the wildcard
	// still gets nothing of realtime.messages.
	hits = [][]*wal.Subscription{{ours1, wild, explicit}}
	if err := Authorize(nil)(context.Background(), []*wal.Change{msg}, hits); err != nil || ids(hits[0]) != "[1 2]" {
		t.Fatalf("open: kept %s (err %v), want [1 2]", ids(hits[0]), err)
	}
}

func ids(subs []*wal.Subscription) string {
	var out []uint64
	for _, s := range subs {
		out = append(out, s.ID)
	}
	return fmt.Sprint(out)
}

type fanout struct{ got []Message }

func (f *fanout) DeliverDB(m *Message) int { f.got = append(f.got, *m); return 1 }

func TestDeliverer(t *testing.T) {
	f := &fanout{}
	set := metrics.NewSet()
	d := NewDeliverer(Config{Fanout: f, MaxPayloadBytes: 16, Dedupe: 2, Logger: slog.New(slog.DiscardHandler), Metrics: set})
	sub := Subscription(7)
	d.Own(sub)
	var passed [][]uint64
	deliver := d.Wrap(func(_ *wal.Change, ids []uint64) { passed = append(passed, ids) })
	msg := func(id, payload string) *wal.Change {
		return row(with(with(base(), "id", `"`+id+`"`), "payload", payload))
	}
	deliver(msg("a", `{}`), []uint64{7, 9})                  // ours and a postgres_changes binding's
	deliver(msg("a", `{}`), []uint64{7})                     // a repeat
	deliver(msg("b", `{"long": "0123456789"}`), []uint64{7}) // over the limit
	deliver(msg("c", `{}`), []uint64{7})
	deliver(msg("d", `{}`), []uint64{7})
	deliver(msg("a", `{}`), []uint64{7}) // forgotten: remembers 2
	deliver(row(with(base(), "extension", `"presence"`)), []uint64{7})
	deliver(&wal.Change{Kind: wal.Insert, Schema: "public", Table: "todos"}, []uint64{7})
	var got []string
	for _, m := range f.got {
		got = append(got, m.ID)
	}
	if fmt.Sprint(got) != "[a c d a]" {
		t.Fatalf("delivered %v, want [a c d a]", got)
	}
	if fmt.Sprint(passed) != "[[9] [7]]" {
		t.Fatalf("passed on %v, want [[9] [7]] (the binding's id, and every id of another table)", passed)
	}
	for name, want := range map[string]uint64{
		"meshcast_db_broadcasts_total":                                     4,
		"meshcast_db_broadcasts_duplicate_total":                           1,
		`meshcast_db_broadcasts_dropped_total{reason="payload_too_large"}`: 1,
	} {
		if got := set.GetOrCreateCounter(name).Get(); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}
