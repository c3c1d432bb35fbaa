package rtschema

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// ensured is a fresh database of the shared server after Ensure at the
// real time (so that inserts land in today's partition), with Supabase's
// roles on the server.
func ensured(t *testing.T) (*pgtest.Server, *conn) {
	t.Helper()
	pg := pgtest.Shared(t)
	c := connect(t, pg.URL())
	appRoles(t, c)
	if err := keeper(nil, Config{}).Ensure(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return pg, c
}

// realtime.send inserts one broadcast row whose payload carries the row's
// id, sets realtime.topic for the transaction, and is private unless told.
func TestSend(t *testing.T) {
	_, c := ensured(t)
	c.exec(t, "BEGIN")
	c.exec(t, `SELECT realtime.send('{"a":1}', 'ev', 'room', false)`)
	if got := c.value(t, "SELECT realtime.topic()"); got != "room" {
		t.Errorf("realtime.topic() after send = %s, want room", got)
	}
	c.exec(t, "COMMIT")
	if got := c.value(t, "SELECT realtime.topic()"); got != "<null>" {
		t.Errorf("realtime.topic() after the transaction = %s, want null", got)
	}
	// The payload is the one sent with "id": the row's id added.
	got := c.value(t, `SELECT count(*)::text FROM realtime.messages WHERE topic = 'room' AND event = 'ev'
		AND extension = 'broadcast' AND private IS FALSE AND binary_payload IS NULL
		AND payload = jsonb_build_object('a', 1, 'id', id)`)
	if got != "1" {
		rows := c.value(t, "SELECT jsonb_agg(m)::text FROM realtime.messages m")
		t.Fatalf("rows with the id added to the payload: %s, want 1; table: %s", got, rows)
	}
	// A payload with an id keeps it; private is the default.
	c.exec(t, `SELECT realtime.send('{"id":"mine","b":2}', 'ev2', 'room')`)
	if got := c.value(t, `SELECT payload::text || ' ' || private::text || ' ' || (id::text <> 'mine')::text
		FROM realtime.messages WHERE event = 'ev2'`); got != `{"b": 2, "id": "mine"} true true` {
		t.Errorf("payload with an id: %s", got)
	}
	if w := c.takeWarnings(); len(w) > 0 {
		t.Errorf("warnings: %v", w)
	}
}

func TestSendBinary(t *testing.T) {
	_, c := ensured(t)
	c.exec(t, `SELECT realtime.send_binary('\x00ff10'::bytea, 'bin', 'room')`)
	got := c.value(t, `SELECT encode(binary_payload, 'hex') || ' ' || (payload IS NULL)::text || ' ' || private::text || ' ' || topic || ' ' || event
		FROM realtime.messages`)
	if got != "00ff10 true true room bin" {
		t.Errorf("send_binary row: %s", got)
	}
}

// A failing send is a warning with Supabase's prefix, and the caller's
// transaction commits the rest of its work.
func TestSendFailureWarns(t *testing.T) {
	_, c := ensured(t)
	c.exec(t, "CREATE TABLE work (x int)")
	today := partitionName(time.Now().UTC().Truncate(day))
	for _, tc := range []struct{ name, sql, warning string }{
		{"payload not an object", `SELECT realtime.send('"scalar"', 'ev', 'room')`, "WarnSendingBroadcastMessage: cannot set path in scalar"},
		{"no topic", `SELECT realtime.send('{}', 'ev', NULL)`, "WarnSendingBroadcastMessage: null value in column \"topic\""},
		{"binary, no topic", `SELECT realtime.send_binary('\x01', 'ev', NULL)`, "WarnSendingBroadcastMessage: null value in column \"topic\""},
		{"no partition for today", `DROP TABLE realtime.` + today + `; SELECT realtime.send('{}', 'ev', 'room')`, "WarnSendingBroadcastMessage: no partition of relation \"messages\" found for row"},
	} {
		c.exec(t, "BEGIN")
		c.exec(t, "INSERT INTO work VALUES (1)")
		c.exec(t, tc.sql)
		c.exec(t, "INSERT INTO work VALUES (2)")
		c.exec(t, "COMMIT")
		w := c.takeWarnings()
		if len(w) != 1 || !strings.HasPrefix(w[0], tc.warning) {
			t.Errorf("%s: warnings %q, want one starting %q", tc.name, w, tc.warning)
		}
	}
	if got := c.value(t, "SELECT count(*)::text FROM work"); got != "8" {
		t.Errorf("rows the callers committed: %s, want 8", got)
	}
	if got := c.value(t, "SELECT count(*)::text FROM realtime.messages"); got != "0" {
		t.Errorf("messages: %s, want 0", got)
	}
}

// broadcast_changes from a row trigger sends what the trigger saw:
// to_jsonb of NEW and OLD is the oracle.
func TestBroadcastChanges(t *testing.T) {
	_, c := ensured(t)
	c.exec(t, `CREATE TABLE todos (id int PRIMARY KEY, title text, done boolean, tags text[], due timestamptz, meta jsonb);
		CREATE TABLE seen (n serial, op text, new jsonb, old jsonb);
		CREATE FUNCTION todos_changes() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		  INSERT INTO seen (op, new, old) VALUES (TG_OP, to_jsonb(NEW), to_jsonb(OLD));
		  PERFORM realtime.broadcast_changes('todos:' || coalesce(NEW.id, OLD.id)::text, TG_OP, TG_OP,
		    TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
		  RETURN NULL;
		END $$;
		CREATE TRIGGER t AFTER INSERT OR UPDATE OR DELETE ON todos FOR EACH ROW EXECUTE FUNCTION todos_changes()`)
	c.exec(t, `INSERT INTO todos VALUES (7, 'milk', false, '{a,"b c"}', '2026-01-02 03:04:05.678+00', '{"k":[1,null]}')`)
	c.exec(t, `UPDATE todos SET done = true, title = NULL WHERE id = 7`)
	c.exec(t, `DELETE FROM todos WHERE id = 7`)
	rows, err := c.Query(context.Background(), `SELECT s.op,
		m.topic = 'todos:7' AND m.event = s.op AND m.private AND m.extension = 'broadcast',
		m.payload = jsonb_build_object('old_record', s.old, 'record', s.new, 'operation', s.op,
			'table', 'todos', 'schema', 'public', 'id', m.id),
		m.payload::text
		FROM seen s JOIN realtime.messages m ON m.payload->>'operation' = s.op ORDER BY s.n`)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for rows.Next() {
		var op, payload string
		var meta, same bool
		if err := rows.Scan(&op, &meta, &same, &payload); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
		if !meta || !same {
			t.Errorf("%s: topic/event/private ok %v, payload as to_jsonb(NEW)/to_jsonb(OLD) %v: %s", op, meta, same, payload)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ops, []string{"INSERT", "UPDATE", "DELETE"}) {
		t.Errorf("messages for %v, want INSERT, UPDATE, DELETE", ops)
	}
}

// broadcast_changes refuses statement triggers and unknown operations
// with Supabase's texts, aborting the statement.
func TestBroadcastChangesRefuses(t *testing.T) {
	_, c := ensured(t)
	c.exec(t, `CREATE TABLE notes (id int);
		CREATE FUNCTION notes_changes() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		  PERFORM realtime.broadcast_changes('notes', TG_OP, TG_OP, TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD, TG_LEVEL);
		  RETURN NULL;
		END $$;
		CREATE TRIGGER t AFTER INSERT ON notes FOR EACH STATEMENT EXECUTE FUNCTION notes_changes()`)
	_, err := c.Exec(context.Background(), "INSERT INTO notes VALUES (1)")
	want := "Failed to process the row: function can only be triggered for each row, not for each statement"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("statement trigger: %v, want %q", err, want)
	}
	_, err = c.Exec(context.Background(), `SELECT realtime.broadcast_changes('t', 'e', 'TRUNCATE', 'x', 'public', NULL::record, NULL::record)`)
	want = "Failed to process the row: Unexpected operation type: TRUNCATE"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("TRUNCATE: %v, want %q", err, want)
	}
	if got := c.value(t, "SELECT count(*)::text FROM notes"); got != "0" {
		t.Errorf("the statement went through: %s rows", got)
	}
}
