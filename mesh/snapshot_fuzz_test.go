package mesh

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// FuzzAssembler feeds a peer's control lane, as frames, through the
// snapshot assembler with a small limit: what it holds is exactly what it
// counts, the count never passes the limit without the peer being reset,
// and a snapshot it hands on is whole (part 0, no more to come).
func FuzzAssembler(f *testing.F) {
	for _, s := range assemblerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lane []byte) {
		a := newAssembler(4096)
		for len(lane) > 0 {
			fr, n, err := meshproto.Decode(lane, 0)
			if n == 0 {
				return
			}
			lane = lane[n:]
			if err != nil {
				continue
			}
			out, err := a.add(fr)
			if err != nil {
				if !errors.Is(err, errSnapshotTooLarge) || a.held <= a.limit {
					t.Fatalf("error %v with %d of %d held", err, a.held, a.limit)
				}
				return // readLane resets the peer
			}
			want := heldBy(a.interest)
			for _, p := range a.presence {
				want += heldBy(p)
			}
			if a.held != want || a.held < 0 || a.held > a.limit {
				t.Fatalf("held %d, the unfinished snapshots take %d (limit %d)", a.held, want, a.limit)
			}
			switch s := out.(type) {
			case *meshproto.InterestSnapshot:
				if s.Part != 0 || s.More {
					t.Fatalf("handed on part %d, more %v", s.Part, s.More)
				}
			case *meshproto.PresenceSnapshot:
				if s.Part != 0 || s.More {
					t.Fatalf("handed on part %d, more %v", s.Part, s.More)
				}
			}
		}
	})
}

// assemblerSeeds are real snapshot streams: what interestFrames and
// presenceFrames send for sets larger than a part, interleaved, and one
// cut short by a lost part.
func assemblerSeeds() [][]byte {
	var topics []string
	for i := range 40 {
		topics = append(topics, "realtime:room-"+strings.Repeat("x", i))
	}
	var snap presence.Snapshot
	snap.Owner, snap.Seq = "n1-abc", 7
	for i := range 20 {
		snap.Entries = append(snap.Entries, presence.Entry{Holder: uint64(i), Key: "user", Ref: "F" + strings.Repeat("r", i), Meta: []byte(`{"online_at":"now"}`)})
	}
	var frames [][]byte
	collect := func(b []byte) error { frames = append(frames, b); return nil }
	interestFrames(topics, collect)
	presenceFrames("realtime:lobby", snap, collect)
	whole := frames
	frames = nil
	// Small parts, as a large snapshot is sent.
	for i := 0; i < len(topics); i += 10 {
		collect(meshproto.Append(nil, &meshproto.InterestSnapshot{Topics: topics[i : i+10], Part: uint64(i / 10), More: i+10 < len(topics)}))
		collect(meshproto.Append(nil, &meshproto.PresenceSnapshot{Topic: "realtime:lobby", Owner: "n1-abc", Seq: 7, Part: uint64(i / 10), More: i+10 < len(topics),
			Entries: []meshproto.PresenceEntry{{Holder: uint64(i), Key: "k", Ref: "r", Meta: []byte(`{}`)}}}))
	}
	parts := frames
	join := func(fs [][]byte) []byte {
		var b []byte
		for _, f := range fs {
			b = append(b, f...)
		}
		return b
	}
	gap := append(append([][]byte{}, parts[:3]...), parts[5:]...)
	empty := meshproto.Append(nil, &meshproto.PresenceSnapshot{Topic: "t", Owner: "o", More: true, Entries: make([]meshproto.PresenceEntry, 50)})
	return [][]byte{join(whole), join(parts), join(gap), empty}
}

// A peer that sends parts of empty entries, or many unfinished snapshots
// with no entries, costs the receiver memory although the entries have no
// bytes: the limit counts that too, and the peer is reset.
func TestAssemblerCountsEmptyItems(t *testing.T) {
	for name, frame := range map[string]func(i int) meshproto.Frame{
		"empty entries": func(i int) meshproto.Frame {
			return &meshproto.PresenceSnapshot{Topic: "t", Owner: "o", Part: uint64(i), More: true, Entries: make([]meshproto.PresenceEntry, 100)}
		},
		"empty topics": func(i int) meshproto.Frame {
			return &meshproto.InterestSnapshot{Topics: make([]string, 100), Part: uint64(i), More: true}
		},
		"unfinished snapshots": func(i int) meshproto.Frame {
			return &meshproto.PresenceSnapshot{Topic: "t", Owner: strconv.Itoa(i), More: true}
		},
	} {
		a := newAssembler(64 << 10)
		var err error
		for i := 0; i < 2000 && err == nil; i++ {
			_, err = a.add(frame(i))
		}
		if !errors.Is(err, errSnapshotTooLarge) {
			t.Errorf("%s: 2000 frames held without reaching a 64 KiB limit (%d counted)", name, a.held)
		}
	}
}
