package phx

import "testing"

// A meta that looks like an object but is not JSON (a peer's, say) must
// not reach presence_state as it is: realtime-js would fail to parse the
// whole frame.
func TestAppendPresenceMetaRefusesInvalidObjects(t *testing.T) {
	for _, tc := range []struct{ meta, want string }{
		{`{"online_at":"now"}`, `{"online_at":"now","phx_ref":"r"}`},
		{` { "a" : 1 } `, `{"a" : 1,"phx_ref":"r"}`},
		{`{}`, `{"phx_ref":"r"}`},
		{`{]}`, `{"phx_ref":"r"}`},
		{`{"a":1,}`, `{"phx_ref":"r"}`},
		{`{"a":1},{"b":2}`, `{"phx_ref":"r"}`},
		{`[1]`, `{"phx_ref":"r"}`},
	} {
		if got := string(AppendPresenceMeta(nil, []byte(tc.meta), "r", "")); got != tc.want {
			t.Errorf("AppendPresenceMeta(%q) = %s, want %s", tc.meta, got, tc.want)
		}
	}
}
