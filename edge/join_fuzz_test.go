package edge

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/edge/history"
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wal"
	"github.com/meshcast/meshcast/wire/phx"
)

// FuzzJoinConfig takes a phx_join payload the way join does on a node
// without a validator: the config, the token it picks, and each
// postgres_changes binding to a subscription. A binding is refused with
// Supabase's text or a filter error, never a panic; what is accepted has a
// schema and a table key; the join reply echoing the bindings is JSON.
func FuzzJoinConfig(f *testing.F) {
	for _, s := range joinPayloadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		p, err := phx.DecodeJoin(payload)
		if err != nil {
			return
		}
		_ = channelToken(p.Token(), "apikey")
		_ = p.Config.PresenceKey()
		for _, raw := range []json.RawMessage{p.Config.Recover.PostgresChanges, p.Config.PostgresChangesOptions.Recover} {
			if isAbsent(raw) {
				continue
			}
			// A change position reads back as the text it was, or is refused.
			pos, err := parseChangePos(raw)
			var text string
			if err == nil && (json.Unmarshal(raw, &text) != nil || pos.String() != text) {
				t.Fatalf("recover %s: read as %v", raw, pos)
			}
			if err != nil && len(err.Error()) > 200 {
				t.Fatalf("recover %s: error of %d bytes", raw, len(err.Error()))
			}
		}
		bindings := make([]binding, len(p.Config.PostgresChanges))
		for i, raw := range p.Config.PostgresChanges {
			bindings[i] = binding{raw: raw, id: uint64(i) + 1}
			b, err := parseBinding(raw)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "Unable to subscribe to changes with given parameters") {
					t.Fatalf("binding %s: error %q", raw, err)
				}
				continue
			}
			sub, err := subscriptionOf(b, "authenticated", `{"role":"authenticated"}`)
			if err != nil {
				var fe *wal.FilterError
				if !errors.As(err, &fe) || err.Error() == "" {
					t.Fatalf("binding %s: error %T %v", raw, err, err)
				}
				continue
			}
			if sub.Schema == "" {
				t.Fatalf("binding %s: no schema", raw)
			}
			_ = subKey(sub)
			bindings[i].sub = sub
		}
		// The recover vector, its "db" entry, and the reply's positions.
		vec := p.Config.Recover.Broadcast
		if len(vec) == 0 {
			vec = p.Config.Broadcast.Recover
		}
		v, _ := history.ParseVector(vec)
		db, err := parseDBEntry(vec)
		if db != nil && err != nil {
			t.Fatalf("db entry %s: %v and %v", vec, db, err)
		}
		jp := joinPositions{broadcast: v, asked: true, ok: err == nil}
		if db != nil {
			jp.db = db.String()
		}
		if pos := appendJoinPositions(joinOK, jp); !json.Valid(pos) {
			t.Fatalf("positions %s are not JSON", pos)
		}
		reply := joinReplyChanges(bindings)
		var r struct {
			PostgresChanges []map[string]json.RawMessage `json:"postgres_changes"`
		}
		if err := json.Unmarshal(reply, &r); err != nil || len(r.PostgresChanges) != len(bindings) {
			t.Fatalf("join reply %s: %v", reply, err)
		}
		for i, b := range r.PostgresChanges {
			var id uint64
			if json.Unmarshal(b["id"], &id) != nil || id != uint64(i)+1 {
				t.Fatalf("join reply %s: binding %d has id %s", reply, i, b["id"])
			}
		}
	})
}

