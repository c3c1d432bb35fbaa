package wal

import (
	"testing"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// subRegisterSeeds are SubRegister frames as a node sends its channels'
// bindings to the database's owner.
func subRegisterSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, fs := range []string{"id=eq.5", `title=in.(x,"Buy \"milk\"",a\,b)`, "done=is.false,due=is.null", "id=gt.1,id=lte.9", "title=neq.x", "id=in.()", "id=isdistinct.5"} {
		s := &Subscription{ID: 7, Schema: "public", Table: "todos", Event: ParseEvent("*"), Columns: []string{"id", "title"},
			Role: "authenticated", Claims: `{"role":"authenticated","sub":"u1"}`, Filters: mustFilter(t, fs)}
		out = append(out, meshproto.Append(nil, &meshproto.SubRegister{DB: "db1", Replace: true, Subs: []meshproto.Sub{wireSub(s)}}))
	}
	return out
}

// FuzzSubRegister takes a SubRegister frame from a peer as the owner
// does: each subscription is refused or converted, converts back to the
// same wire form, and is matched against changes of every kind, which
// compiles its filters against the table's columns, without panicking.
func FuzzSubRegister(f *testing.F) {
	for _, b := range subRegisterSeeds(f) {
		f.Add(b)
	}
	changes := codecSamples()
	f.Fuzz(func(t *testing.T, frame []byte) {
		fr, _, err := meshproto.Decode(frame, 0)
		if err != nil {
			return
		}
		reg, ok := fr.(*meshproto.SubRegister)
		if !ok {
			return
		}
		m := NewMatcher()
		for i := range reg.Subs {
			s, err := subOf("n2", &reg.Subs[i])
			if err != nil {
				continue
			}
			w := wireSub(s)
			if again, err := subOf("n2", &w); err != nil || len(again.Filters) != len(s.Filters) || again.Event != s.Event {
				t.Fatalf("subscription %+v does not survive the wire again: %+v, %v", s, again, err)
			}
			m.Add(s)
		}
		for _, c := range changes {
			for _, s := range m.Match(c, nil) {
				if s.Schema != c.Schema || s.Table != c.Table {
					t.Fatalf("a subscription of %s.%s matched a change of %s.%s", s.Schema, s.Table, c.Schema, c.Table)
				}
			}
		}
	})
}
