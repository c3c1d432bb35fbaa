package mesh

import (
	"fmt"
	"testing"

	"github.com/meshcast/meshcast/wire/fuzzcorpus"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// TestWriteCorpus writes the mesh's seed corpora: real snapshot streams,
// node metadata as memberlist carries it, and real Hellos.
func TestWriteCorpus(t *testing.T) {
	fuzzcorpus.Skip(t)
	for i, s := range assemblerSeeds() {
		fuzzcorpus.Write(t, "FuzzAssembler", fmt.Sprint(i), s, []byte(nil))
	}
	fuzzcorpus.Write(t, "FuzzAssembler", "ops", []byte(nil), []byte{1, 0, 1, 9, 1, 1, 1, 9, 1, 2, 0, 9, 0, 0, 1, 3, 0, 1, 1, 3, 0, 1, 0, 3, 3, 0, 3, 200, 3, 1, 3, 200})
	for i, m := range metaSeeds {
		fuzzcorpus.Write(t, "FuzzDecodeMeta", fmt.Sprint(i), encodeMeta(m))
	}
	n := &Node{self: Member{ID: "n1-1a2b3c", Region: "iad"}, incarnation: 99, meshKey: deriveKey([]byte("secret"), "mesh")}
	for _, lane := range lanes {
		fuzzcorpus.Write(t, "FuzzHello", "dialer-"+laneName(lane), meshproto.Append(nil, n.hello(roleDialer, lane, helloEKM)))
		fuzzcorpus.Write(t, "FuzzHello", "acceptor-"+laneName(lane), meshproto.Append(nil, n.hello(roleAcceptor, lane, helloEKM)))
	}
}
