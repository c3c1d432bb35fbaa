package wal

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// jsonCases are json texts whose jsonb form the tests take from Postgres.
var jsonCases = []string{
	`{"b" : 1 , "b":2}`,
	`{"b": 1, "a": [1, 2.50, {"c": null}], "a": "dup"}`,
	`  [1 ,  {"x":"y"} ]  `,
	`{"a":{"b":{"c":[]}}, "a":2}`,
	`{"bb":1,"a":2,"ccc":3,"aa":4,"b":5,"é":6,"z":7}`,
	`{"k": {"z": 1, "y": {"b": [true, false, null], "a": {}}, "x": [{"d": 1, "c": 2}, []]}}`,
	`{"a":1,"a":{"x":1},"a":[1]}`,
	`"str"`, `null`, `true`, `false`, `0`, `[]`, `{}`, `[[]]`, `[{}]`,
	`"\u00e9\u0041\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t \u0001 \u001f \u007f"`,
	`{"\u00e9": 1, "é": 2, "\u0061": 3}`,
	`[1e3, 1E+2, 1.5e1, 1.50e1, 1.5e-3, 12e-5, -0, -0.0, 0.000, -1.25, 1e0, 0e10, 1.0, 100, 123456789012345678901234567890.123456789]`,
	`[1e-7, 5e-1, 1.5E+30, -2e2, 0.1e1, 10e-1]`,
	"{\n\t\"a\" :\r\n [ 1 , 2 ]\n}",
	`[` + strings.Repeat(`{"a":[`, 60) + `1` + strings.Repeat(`]}`, 60) + `]`,
}

// The json columns' values are what to_jsonb gives, byte for byte.
func TestJSONBMatchesPostgres(t *testing.T) {
	pg := pgtest.Shared(t)
	conn := connect(t, pg.URL())
	cases := append(jsonCases, `[0e999999, 1e1000, 1.5e-1000]`,
		`"a\u0000b"`, `[1e131072]`, `[1e-16384]`, `"\ud800"`, `"\udc00\ud800"`) // to_jsonb refuses these
	for _, in := range cases {
		var want string
		err := conn.QueryRow(context.Background(), "SELECT to_jsonb($1::json)::text", in).Scan(&want)
		if err != nil {
			want = strings.TrimSpace(in) // sent as stored
		}
		if got := string(appendJSONB(nil, []byte(in))); got != want {
			t.Errorf("%s:\n got %s\nwant %s", in, got, want)
		}
	}
}

// Past the budget (twice the text and jsonSlack), the value is sent as it
// is stored rather than as the megabytes its exponents would make.
func TestJSONBBudget(t *testing.T) {
	in := "[" + strings.Repeat("1e100000,", 100) + "1]"
	if got := string(appendJSONB(nil, []byte(in))); got != in {
		t.Errorf("a ballooning value: got %d bytes", len(got))
	}
	deep := strings.Repeat("[", jsonMaxDepth+2) + strings.Repeat("]", jsonMaxDepth+2)
	if got := string(appendJSONB(nil, []byte(deep))); got != deep {
		t.Errorf("too deep: got %.20s…", got)
	}
}

// FuzzJSONB: any valid JSON comes out valid, the same value (last of
// duplicate keys), and unchanged when converted again.
func FuzzJSONB(f *testing.F) {
	for _, s := range jsonCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) || !utf8.Valid(in) {
			return
		}
		out := appendJSONB(nil, in)
		if !json.Valid(out) {
			t.Fatalf("%q: invalid JSON %q", in, out)
		}
		if !pgtest.SameJSON(in, out) {
			t.Fatalf("%q: not the same value: %q", in, out)
		}
		if again := appendJSONB(nil, out); string(again) != string(out) {
			t.Fatalf("%q: %q, then %q", in, out, again)
		}
	})
}