var joinPayloadSeeds = []string{
	`{"config":{"broadcast":{"self":true,"ack":true},"presence":{"key":"k1","enabled":true},"postgres_changes":[{"event":"INSERT","schema":"public","table":"todos"},{"event":"*","schema":"public","table":"todos","filter":"id=eq.1"}],"private":false},"access_token":"eyJhbGciOiJIUzI1NiJ9.e30.sig","version":"realtime-js/2.119.1"}`,
	`{"config":{"postgres_changes":[{"event":"UPDATE","schema":"public","table":"todos","filter":"title=in.(a,\"b,c\")","select":["id","title"]},{"event":"DELETE","table":"todos","select":"id, title,*"}]}}`,
	`{"config":{"postgres_changes":[{"event":5,"schema":"public"},{"filter":"x=bad.1"},"str",[1],null,{"select":7},{"filter":"id=gt.1,done=not.is.null,name=neq.\"a,b\""}]}}`,
	`{"config":{"broadcast":{"self":"true"},"presence":{"key":{"a":1}},"private":"TRUE"},"user_token":"sb_publishable_x"}`,
	`{"config":{"postgres_changes":[{}]}}`,
	`{"config":{"postgres_changes":[ { "event" : "*" , "schema" : "public" } ]}}`,
	`{"config":{"postgres_changes":[{"event":"*","schema":"public"}],"recover":{"broadcast":{"00000000000000ab":3},"postgres_changes":"0/16B3748:3"}}}`,
	`{"config":{"postgres_changes":[{"event":"*","schema":"public"}],"postgres_changes_options":{"recover":"1/0:0"},"recover":{"postgres_changes":42}}}`,
	`{"config":{"private":true,"recover":{"broadcast":{"00000000000000aa":3,"db":"0/16B3748:3"}},"broadcast":{"recover":{"db":"16/B374D848:0"}}}}`,
}

// FuzzPresenceTrack takes a presence push as a track does: a payload that
// decodes to an object becomes the meta of an entry, and the
// presence_state and presence_diff clients get are JSON in which the meta
// reads back with its phx_ref.
func FuzzPresenceTrack(f *testing.F) {
	for _, s := range presenceSeeds {
		f.Add([]byte(s), "k1")
	}
	f.Fuzz(func(t *testing.T, payload []byte, key string) {
		p, err := phx.DecodePresence(payload)
		if err != nil || !phx.IsObject(p.Payload) {
			return
		}
		meta := compactJSON(p.Payload)
		var s presence.Set
		d := s.Track(presence.Entry{Owner: "n1", Holder: 1, Key: key, Ref: "F1", Meta: meta})
		d2 := s.Track(presence.Entry{Owner: "n2", Holder: 1, Key: key, Ref: "F2", Meta: meta})
		var want map[string]json.RawMessage
		if err := json.Unmarshal(meta, &want); err != nil {
			t.Fatalf("meta %s of payload %q: %v", meta, payload, err)
		}
		for _, frame := range [][]byte{presenceState(&s), presenceDiff(d), presenceDiff(d2)} {
			var got map[string]json.RawMessage
			if err := json.Unmarshal(frame, &got); err != nil {
				t.Fatalf("payload %q: presence frame %s: %v", payload, frame, err)
			}
		}
		var state map[string]struct {
			Metas []map[string]json.RawMessage `json:"metas"`
		}
		if err := json.Unmarshal(presenceState(&s), &state); err != nil {
			t.Fatal(err)
		}
		var metas []map[string]json.RawMessage
		for _, v := range state {
			metas = append(metas, v.Metas...)
		}
		if len(metas) != 2 {
			t.Fatalf("payload %q: state %s", payload, presenceState(&s))
		}
		for _, m := range metas {
			if r := string(m["phx_ref"]); r != `"F1"` && r != `"F2"` {
				t.Fatalf("payload %q: state %s", payload, presenceState(&s))
			}
			for k := range want {
				if _, ok := m[k]; !ok {
					t.Fatalf("payload %q: field %q lost in %s", payload, k, presenceState(&s))
				}
			}
		}
	})
}

var presenceSeeds = []string{
	`{"type":"presence","event":"track","payload":{"online_at":"now"}}`,
	`{"type":"presence","event":"track","payload":{"user":"é😀","phx_ref":"forged","n":[1,{"a":null}]}}`,
	`{"type":"presence","event":"track","payload":  { "spaced" : true }  }`,
	`{"type":"presence","event":"track","payload":[1]}`,
	`{"type":"presence","event":"untrack"}`,
}
