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
// and a snapshot it hands on is whole (part 0, no more to come). The
// frames come from lane (encoded frames), then from ops, four bytes a
// frame, so that mutations make frames the assembler takes.
func FuzzAssembler(f *testing.F) {
	for _, s := range assemblerSeeds() {
		f.Add(s, []byte(nil))
	}
	f.Add([]byte(nil), []byte{1, 0, 1, 9, 1, 1, 1, 9, 1, 2, 0, 9, 0, 0, 1, 3, 0, 1, 1, 3, 0, 1, 0, 3, 3, 0, 3, 200, 3, 1, 3, 200})
	f.Fuzz(func(t *testing.T, lane, ops []byte) {
		a := newAssembler(4096)
		for len(lane) > 0 || len(ops) >= 4 {
			var fr meshproto.Frame
			if len(lane) > 0 {
				var n int
				var err error
				fr, n, err = meshproto.Decode(lane, 0)
				if n == 0 {
					lane = nil
					continue
				}
				lane = lane[n:]
				if err != nil {
					continue
				}
			} else {
				fr, ops = opFrame(ops[:4]), ops[4:]
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

// opFrame makes a snapshot part of four bytes: kind (even: interest, odd:
// presence), part (0-3), flags (bit 0 more, bits 1-2 which topic/owner,
// bit 3 which seq), and the number of items, of up to 6 bytes each.
func opFrame(op []byte) meshproto.Frame {
	part, more, which, seq := uint64(op[1]%4), op[2]&1 != 0, int(op[2]>>1&3), uint64(op[2]>>3&1)
	n, size := int(op[3]), strings.Repeat("x", int(op[3])%7)
	if op[0]%2 == 0 {
		return &meshproto.InterestSnapshot{Topics: slicesRepeat(size, n), Part: part, More: more}
	}
	entries := make([]meshproto.PresenceEntry, n)
	for i := range entries {
		entries[i] = meshproto.PresenceEntry{Holder: uint64(i), Key: size, Meta: []byte(size)}
	}
	return &meshproto.PresenceSnapshot{Topic: "t" + strconv.Itoa(which), Owner: "o" + strconv.Itoa(which%2), Seq: seq, Part: part, More: more, Entries: entries}
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
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
