package history

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestAppendMeta(t *testing.T) {
	cases := []struct{ meta, want string }{
		{"", `{"pos":"9f3c000000000001:42"}`},
		{"{}", `{"pos":"9f3c000000000001:42"}`},
		{`{"id":"x"}`, `{"pos":"9f3c000000000001:42","id":"x"}`},
		{` { "id" : 1 } `, `{"pos":"9f3c000000000001:42","id" : 1 }`},
	}
	for _, c := range cases {
		got := string(AppendMeta(nil, []byte(c.meta), 0x9f3c000000000001, 42))
		if got != c.want {
			t.Errorf("AppendMeta(%q) = %s, want %s", c.meta, got, c.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("AppendMeta(%q) = %s: not JSON", c.meta, got)
		}
		s, o, ok := MetaPos([]byte(got))
		if !ok || s != 0x9f3c000000000001 || o != 42 {
			t.Errorf("MetaPos(%s) = %x %d %v", got, s, o, ok)
		}
	}
}

func TestParsePos(t *testing.T) {
	for _, bad := range []string{"", "9f3c:1", "9f3c000000000001:0", "9f3c000000000001:", "9F3C000000000001:1",
		"9f3c000000000001:+1", "9f3c000000000001;1", "9f3c000000000001:1x", "9f3c000000000001:99999999999999999999"} {
		if _, _, ok := ParsePos(bad); ok {
			t.Errorf("ParsePos(%q) accepted", bad)
		}
	}
}

func TestParseVector(t *testing.T) {
	v, err := ParseVector(json.RawMessage(`{"9f3c000000000001": 42, "db": "0/16B3748:3", "00000000000000ff": 0}`))
	if err != nil || !reflect.DeepEqual(v, map[uint64]uint64{0x9f3c000000000001: 42, 0xff: 0}) {
		t.Fatalf("ParseVector = %v, %v", v, err)
	}
	if got := string(AppendVector(nil, v)); got != `{"00000000000000ff":0,"9f3c000000000001":42}` {
		t.Fatalf("AppendVector = %s", got)
	}
	if v, err := ParseVector(nil); v != nil || err != nil {
		t.Fatalf("absent: %v %v", v, err)
	}
	for _, bad := range []string{`[]`, `{"9f3c000000000001":-1}`, `{"9f3c000000000001":"1"}`, `{"9f3c000000000001":1.5}`, `"x"`} {
		if _, err := ParseVector(json.RawMessage(bad)); err == nil {
			t.Errorf("ParseVector(%s) accepted", bad)
		}
	}
}

func FuzzParseVector(f *testing.F) {
	f.Add([]byte(`{"9f3c000000000001": 42, "db": "0/16B3748:3"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseVector(b)
		if err != nil {
			return
		}
		if len(v) > MaxVector {
			t.Fatalf("%d streams", len(v))
		}
		w, err := ParseVector(AppendVector(nil, v))
		if err != nil || (len(v) > 0 && !reflect.DeepEqual(v, w)) {
			t.Fatalf("round trip: %v -> %v (%v)", v, w, err)
		}
	})
}

func FuzzMetaPos(f *testing.F) {
	f.Add([]byte(`{"pos":"9f3c000000000001:42","id":"x"}`))
	f.Add([]byte(`{"pos":"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, o, ok := MetaPos(b)
		if !ok {
			return
		}
		if o == 0 {
			t.Fatal("offset 0 accepted")
		}
		if s2, o2, ok2 := MetaPos(AppendMeta(nil, nil, s, o)); !ok2 || s2 != s || o2 != o {
			t.Fatalf("round trip %x:%d", s, o)
		}
	})
}
