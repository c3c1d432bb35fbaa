package bench

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestAppendKind3(t *testing.T) {
	// The capture from protocol.md §1: 03 01 01 0e 06 00 01 "6" "7" "realtime:room1" "cursor" "" {"x":42,"s":"é"}
	payload := []byte(`{"x":42,"s":"é"}`)
	got, err := AppendKind3(nil, "6", 7, "realtime:room1", "cursor", "", EncJSON, payload)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{3, 1, 1, 0x0e, 6, 0, 1}, "67realtime:room1cursor"...)
	want = append(want, payload...)
	if !bytes.Equal(got, want) {
		t.Fatalf("kind 3:\n got %q\nwant %q", got, want)
	}

	got, err = AppendKind3([]byte{0xff}, "1", 1234, "realtime:bench", "m", `{"persist":true}`, EncBytes, []byte{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	want = append([]byte{0xff, 3, 1, 4, 14, 1, 16, 0}, `11234realtime:benchm{"persist":true}`...)
	want = append(want, 0, 1)
	if !bytes.Equal(got, want) {
		t.Fatalf("kind 3 with meta:\n got %q\nwant %q", got, want)
	}

	long := string(bytes.Repeat([]byte("a"), 256))
	if _, err := AppendKind3(nil, "1", 1, long, "m", "", EncJSON, nil); err == nil {
		t.Fatal("256-byte topic accepted")
	}
}

func TestParseKind4(t *testing.T) {
	frame := append([]byte{4, 14, 1, 2, 1}, `realtime:benchm{}{"t":1,"s":2}`...)
	k, err := ParseKind4(frame)
	if err != nil {
		t.Fatal(err)
	}
	if string(k.Topic) != "realtime:bench" || string(k.Event) != "m" || string(k.Meta) != "{}" || k.Enc != 1 || string(k.Payload) != `{"t":1,"s":2}` {
		t.Fatalf("decoded %+v", k)
	}
	for _, bad := range [][]byte{nil, {4, 1, 1}, {4, 14, 1, 0, 1, 'r'}, append([]byte{3, 0, 0, 0, 1}, "{}"...)} {
		if _, err := ParseKind4(bad); err == nil {
			t.Errorf("ParseKind4(%q) accepted", bad)
		}
	}
}

func TestPhoenixTextFrames(t *testing.T) {
	join := AppendPhxJoin(nil, "1", "realtime:bench")
	wantJoin := `["1","1","realtime:bench","phx_join",{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false}}]`
	if string(join) != wantJoin {
		t.Fatalf("join:\n got %s\nwant %s", join, wantJoin)
	}
	if hb := AppendPhxHeartbeat(nil, 9); string(hb) != `[null,"9","phoenix","heartbeat",{}]` {
		t.Fatalf("heartbeat %s", hb)
	}
	bc := AppendPhxBroadcast(nil, "1", 5, "realtime:bench", "m", []byte(`{"t":1}`))
	if string(bc) != `["1","5","realtime:bench","broadcast",{"type":"broadcast","event":"m","payload":{"t":1}}]` {
		t.Fatalf("broadcast %s", bc)
	}
	var arr []any
	if err := json.Unmarshal(bc, &arr); err != nil || len(arr) != 5 {
		t.Fatalf("broadcast not a 5-array: %v", err)
	}
	r, err := parsePhxFrame([]byte(`["1","1","realtime:bench","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]`))
	if err != nil || r.Ref == nil || *r.Ref != "1" || r.Event != "phx_reply" || r.Status != "ok" || r.Topic != "realtime:bench" {
		t.Fatalf("reply parsed as %+v, %v", r, err)
	}
}

func TestCentrifugoFrames(t *testing.T) {
	if s := AppendCentConnect(nil, 1); string(s) != `{"id":1,"connect":{}}` {
		t.Fatal(string(s))
	}
	if s := AppendCentSubscribe(nil, 2, "bench:room"); string(s) != `{"id":2,"subscribe":{"channel":"bench:room"}}` {
		t.Fatal(string(s))
	}
	if s := AppendCentPublish(nil, 3, "bench:room", []byte(`{"t":1}`)); string(s) != `{"id":3,"publish":{"channel":"bench:room","data":{"t":1}}}` {
		t.Fatal(string(s))
	}
	var lines []string
	forEachLine([]byte("{}\n{\"push\":{}}\n\n  {\"id\":3}  \n"), func(l []byte) { lines = append(lines, string(l)) })
	if len(lines) != 3 || lines[0] != "{}" || lines[2] != `{"id":3}` {
		t.Fatalf("lines %q", lines)
	}
}

// recorder is a visitor that remembers what scan found.
type recorder struct{ samples, odd, replies []string }

func (r *recorder) sample(b []byte)         { r.samples = append(r.samples, string(b)) }
func (r *recorder) unexpected(frame []byte) { r.odd = append(r.odd, string(frame)) }
func (r *recorder) reply(frame []byte)      { r.replies = append(r.replies, string(frame)) }

func TestScan(t *testing.T) {
	phx := &phoenix{topic: "realtime:bench", event: "m"}
	var rec recorder
	phx.scan(1, []byte(`[null,null,"realtime:bench","broadcast",{"type":"broadcast","event":"m","payload":{"t":1,"s":1}}]`), &rec)
	phx.scan(1, []byte(`[null,"2","phoenix","phx_reply",{"status":"ok","response":{}}]`), &rec)
	phx.scan(1, []byte(`["1","1","realtime:bench","phx_close",{}]`), &rec)
	phx.scan(2, append([]byte{4, 14, 1, 0, 1}, `realtime:benchm{"t":1,"s":2}`...), &rec)
	if len(rec.samples) != 2 || rec.samples[1] != `{"t":1,"s":2}` || len(rec.odd) != 1 {
		t.Fatalf("phoenix scan: %+v", rec)
	}

	cent := &centrifugo{channel: "bench:room"}
	rec = recorder{}
	cent.scan(1, []byte("{}"), &rec)
	cent.scan(1, []byte(`{"push":{"channel":"bench:room","pub":{"data":{"t":1,"s":1}}}}`+"\n"+`{"push":{"channel":"bench:room","pub":{"data":{"t":2,"s":2}}}}`), &rec)
	cent.scan(1, []byte(`{"id":5,"publish":{}}`), &rec)
	cent.scan(1, []byte(`{"id":6,"error":{"code":103,"message":"permission denied"}}`), &rec)
	if len(rec.replies) != 1 || len(rec.samples) != 2 || len(rec.odd) != 1 {
		t.Fatalf("centrifugo scan: %+v", rec)
	}
}
