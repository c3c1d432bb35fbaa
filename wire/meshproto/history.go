package meshproto

// Frames of broadcast recovery (issue 18): every node numbers the
// broadcasts it originates per topic (a stream, named by the node
// incarnation's epoch) and keeps the recent ones of every stream it sees.
// A node that becomes interested in a topic learns from each peer what it
// holds (StreamHeads, sent just before the peer's presence snapshot on the
// control lane, so it is in when the snapshot wait ends), and a node asked
// to recover a range it does not hold fetches it from a peer that does
// (HistoryRequest, HistoryReply; control lane).

// StreamRange is what the sender holds of one stream: offsets Low..Head
// (none when Low > Head); it knows of none beyond Head.
type StreamRange struct {
	Stream    uint64
	Low, Head uint64
}

// StreamHeads lists what the sender holds of Topic's streams.
type StreamHeads struct {
	Topic  string
	Ranges []StreamRange
}

// HistoryRequest asks for the messages of Topic's Stream from offset
// After+1 up to Upto. ID pairs the reply with it.
type HistoryRequest struct {
	ID     uint64
	Topic  string
	Stream uint64
	After  uint64
	Upto   uint64
}

// HistoryReply answers a HistoryRequest: Msgs are the offsets After+1,
// After+2, … of the request, as many as fit (fewer than asked: ask again
// from the last); Held is false when the sender does not hold After+1.
type HistoryReply struct {
	ID   uint64
	Held bool
	Msgs []HistoryMsg
}

// HistoryMsg is one kept broadcast, as Broadcast carries it.
type HistoryMsg struct {
	Event   string
	Payload []byte
	Meta    []byte
	Enc     uint8
	Binary  bool
}

// Type implements Frame.
func (*StreamHeads) Type() Type { return TypeStreamHeads }

// Type implements Frame.
func (*HistoryRequest) Type() Type { return TypeHistoryRequest }

// Type implements Frame.
func (*HistoryReply) Type() Type { return TypeHistoryReply }

// minRange is the smallest encoded StreamRange: three one-byte uvarints.
const minRange = 3

func (f *StreamHeads) appendBody(b []byte) []byte {
	b = appendString(b, f.Topic)
	b = appendUvarint(b, uint64(len(f.Ranges)))
	for _, r := range f.Ranges {
		b = appendUvarint(b, r.Stream)
		b = appendUvarint(b, r.Low)
		b = appendUvarint(b, r.Head)
	}
	return b
}

func (f *StreamHeads) decode(r *reader) {
	f.Topic = r.string("topic")
	n := r.count("ranges", minRange)
	if n == 0 {
		return
	}
	f.Ranges = make([]StreamRange, n)
	for i := range f.Ranges {
		f.Ranges[i] = StreamRange{Stream: r.uvarint("stream"), Low: r.uvarint("low"), Head: r.uvarint("head")}
	}
	if r.err != "" {
		f.Ranges = nil
	}
}

func (f *HistoryRequest) appendBody(b []byte) []byte {
	b = appendUvarint(b, f.ID)
	b = appendString(b, f.Topic)
	b = appendUvarint(b, f.Stream)
	b = appendUvarint(b, f.After)
	return appendUvarint(b, f.Upto)
}

func (f *HistoryRequest) decode(r *reader) {
	f.ID = r.uvarint("id")
	f.Topic = r.string("topic")
	f.Stream = r.uvarint("stream")
	f.After = r.uvarint("after")
	f.Upto = r.uvarint("upto")
}

// minHistoryMsg is the smallest encoded HistoryMsg: three empty fields,
// the encoding and the flags.
const minHistoryMsg = 5

const binaryFlag = 1

func (f *HistoryReply) appendBody(b []byte) []byte {
	b = appendUvarint(b, f.ID)
	var held byte
	if f.Held {
		held = 1
	}
	b = append(b, held)
	b = appendUvarint(b, uint64(len(f.Msgs)))
	for i := range f.Msgs {
		m := &f.Msgs[i]
		b = appendString(b, m.Event)
		b = appendBytes(b, m.Payload)
		b = appendBytes(b, m.Meta)
		var flags byte
		if m.Binary {
			flags = binaryFlag
		}
		b = append(b, m.Enc, flags)
	}
	return b
}

func (f *HistoryReply) decode(r *reader) {
	f.ID = r.uvarint("id")
	switch r.byte("held") {
	case 0:
	case 1:
		f.Held = true
	default:
		r.fail("held")
	}
	n := r.count("msgs", minHistoryMsg)
	if n == 0 {
		return
	}
	f.Msgs = make([]HistoryMsg, n)
	for i := range f.Msgs {
		m := &f.Msgs[i]
		m.Event = r.string("event")
		m.Payload = r.bytes("payload")
		m.Meta = r.bytes("meta")
		m.Enc = r.byte("enc")
		flags := r.byte("flags")
		if flags&^binaryFlag != 0 {
			r.fail("flags")
		}
		m.Binary = flags&binaryFlag != 0
	}
	if r.err != "" {
		f.Msgs = nil
	}
}

// decodeHistory is decodeBody for the frames of this file.
func decodeHistory(t Type, r *reader) Frame {
	switch t {
	case TypeStreamHeads:
		x := new(StreamHeads)
		x.decode(r)
		return x
	case TypeHistoryRequest:
		x := new(HistoryRequest)
		x.decode(r)
		return x
	case TypeHistoryReply:
		x := new(HistoryReply)
		x.decode(r)
		return x
	}
	return decodeRecovery(t, r)
}
