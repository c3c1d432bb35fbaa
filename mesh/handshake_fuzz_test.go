package mesh

import (
	"bufio"
	"bytes"
	"reflect"
	"testing"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// FuzzDecodeMeta: a member's gossip metadata decodes to a member with an
// ID and a mesh address, which encodes back to the same member, or is
// refused.
func FuzzDecodeMeta(f *testing.F) {
	for _, m := range metaSeeds {
		f.Add(encodeMeta(m))
	}
	f.Add([]byte{metaVersion, '{', '}'})
	f.Add([]byte{2, '{', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if m.ID == "" || m.MeshAddr == "" {
			t.Fatalf("decodeMeta(%q) = %+v", b, m)
		}
		again, err := decodeMeta(encodeMeta(m))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("decodeMeta(%q) = %+v, re-encoded %+v (%v)", b, m, again, err)
		}
	})
}

var metaSeeds = []Member{
	{ID: "n1-1a2b3c", Name: "n1", Region: "iad", MeshAddr: "127.0.0.1:7947", ClientAddr: "127.0.0.1:4000"},
	{ID: "n2-zz", Name: "n2", Region: "fra", MeshAddr: "[::1]:7957", ClientAddr: ":4001", Draining: true, DB: "postgres://db", Reader: true},
}

// helloEKM stands for a TLS session's exported keying material.
var helloEKM = bytes.Repeat([]byte{7}, 32)

// FuzzHello takes the first frame of a lane as serveInbound does: only a
// Hello whose MAC the cluster key made for this lane, this role and this
// session passes, and a Hello that passes for one lane or role passes for
// no other.
func FuzzHello(f *testing.F) {
	n := &Node{self: Member{ID: "n1-1a2b3c", Region: "iad"}, incarnation: 99, meshKey: deriveKey([]byte("secret"), "mesh")}
	for _, lane := range lanes {
		f.Add(meshproto.Append(nil, n.hello(roleDialer, lane, helloEKM)))
		f.Add(meshproto.Append(nil, n.hello(roleAcceptor, lane, helloEKM)))
	}
	other := &Node{self: n.self, incarnation: 99, meshKey: deriveKey([]byte("another secret"), "mesh")}
	f.Add(meshproto.Append(nil, other.hello(roleDialer, laneControl, helloEKM)))
	f.Add(meshproto.Append(nil, &meshproto.Ping{Nanos: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, _, err := meshproto.ReadFrame(bufio.NewReader(bytes.NewReader(b)), 4096, nil)
		h, ok := fr.(*meshproto.Hello)
		if err != nil || !ok {
			return
		}
		passes := 0
		for _, role := range []byte{roleDialer, roleAcceptor} {
			for _, lane := range lanes {
				if n.validHello(h, role, lane, helloEKM) {
					passes++
				}
			}
		}
		if passes > 1 {
			t.Fatalf("Hello %+v passes for %d lanes and roles", h, passes)
		}
		if passes == 1 && (other.validHello(h, roleDialer, h.Lane, helloEKM) || other.validHello(h, roleAcceptor, h.Lane, helloEKM)) {
			t.Fatalf("Hello %+v passes under two keys", h)
		}
		if passes == 1 && n.validHello(h, roleDialer, h.Lane, bytes.Repeat([]byte{8}, 32)) {
			t.Fatalf("Hello %+v passes on another session", h)
		}
	})
}
