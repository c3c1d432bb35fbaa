package mesh

import (
	"errors"
	"fmt"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// Snapshots (a node's interest set, an owner's presence of a topic) can be
// larger than any one mesh frame may be, so they travel in parts of at
// most snapshotPart bytes each; the receiver applies a snapshot only once
// its last part has arrived, so that it replaces state atomically. A
// snapshot therefore never breaks a link, whatever its size.

// snapshotPart bounds the encoded size of one snapshot part. Small enough
// that a part never approaches a peer's frame limit or fills a lane queue
// on its own, large enough that parts are few.
const snapshotPart = 256 << 10

// inParts splits items into runs of at most snapshotPart bytes (an item
// larger than that makes a run of its own) and calls emit for each run,
// numbered from 0, with more set on all but the last. No items make one
// empty run: an empty snapshot is a snapshot too.
func inParts[T any](items []T, size func(T) int, emit func(run []T, part uint64, more bool) error) error {
	var part uint64
	start, bytes := 0, 0
	for i, it := range items {
		n := size(it)
		if bytes > 0 && bytes+n > snapshotPart {
			if err := emit(items[start:i], part, true); err != nil {
				return err
			}
			part, start, bytes = part+1, i, 0
		}
		bytes += n
	}
	return emit(items[start:], part, false)
}

// interestFrames encodes the interest set topics as InterestSnapshot
// parts and hands each frame to emit, stopping at its first error.
func interestFrames(topics []string, emit func([]byte) error) error {
	return inParts(topics, func(t string) int { return len(t) + 10 }, func(run []string, part uint64, more bool) error {
		return emit(meshproto.Append(nil, &meshproto.InterestSnapshot{Topics: run, Part: part, More: more}))
	})
}

// presenceFrames encodes an owner's presence snapshot of a topic as
// PresenceSnapshot parts and hands each frame to emit.
func presenceFrames(topic string, s presence.Snapshot, emit func([]byte) error) error {
	return inParts(s.Entries, entrySize, func(run []presence.Entry, part uint64, more bool) error {
		f := &meshproto.PresenceSnapshot{Topic: topic, Owner: s.Owner, Seq: s.Seq, Part: part, More: more}
		for _, e := range run {
			f.Entries = append(f.Entries, meshproto.PresenceEntry{Holder: e.Holder, Key: e.Key, Ref: e.Ref, Meta: e.Meta})
		}
		return emit(meshproto.Append(nil, f))
	})
}

func entrySize(e presence.Entry) int { return len(e.Key) + len(e.Ref) + len(e.Meta) + 24 }

// assembler joins the snapshot parts arriving on one peer's control lane
// (one goroutine reads a lane, so it needs no lock). Parts of one snapshot
// arrive in order on the stream; a part that does not follow the one
// before (frames were lost to a control-lane overflow, which the sender
// follows with a resync) discards what was gathered.
type assembler struct {
	limit    int // bytes of parts held at once; over it the peer is reset
	held     int
	interest *meshproto.InterestSnapshot
	presence map[presenceKey]*meshproto.PresenceSnapshot
}

type presenceKey struct{ topic, owner string }

var errSnapshotTooLarge = errors.New("mesh: peer's unfinished snapshots exceed the limit")

// What held counts: an item's bytes plus itemOverhead, and an unfinished
// snapshot's names plus snapshotOverhead. The overheads stand for the
// memory an item or a snapshot takes beyond its bytes (string and slice
// headers, map entries), so that parts of empty items, or many snapshots
// with no entries, which cost a peer almost nothing to send, still count
// against the limit.
const (
	itemOverhead     = 32
	snapshotOverhead = 96
)

func topicCost(t string) int { return len(t) + itemOverhead }

func entryCost(e meshproto.PresenceEntry) int {
	return len(e.Key) + len(e.Ref) + len(e.PrevRef) + len(e.Meta) + itemOverhead
}

func newAssembler(limit int) *assembler {
	return &assembler{limit: limit, presence: make(map[presenceKey]*meshproto.PresenceSnapshot)}
}

// add takes a frame; it returns the frame to dispatch (a complete
// snapshot, or f itself when f is no snapshot part), or nil while parts
// are missing.
func (a *assembler) add(f meshproto.Frame) (meshproto.Frame, error) {
	switch f := f.(type) {
	case *meshproto.InterestSnapshot:
		if f.Part == 0 && !f.More && a.interest == nil {
			return f, nil
		}
		acc := a.interest
		if f.Part == 0 {
			a.release(acc)
			acc = &meshproto.InterestSnapshot{}
			a.held += snapshotOverhead
		} else if acc == nil || f.Part != acc.Part+1 {
			a.release(acc)
			a.interest = nil
			return nil, nil
		}
		a.interest = acc // held counts it from here on
		acc.Part = f.Part
		acc.Topics = append(acc.Topics, f.Topics...)
		for _, t := range f.Topics {
			a.held += topicCost(t)
		}
		if a.held > a.limit {
			return nil, fmt.Errorf("%w (%d bytes)", errSnapshotTooLarge, a.held)
		}
		if f.More {
			return nil, nil
		}
		a.release(acc)
		a.interest = nil
		acc.Part = 0
		return acc, nil
	case *meshproto.PresenceSnapshot:
		k := presenceKey{f.Topic, f.Owner}
		acc := a.presence[k]
		if f.Part == 0 && !f.More && acc == nil {
			return f, nil
		}
		if f.Part == 0 {
			a.release(acc)
			acc = &meshproto.PresenceSnapshot{Topic: f.Topic, Owner: f.Owner, Seq: f.Seq}
			a.held += snapshotOverhead + len(f.Topic) + len(f.Owner)
		} else if acc == nil || f.Part != acc.Part+1 || f.Seq != acc.Seq {
			a.release(acc)
			delete(a.presence, k)
			return nil, nil
		}
		a.presence[k] = acc
		acc.Part = f.Part
		// Entries may be kept: readLane reads every frame into a buffer
		// of its own.
		acc.Entries = append(acc.Entries, f.Entries...)
		for _, e := range f.Entries {
			a.held += entryCost(e)
		}
		if a.held > a.limit {
			return nil, fmt.Errorf("%w (%d bytes)", errSnapshotTooLarge, a.held)
		}
		if f.More {
			return nil, nil
		}
		a.release(acc)
		delete(a.presence, k)
		acc.Part = 0
		return acc, nil
	}
	return f, nil
}

// release forgets what held counted of a finished or abandoned snapshot.
func (a *assembler) release(f meshproto.Frame) {
	a.held -= heldBy(f)
}

// heldBy is what held counts of an unfinished snapshot (0 for nil).
func heldBy(f meshproto.Frame) int {
	n := 0
	switch f := f.(type) {
	case *meshproto.InterestSnapshot:
		if f == nil {
			return 0
		}
		n = snapshotOverhead
		for _, t := range f.Topics {
			n += topicCost(t)
		}
	case *meshproto.PresenceSnapshot:
		if f == nil {
			return 0
		}
		n = snapshotOverhead + len(f.Topic) + len(f.Owner)
		for _, e := range f.Entries {
			n += entryCost(e)
		}
	}
	return n
}
