package meshproto

import (
	"fmt"
	"testing"

	"github.com/meshcast/meshcast/wire/fuzzcorpus"
)

// TestWriteCorpus writes frames the encoder produces, one of every type
// and shape, and whole lane streams.
func TestWriteCorpus(t *testing.T) {
	fuzzcorpus.Skip(t)
	var lane []byte
	for i, fr := range frames {
		b := Append(nil, fr)
		fuzzcorpus.Write(t, "FuzzDecode", fmt.Sprintf("%02d-%v", i, fr.Type()), b, 0)
		lane = append(lane, b...)
	}
	fuzzcorpus.Write(t, "FuzzDecode", "too-large", Append(nil, frames[0]), 16)
	fuzzcorpus.Write(t, "FuzzReadFrame", "every-type", lane, 0)
	fuzzcorpus.Write(t, "FuzzReadFrame", "every-type-small-limit", lane, 64)
	hello := &Hello{NodeID: "n1-abc", Region: "iad", Incarnation: 9, Lane: LaneControl, MAC: make([]byte, 32)}
	fuzzcorpus.Write(t, "FuzzReadFrame", "control-lane", Append(Append(Append(nil, hello), &Ping{Nanos: 5}), &InterestAdd{Topics: []string{"realtime:room1"}}), 4096)
}
