package meshproto

// Frame is one mesh frame: one of the pointer types of this package
// (*Hello, *Ping, *Pong, *InterestAdd, *InterestRemove, *InterestSnapshot,
// *Broadcast, *PresenceDelta, *PresenceSnapshot, *PresenceSyncRequest).
// The interface is closed so that Append can encode every Frame.
type Frame interface {
	Type() Type
	appendBody(b []byte) []byte
}

// Hello opens every lane of a peer connection. MAC authenticates the sender
// (the mesh computes it from the cluster secret and the TLS session); the
// codec only carries it.
type Hello struct {
	NodeID      string
	Region      string
	Incarnation uint64
	Lane        uint8 // LaneControl or LaneData
	MAC         []byte
}

// Ping asks the peer to echo Nanos in a Pong, to measure round trips.
// Nanos is a fixed 8 bytes (a clock reading is too large for a short varint).
type Ping struct{ Nanos int64 }

// Pong answers a Ping with its Nanos.
type Pong struct{ Nanos int64 }

// InterestAdd says the sender now has local subscribers of Topics.
type InterestAdd struct{ Topics []string }

// InterestRemove says the sender no longer has local subscribers of Topics.
type InterestRemove struct{ Topics []string }

// InterestSnapshot is the sender's whole interest set, sent to a new or
// reconnected peer; it replaces what the peer knew. A large set is sent in
// parts: Part counts from 0, More is set on every part but the last, and
// the receiver replaces its view only once the last part has arrived.
type InterestSnapshot struct {
	Topics []string
	Part   uint64
	More   bool
}

// Broadcast carries one message on Topic from node Origin. When RelayTo is
// not empty the receiver is a region relay: it delivers locally and forwards
// the message, with RelayTo empty, to each of those nodes of its region.
type Broadcast struct {
	Topic   string
	Event   string
	Payload []byte
	Meta    []byte
	Enc     uint8 // payload encoding, defined by the edge
	Binary  bool  // payload is binary, not JSON
	// Unreliable marks a latest-wins broadcast (a client's datagram): the
	// receiver delivers it as a datagram where it can.
	Unreliable bool
	Origin     string
	RelayTo    []string
}

// PresenceEntry is one presence entry of the owner named by the enclosing
// frame: Holder is the owner-local ID of the channel join that tracked it,
// PrevRef the Ref it replaced (in joins; empty otherwise).
type PresenceEntry struct {
	Holder  uint64
	Key     string
	Ref     string
	PrevRef string
	Meta    []byte
}

// PresenceDelta is what changed in Owner's entries of Topic, taking them to
// sequence number Seq. A receiver that holds an older sequence than Seq-1
// missed a delta and asks for a snapshot.
type PresenceDelta struct {
	Topic   string
	Owner   string
	Seq     uint64
	PrevSeq uint64 // Owner's previous Seq in Topic (0: none); a mismatch reveals a gap
	Joins   []PresenceEntry
	Leaves  []PresenceEntry
}

// PresenceSnapshot is Owner's full set of entries of Topic at Seq. It
// replaces whatever the receiver held for that owner and topic. A large
// set is sent in parts as InterestSnapshot is (Part, More); each part
// repeats Topic, Owner and Seq.
type PresenceSnapshot struct {
	Topic   string
	Owner   string
	Seq     uint64
	Entries []PresenceEntry
	Part    uint64
	More    bool
}

// PresenceSyncRequest asks for PresenceSnapshots of Topic: of Owner's
// entries, or, when Owner is empty, of every owner's the peer holds.
type PresenceSyncRequest struct {
	Topic string
	Owner string
}

// Type implements Frame.
func (*Hello) Type() Type { return TypeHello }

// Type implements Frame.
func (*Ping) Type() Type { return TypePing }

// Type implements Frame.
func (*Pong) Type() Type { return TypePong }

// Type implements Frame.
func (*InterestAdd) Type() Type { return TypeInterestAdd }

// Type implements Frame.
func (*InterestRemove) Type() Type { return TypeInterestRemove }

// Type implements Frame.
func (*InterestSnapshot) Type() Type { return TypeInterestSnapshot }

// Type implements Frame.
func (*Broadcast) Type() Type { return TypeBroadcast }

// Type implements Frame.
func (*PresenceDelta) Type() Type { return TypePresenceDelta }

// Type implements Frame.
func (*PresenceSnapshot) Type() Type { return TypePresenceSnapshot }

// Type implements Frame.
func (*PresenceSyncRequest) Type() Type { return TypePresenceSyncRequest }

// Bodies. Each appendBody has a decode beside it that reads the same fields
// in the same order.

func (f *Hello) appendBody(b []byte) []byte {
	b = appendString(b, f.NodeID)
	b = appendString(b, f.Region)
	b = appendUvarint(b, f.Incarnation)
	b = append(b, f.Lane)
	return appendBytes(b, f.MAC)
}

func (f *Hello) decode(r *reader) {
	f.NodeID = r.string("node_id")
	f.Region = r.string("region")
	f.Incarnation = r.uvarint("incarnation")
	f.Lane = r.byte("lane")
	f.MAC = r.bytes("mac")
}

