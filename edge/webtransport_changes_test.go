package edge

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// TestWebTransportChanges: a WebTransport session subscribes to
// postgres_changes through the same join, bindings and delivery code as a
// WebSocket client on the same channel: the same join reply ids, the same
// system message, and each committed row reaches both as the same frame.
func TestWebTransportChanges(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE todos (id bigint PRIMARY KEY, title text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES`)
	ts := serveWT(t, startChangesServer(t, pg, "edge_wt", nil))
	wt, wsc := ts.connectWT(t), ts.connect(t)

	bindings := `[{"event":"INSERT","schema":"public","table":"todos"},{"event":"*","schema":"public","table":"todos","filter":"id=eq.2"}]`
	wtIDs, wtSys := joinWithBindings(t, wt, "1", "realtime:todos", bindings)
	wsIDs, wsSys := joinWithBindings(t, wsc, "1", "realtime:todos", bindings)
	if wtSys != `"Subscribed to PostgreSQL"` || wsSys != wtSys {
		t.Fatalf("system messages: WebTransport %s, WebSocket %s", wtSys, wsSys)
	}
	if len(wtIDs) != 2 || fmt.Sprint(wtIDs) != fmt.Sprint(wsIDs) {
		t.Fatalf("binding ids: WebTransport %v, WebSocket %v", wtIDs, wsIDs)
	}

	pg.Exec(`INSERT INTO todos VALUES (1, 'one'), (2, 'two')`)
	pg.Exec(`UPDATE todos SET title = 'deux' WHERE id = 2`)
	for _, want := range []struct {
		typ string
		ids []uint64
		rec string
	}{
		{"INSERT", wtIDs[:1], `{"id":1,"title":"one"}`},
		{"INSERT", wtIDs, `{"id":2,"title":"two"}`},
		{"UPDATE", wtIDs[1:], `{"id":2,"title":"deux"}`},
	} {
		wtCh, wtF := nextChange(t, wt)
		_, wsF := nextChange(t, wsc)
		if wtCh.Data.Type != want.typ || fmt.Sprint(wtCh.IDs) != fmt.Sprint(want.ids) || !jsonEq(wtCh.Data.Record, want.rec) {
			t.Errorf("WebTransport got %s %v %s, want %s %v %s", wtCh.Data.Type, wtCh.IDs, wtCh.Data.Record, want.typ, want.ids, want.rec)
		}
		if !bytes.Equal(wtF.Raw, wsF.Raw) {
			t.Errorf("the transports got different frames:\nWebTransport %s\nWebSocket    %s", wtF.Raw, wsF.Raw)
		}
	}
	if v, _ := ts.metric(`meshcast_messages_out_total{transport="webtransport"}`); v == "" || v == "0" {
		t.Errorf("no WebTransport messages out counted: %q", v)
	}
}
