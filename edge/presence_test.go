package edge

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// presenceMetas decodes a presence_state payload, or the joins or leaves of
// a presence_diff, as key → metas.
func presenceMetas(raw []byte) (map[string][]map[string]any, error) {
	var m map[string]struct {
		Metas []map[string]any `json:"metas"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	out := make(map[string][]map[string]any, len(m))
	for k, v := range m {
		out[k] = v.Metas
	}
	return out, nil
}

// diffParts splits a presence_diff payload into joins and leaves.
func diffParts(raw []byte) (joins, leaves map[string][]map[string]any, err error) {
	var d struct {
		Joins  json.RawMessage `json:"joins"`
		Leaves json.RawMessage `json:"leaves"`
	}
	if err = json.Unmarshal(raw, &d); err != nil {
		return nil, nil, err
	}
	if joins, err = presenceMetas(d.Joins); err != nil {
		return nil, nil, err
	}
	leaves, err = presenceMetas(d.Leaves)
	return joins, leaves, err
}

func trackFrame(joinRef, ref, topic, payload string) string {
	return `["` + joinRef + `","` + ref + `","` + topic + `","presence",{"type":"presence","event":"track","payload":` + payload + `}]`
}

func TestPresenceTrackUpdateUntrack(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.connect(t), ts.connect(t)
	for key, c := range map[string]*wsClient{"ka": a, "kb": b} {
		c.write(joinFrame("1", "realtime:room1", `{"presence":{"key":"`+key+`","enabled":true}}`))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join %s: %s", key, f)
		}
		if f := c.next(); f.Event != "presence_state" || !jsonEq(f.Payload, `{}`) {
			t.Fatalf("join %s: %s, want an empty presence_state", key, f)
		}
	}

	// Track: a diff with the join reaches both subscribers, the tracker
	// included, and the tracker gets its reply.
	a.write(trackFrame("1", "2", "realtime:room1", `{"online_at":"now"}`))
	var ref1 string
	for name, c := range map[string]*wsClient{"tracker": a, "other": b} {
		f := c.next()
		if f.Event != "presence_diff" || f.JoinRef != nil || f.Ref != nil {
			t.Fatalf("%s got %s, want a presence_diff with null refs", name, f)
		}
		joins, leaves, err := diffParts(f.Payload)
		if err != nil || len(joins["ka"]) != 1 || len(joins) != 1 || len(leaves) != 0 {
			t.Fatalf("%s: diff %s (%v), want one join of ka", name, f.Payload, err)
		}
		m := joins["ka"][0]
		r, _ := m["phx_ref"].(string)
		if m["online_at"] != "now" || r == "" || len(m) != 2 {
			t.Errorf("%s: meta %v, want online_at and phx_ref", name, m)
		}
		if ref1 == "" {
			ref1 = r
		} else if r != ref1 {
			t.Errorf("%s: phx_ref %q, the other subscriber saw %q", name, r, ref1)
		}
	}
	if f := a.next(); !jsonEq(f.Raw, `["1","2","realtime:room1","phx_reply",{"status":"ok","response":{}}]`) {
		t.Errorf("track reply = %s", f)
	}

	// Tracking the same payload again changes nothing.
	a.write(trackFrame("1", "3", "realtime:room1", `{"online_at":"now"}`))
	if f := a.next(); refOf(f.Ref) != "3" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("repeated track: %s, want just the ok reply", f)
	}
	b.write(heartbeatFrame)
	if f := b.next(); !isHeartbeatReply(f) {
		t.Errorf("repeated track reached the other subscriber: %s", f)
	}

	// An update is one diff: the new meta with phx_ref_prev, and a leave of
	// the old ref.
	a.write(trackFrame("1", "4", "realtime:room1", `{"online_at":"later"}`))
	var ref2 string
	for name, c := range map[string]*wsClient{"tracker": a, "other": b} {
		f := c.next()
		if f.Event != "presence_diff" {
			t.Fatalf("%s got %s, want a presence_diff", name, f)
		}
		joins, leaves, err := diffParts(f.Payload)
		if err != nil || len(joins) != 1 || len(joins["ka"]) != 1 || len(leaves) != 1 || len(leaves["ka"]) != 1 {
			t.Fatalf("%s: update diff %s (%v), want one join and one leave of ka", name, f.Payload, err)
		}
		j, l := joins["ka"][0], leaves["ka"][0]
		ref2, _ = j["phx_ref"].(string)
		if j["online_at"] != "later" || j["phx_ref_prev"] != ref1 || ref2 == "" || ref2 == ref1 {
			t.Errorf("%s: update join %v, want online_at later, a new phx_ref and phx_ref_prev %q", name, j, ref1)
		}
		if l["online_at"] != "now" || l["phx_ref"] != ref1 {
			t.Errorf("%s: update leave %v, want the old meta with phx_ref %q", name, l, ref1)
		}
	}
	if f := a.next(); refOf(f.Ref) != "4" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("update reply = %s", f)
	}

	// A late joiner's presence_state holds the current meta.
	late := ts.connect(t)
	late.write(joinFrame("9", "realtime:room1", `{"presence":{"key":"kl","enabled":true}}`))
	if f := late.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("late join: %s", f)
	}
	f := late.next()
	if !jsonEq(f.Raw, `["9",null,"realtime:room1","presence_state",{"ka":{"metas":[{"online_at":"later","phx_ref":"`+ref2+`"}]}}]`) {
		t.Errorf("late joiner's presence_state = %s", f)
	}

	// Untrack: a leave of the current ref.
	a.write(`["1","5","realtime:room1","presence",{"type":"presence","event":"untrack"}]`)
	for name, c := range map[string]*wsClient{"tracker": a, "other": b, "late": late} {
		f := c.next()
		if f.Event != "presence_diff" || !jsonEq(f.Payload, `{"joins":{},"leaves":{"ka":{"metas":[{"online_at":"later","phx_ref":"`+ref2+`"}]}}}`) {
			t.Errorf("%s: after untrack got %s", name, f)
		}
	}
	if f := a.next(); refOf(f.Ref) != "5" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("untrack reply = %s", f)
	}
}

func TestPresenceLeaveOnSocketDrop(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.connect(t), ts.connect(t)
	for _, c := range []*wsClient{a, b} {
		c.write(joinFrame("1", "realtime:room1", `{"presence":{"key":"","enabled":true}}`))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", f)
		}
		c.next() // presence_state
	}
	a.write(trackFrame("1", "2", "realtime:room1", `{"user":"alice"}`))
	f := b.next()
	joins, _, err := diffParts(f.Payload)
	if f.Event != "presence_diff" || err != nil || len(joins) != 1 {
		t.Fatalf("b got %s, want the join of a", f)
	}
	var key, phxRef string
	for k, metas := range joins {
		key, phxRef = k, metas[0]["phx_ref"].(string)
	}
	// An empty presence key gets a server-made UUID.
	if len(key) != 36 || key[8] != '-' || key[14] != '4' {
		t.Errorf("generated presence key %q is not a UUIDv4", key)
	}

	// A leave sends the leave diff to the others too.
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:room1", `{"presence":{"key":"kc"}}`))
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}
	c.write(trackFrame("1", "2", "realtime:room1", `{"user":"carol"}`))
	f = b.next()
	joins, _, _ = diffParts(f.Payload)
	if len(joins["kc"]) != 1 {
		t.Fatalf("b got %s, want the join of kc", f)
	}
	carolRef := joins["kc"][0]["phx_ref"].(string)
	c.write(`["1","3","realtime:room1","phx_leave",{}]`)
	f = b.next()
	if want := `{"joins":{},"leaves":{"kc":{"metas":[{"user":"carol","phx_ref":"` + carolRef + `"}]}}}`; f.Event != "presence_diff" || !jsonEq(f.Payload, want) {
		t.Errorf("after c left b got %s, want leaves %s", f, want)
	}

	a.nc.Close()
	f = b.next()
	want := `{"joins":{},"leaves":{"` + key + `":{"metas":[{"user":"alice","phx_ref":"` + phxRef + `"}]}}}`
	if f.Event != "presence_diff" || !jsonEq(f.Payload, want) {
		t.Errorf("after a's socket dropped b got %s, want leaves %s", f, want)
	}
}

func TestPresenceSameKeyTwoJoins(t *testing.T) {
	ts := startServer(t, nil)
	x, y, z := ts.connect(t), ts.connect(t), ts.connect(t)
	for i, c := range []*wsClient{x, y} {
		c.write(joinFrame("1", "realtime:room1", `{"presence":{"key":"u","enabled":true}}`))
		if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
			t.Fatalf("join: %s", f)
		}
		c.next() // presence_state
		c.write(trackFrame("1", "2", "realtime:room1", `{"tab":`+string(rune('1'+i))+`}`))
		for {
			f := c.next()
			if f.Event == "phx_reply" {
				if jsonField(f.Payload, "status") != `"ok"` {
					t.Fatalf("track: %s", f)
				}
				break
			}
		}
	}
	z.write(joinFrame("1", "realtime:room1", `{"presence":{"key":"z","enabled":true}}`))
	if f := z.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}
	f := z.next()
	state, err := presenceMetas(f.Payload)
	if f.Event != "presence_state" || err != nil {
		t.Fatalf("got %s, want presence_state", f)
	}
	metas := state["u"]
	if len(state) != 1 || len(metas) != 2 {
		t.Fatalf("presence_state %s, want key u with 2 metas", f.Payload)
	}
	if metas[0]["tab"] != 1.0 || metas[1]["tab"] != 2.0 || metas[0]["phx_ref"] == metas[1]["phx_ref"] {
		t.Errorf("metas %v, want tab 1 and tab 2 with distinct phx_refs", metas)
	}
}

func TestPresenceBadPushes(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect(t)
	c.write(joinFrame("1", "realtime:room1", `{"presence":{"key":"k","enabled":true}}`))
	if f := c.next(); jsonField(f.Payload, "status") != `"ok"` {
		t.Fatalf("join: %s", f)
	}
	c.next() // presence_state

	for i, payload := range []string{`"x"`, `[1,2]`, `42`, `null`} {
		r := string(rune('a' + i))
		c.write(trackFrame("1", r, "realtime:room1", payload))
		f := c.next()
		if !jsonEq(f.Raw, `["1","`+r+`","realtime:room1","phx_reply",{"status":"error","response":{"reason":"Presence track payload must be a map"}}]`) {
			t.Errorf("track %s: %s", payload, f)
		}
	}

	// A missing event is an ok no-op; an unknown one is an error.
	c.write(`["1","m","realtime:room1","presence",{"type":"presence"}]`)
	if f := c.next(); refOf(f.Ref) != "m" || !jsonEq(f.Payload, `{"status":"ok","response":{}}`) {
		t.Errorf("presence without event: %s", f)
	}
	c.write(`["1","u","realtime:room1","presence",{"type":"presence","event":"dance"}]`)
	if f := c.next(); refOf(f.Ref) != "u" || !jsonEq(f.Payload, `{"status":"error","response":{}}`) {
		t.Errorf("unknown presence event: %s", f)
	}
	// The event is case-insensitive.
	c.write(`["1","T","realtime:room1","presence",{"type":"presence","event":"TRACK","payload":{"a":1}}]`)
	if f := c.next(); f.Event != "presence_diff" {
		t.Errorf("TRACK: got %s, want a presence_diff", f)
	}
	if f := c.next(); refOf(f.Ref) != "T" || jsonField(f.Payload, "status") != `"ok"` {
		t.Errorf("TRACK reply: %s", f)
	}
}

// A leave encodes and fans out presence leaves under its topic's lock
// only: other topics (and the mesh's deliveries, which look topics up)
// are not held up behind a disconnect storm.
func TestLeaveDoesNotHoldTheHub(t *testing.T) {
	ts := startServer(t, nil)
	inLeave, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	// Set before any connection goroutine starts, which orders it before
	// their reads of it.
	ts.hub.leaveHook = func() { once.Do(func() { close(inLeave); <-release }) }
	a, b := ts.connect(t), ts.connect(t)
	a.write(joinFrame("1", "realtime:a", `{"presence":{"key":"a"}}`))
	a.next()
	b.write(joinFrame("1", "realtime:b", `{}`))
	b.next()
	a.nc.Close()
	<-inLeave
	looked := make(chan bool, 1)
	go func() { looked <- ts.hub.lookup(topicKey{name: "realtime:b"}) != nil }()
	select {
	case ok := <-looked:
		if !ok {
			t.Error("topic b not found")
		}
	case <-time.After(testWait):
		t.Error("a topic lookup waited for another topic's leave")
	}
	close(release)
}