func (f *Ping) appendBody(b []byte) []byte { return appendUint64(b, uint64(f.Nanos)) }
func (f *Ping) decode(r *reader)           { f.Nanos = int64(r.uint64("nanos")) }
func (f *Pong) appendBody(b []byte) []byte { return appendUint64(b, uint64(f.Nanos)) }
func (f *Pong) decode(r *reader)           { f.Nanos = int64(r.uint64("nanos")) }

func (f *InterestAdd) appendBody(b []byte) []byte    { return appendStrings(b, f.Topics) }
func (f *InterestAdd) decode(r *reader)              { f.Topics = r.strings("topics") }
func (f *InterestRemove) appendBody(b []byte) []byte { return appendStrings(b, f.Topics) }
func (f *InterestRemove) decode(r *reader)           { f.Topics = r.strings("topics") }
func (f *InterestSnapshot) appendBody(b []byte) []byte {
	b = appendStrings(b, f.Topics)
	return appendPart(b, f.Part, f.More)
}

func (f *InterestSnapshot) decode(r *reader) {
	f.Topics = r.strings("topics")
	f.Part, f.More = r.part()
}

// moreFlag marks a snapshot part that is not the last; other bits are
// reserved and rejected.
const moreFlag = 1

func appendPart(b []byte, part uint64, more bool) []byte {
	b = appendUvarint(b, part)
	var flags byte
	if more {
		flags = moreFlag
	}
	return append(b, flags)
}

func (r *reader) part() (uint64, bool) {
	part := r.uvarint("part")
	flags := r.byte("flags")
	if flags&^moreFlag != 0 {
		r.fail("flags")
	}
	return part, flags&moreFlag != 0
}

// The flag bits of Broadcast; other bits are reserved and rejected.
const (
	broadcastBinary     = 1
	broadcastUnreliable = 2
)

func (f *Broadcast) appendBody(b []byte) []byte {
	b = appendString(b, f.Topic)
	b = appendString(b, f.Event)
	b = appendBytes(b, f.Payload)
	b = appendBytes(b, f.Meta)
	var flags byte
	if f.Binary {
		flags |= broadcastBinary
	}
	if f.Unreliable {
		flags |= broadcastUnreliable
	}
	b = append(b, f.Enc, flags)
	b = appendString(b, f.Origin)
	return appendStrings(b, f.RelayTo)
}

func (f *Broadcast) decode(r *reader) {
	f.Topic = r.string("topic")
	f.Event = r.string("event")
	f.Payload = r.bytes("payload")
	f.Meta = r.bytes("meta")
	f.Enc = r.byte("enc")
	flags := r.byte("flags")
	if flags&^(broadcastBinary|broadcastUnreliable) != 0 {
		r.fail("flags")
	}
	f.Binary = flags&broadcastBinary != 0
	f.Unreliable = flags&broadcastUnreliable != 0
	f.Origin = r.string("origin")
	f.RelayTo = r.strings("relay_to")
}

func (f *PresenceDelta) appendBody(b []byte) []byte {
	b = appendString(b, f.Topic)
	b = appendString(b, f.Owner)
	b = appendUvarint(b, f.Seq)
	b = appendUvarint(b, f.PrevSeq)
	b = appendEntries(b, f.Joins)
	return appendEntries(b, f.Leaves)
}

func (f *PresenceDelta) decode(r *reader) {
	f.Topic = r.string("topic")
	f.Owner = r.string("owner")
	f.Seq = r.uvarint("seq")
	f.PrevSeq = r.uvarint("prev_seq")
	f.Joins = r.entries("joins")
	f.Leaves = r.entries("leaves")
}

func (f *PresenceSnapshot) appendBody(b []byte) []byte {
	b = appendString(b, f.Topic)
	b = appendString(b, f.Owner)
	b = appendUvarint(b, f.Seq)
	b = appendEntries(b, f.Entries)
	return appendPart(b, f.Part, f.More)
}

func (f *PresenceSnapshot) decode(r *reader) {
	f.Topic = r.string("topic")
	f.Owner = r.string("owner")
	f.Seq = r.uvarint("seq")
	f.Entries = r.entries("entries")
	f.Part, f.More = r.part()
}

func (f *PresenceSyncRequest) appendBody(b []byte) []byte {
	b = appendString(b, f.Topic)
	return appendString(b, f.Owner)
}

func (f *PresenceSyncRequest) decode(r *reader) {
	f.Topic = r.string("topic")
	f.Owner = r.string("owner")
}

// minEntry is the smallest encoded PresenceEntry: five empty fields.
const minEntry = 5

func appendEntries(b []byte, es []PresenceEntry) []byte {
	b = appendUvarint(b, uint64(len(es)))
	for i := range es {
		e := &es[i]
		b = appendUvarint(b, e.Holder)
		b = appendString(b, e.Key)
		b = appendString(b, e.Ref)
		b = appendString(b, e.PrevRef)
		b = appendBytes(b, e.Meta)
	}
	return b
}

func (r *reader) entries(field string) []PresenceEntry {
	n := r.count(field, minEntry)
	if n == 0 {
		return nil
	}
	es := make([]PresenceEntry, n)
	for i := range es {
		e := &es[i]
		e.Holder = r.uvarint(field)
		e.Key = r.string(field)
		e.Ref = r.string(field)
		e.PrevRef = r.string(field)
		e.Meta = r.bytes(field)
	}
	if r.err != "" {
		return nil
	}
	return es
}
