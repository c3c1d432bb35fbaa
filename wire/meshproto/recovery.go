package meshproto

// Frames of Postgres-change recovery (package wal): a node asks the
// database's owner for the changes after a position that some of its
// subscriptions match (ChangesRecover, control lane), and the owner
// answers from its history of the recovery window (ChangesRecovered, in
// parts, changes lane).

// ChangesRecover asks the owner of database DB for the changes after
// (AfterLSN, AfterSeq) that Subs match and may see. (HeadLSN, HeadSeq) is
// the asking node's head: the owner answers once its history reaches it.
// Call identifies the request on the asking node.
type ChangesRecover struct {
	DB       string
	Call     uint64
	AfterLSN uint64
	AfterSeq uint32
	HeadLSN  uint64
	HeadSeq  uint32
	Subs     []Sub
}

// ChangesRecovered answers ChangesRecover Call: the changes found, in
// commit order, each its Record (as in Changes) and the IDs among the
// request's subscriptions it reaches, complete through (ThroughLSN,
// ThroughSeq); or, with Err, why the owner cannot recover them. A long
// answer comes in parts (Part, More), in order on one lane.
type ChangesRecovered struct {
	DB         string
	Call       uint64
	ThroughLSN uint64
	ThroughSeq uint32
	Err        string
	Records    []RecoveredRecord
	Part       uint64
	More       bool
}

// RecoveredRecord is one change of a ChangesRecovered.
type RecoveredRecord struct {
	Record []byte
	IDs    []uint64
}

// Type implements Frame.
func (*ChangesRecover) Type() Type { return TypeChangesRecover }

// Type implements Frame.
func (*ChangesRecovered) Type() Type { return TypeChangesRecovered }

func (f *ChangesRecover) appendBody(b []byte) []byte {
	b = appendString(b, f.DB)
	b = appendUvarint(b, f.Call)
	b = appendUvarint(b, f.AfterLSN)
	b = appendUvarint(b, uint64(f.AfterSeq))
	b = appendUvarint(b, f.HeadLSN)
	b = appendUvarint(b, uint64(f.HeadSeq))
	return appendSubs(b, f.Subs)
}

func (f *ChangesRecover) decode(r *reader) {
	f.DB = r.string("db")
	f.Call = r.uvarint("call")
	f.AfterLSN = r.uvarint("after")
	f.AfterSeq = r.uint32v("after")
	f.HeadLSN = r.uvarint("head")
	f.HeadSeq = r.uint32v("head")
	f.Subs = r.subs()
}

func (f *ChangesRecovered) appendBody(b []byte) []byte {
	b = appendString(b, f.DB)
	b = appendUvarint(b, f.Call)
	b = appendUvarint(b, f.ThroughLSN)
	b = appendUvarint(b, uint64(f.ThroughSeq))
	b = appendString(b, f.Err)
	b = appendUvarint(b, uint64(len(f.Records)))
	for _, rec := range f.Records {
		b = appendBytes(b, rec.Record)
		b = appendIDs(b, rec.IDs)
	}
	return appendPart(b, f.Part, f.More)
}

func (f *ChangesRecovered) decode(r *reader) {
	f.DB = r.string("db")
	f.Call = r.uvarint("call")
	f.ThroughLSN = r.uvarint("through")
	f.ThroughSeq = r.uint32v("through")
	f.Err = r.string("err")
	if n := r.count("records", 2); n > 0 {
		f.Records = make([]RecoveredRecord, n)
		for i := range f.Records {
			f.Records[i].Record = r.bytes("records")
			f.Records[i].IDs = r.ids("records")
		}
		if r.err != "" {
			f.Records = nil
		}
	}
	f.Part, f.More = r.part()
}

// decodeRecovery is decodeBody for the frames of this file.
func decodeRecovery(t Type, r *reader) Frame {
	switch t {
	case TypeChangesRecover:
		x := new(ChangesRecover)
		x.decode(r)
		return x
	case TypeChangesRecovered:
		x := new(ChangesRecovered)
		x.decode(r)
		return x
	}
	return nil
}
