package edge

import (
	"testing"

	"github.com/meshcast/meshcast/wal"
)

// BenchmarkChangeGroups is the per-change grouping of DeliverChange for
// 1000 channels of one topic sharing one subscription (meshbench wal's
// fan-out shape on one node): it visits every channel once per change.
func BenchmarkChangeGroups(b *testing.B) {
	s := &Server{changeSubs: newChangeSubs()}
	sub := &wal.Subscription{ID: 7, Columns: []string{"id", "body"}}
	sh := &sharedSub{sub: sub, shape: shapeKey(sub.Columns), channels: map[*channel]struct{}{}}
	s.changeSubs.byID[sub.ID] = sh
	for range 1000 {
		ch := &channel{key: topicKey{name: "realtime:bench"}, bindings: []binding{{id: sub.ID, sub: sub, shared: sh}}}
		sh.channels[ch] = struct{}{}
	}
	ids := []uint64{sub.ID}
	c := &wal.Change{Kind: wal.Insert, Schema: "public", Table: "t"}
	b.ReportAllocs()
	for b.Loop() {
		if g := s.changeGroups(c, ids); len(g) != 1 || len(g[0].chans) != 1000 {
			b.Fatalf("%d groups", len(g))
		}
	}
}
