package meshproto

// Frames of Postgres changes (see package wal): a node registers its channels'
// postgres_changes subscriptions with the node that owns the database's
// WAL reader (control lane), and the owner sends every change record once
// to each node with matching subscriptions, tagged with their IDs (changes
// lane), which acknowledges what it has delivered (control lane).

// Sub is one postgres_changes binding as its node registers it. Event is
// INSERT, UPDATE, DELETE or *; Filters all hold. Claims is the JWT's
// claims as JSON, for the owner's row-level security checks.
type Sub struct {
	ID      uint64
	Schema  string
	Table   string
	Event   string
	Filters []SubFilter
	Columns []string
	Role    string
	Claims  []byte
}

// SubFilter is one condition of a Sub: Column Op Value (negated with
// Negate). Op numbers an operator of the filter grammar, as the wal
// package defines them; Value is its operand as text.
type SubFilter struct {
	Column string
	Op     uint8
	Value  string
	Negate bool
}

// SubRegister adds subscriptions of database DB at its owner. With Replace
// they are the sender's whole set, replacing what the owner held for it
// (after a new owner took over, or a resync); a large set is sent in parts
// as snapshots are (Part, More), the owner replacing once the last part is
// in. The owner answers with SubAck.
type SubRegister struct {
	DB      string
	Replace bool
	Subs    []Sub
	Part    uint64
	More    bool
}

// SubUnregister removes subscriptions of database DB at its owner.
type SubUnregister struct {
	DB  string
	IDs []uint64
}

// SubAck answers a SubRegister: the owner holds the subscriptions IDs and
// matches every change it reads from now on against them; or, with Err,
// it refused them. (LSN, Seq) is the owner's head then: every change
// after it is matched against the subscriptions (zero while its reader is
// not streaming, and with Err).
type SubAck struct {
	DB  string
	IDs []uint64
	LSN uint64
	Seq uint32
	Err string
}

// Changes carries one change record of database DB, encoded once by the
// owner (Record, opaque here), to a node holding the subscriptions IDs it
// matches. (LSN, Seq) is the change's place in the WAL: the commit LSN of
// its transaction and its position in it; a node drops a change at or
// before one it has delivered (a new owner repeats the unconfirmed tail).
type Changes struct {
	DB     string
	LSN    uint64
	Seq    uint32
	Record []byte
	IDs    []uint64
}

// ChangesAck says the sender has delivered every change of DB up to and
// including (LSN, Seq) that the receiver sent it.
type ChangesAck struct {
	DB  string
	LSN uint64
	Seq uint32
}

// SubSync asks a node for its whole set of DB's subscriptions (a
// SubRegister with Replace): a new owner sends it to every member before
// it starts reading, so that no change is matched against a partial set.
type SubSync struct{ DB string }

// Type implements Frame.
func (*SubSync) Type() Type { return TypeSubSync }

func (f *SubSync) appendBody(b []byte) []byte { return appendString(b, f.DB) }
func (f *SubSync) decode(r *reader)           { f.DB = r.string("db") }

// Type implements Frame.
func (*SubRegister) Type() Type { return TypeSubRegister }

// Type implements Frame.
func (*SubUnregister) Type() Type { return TypeSubUnregister }

// Type implements Frame.
func (*SubAck) Type() Type { return TypeSubAck }

// Type implements Frame.
func (*Changes) Type() Type { return TypeChanges }

// Type implements Frame.
func (*ChangesAck) Type() Type { return TypeChangesAck }

// minSub is the smallest encoded Sub: eight empty fields.
const minSub = 8

func (f *SubRegister) appendBody(b []byte) []byte {
	b = appendString(b, f.DB)
	var replace byte
	if f.Replace {
		replace = 1
	}
	b = append(b, replace)
	b = appendSubs(b, f.Subs)
	return appendPart(b, f.Part, f.More)
}

func (f *SubRegister) decode(r *reader) {
	f.DB = r.string("db")
	switch r.byte("replace") {
	case 0:
	case 1:
		f.Replace = true
	default:
		r.fail("replace")
	}
	f.Subs = r.subs()
	f.Part, f.More = r.part()
}

func appendSubs(b []byte, subs []Sub) []byte {
	b = appendUvarint(b, uint64(len(subs)))
	for i := range subs {
		s := &subs[i]
		b = appendUvarint(b, s.ID)
		b = appendString(b, s.Schema)
		b = appendString(b, s.Table)
		b = appendString(b, s.Event)
		b = appendUvarint(b, uint64(len(s.Filters)))
		for _, f := range s.Filters {
			b = appendString(b, f.Column)
			neg := byte(0)
			if f.Negate {
				neg = 1
			}
			b = append(b, f.Op, neg)
			b = appendString(b, f.Value)
		}
		b = appendStrings(b, s.Columns)
		b = appendString(b, s.Role)
		b = appendBytes(b, s.Claims)
	}
	return b
}

func (r *reader) subs() []Sub {
	n := r.count("subs", minSub)
	if n == 0 {
		return nil
	}
	subs := make([]Sub, n)
	for i := range subs {
		s := &subs[i]
		s.ID = r.uvarint("subs")
		s.Schema = r.string("subs")
		s.Table = r.string("subs")
		s.Event = r.string("subs")
		if n := r.count("filters", 4); n > 0 {
			s.Filters = make([]SubFilter, n)
			for j := range s.Filters {
				f := &s.Filters[j]
				f.Column = r.string("filters")
				f.Op = r.byte("filters")
				switch r.byte("filters") {
				case 0:
				case 1:
					f.Negate = true
				default:
					r.fail("filters")
				}
				f.Value = r.string("filters")
			}
		}
		s.Columns = r.strings("subs")
		s.Role = r.string("subs")
		s.Claims = r.bytes("subs")
	}
	if r.err != "" {
		return nil
	}
	return subs
}

func appendIDs(b []byte, ids []uint64) []byte {
	b = appendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = appendUvarint(b, id)
	}
	return b
}

func (r *reader) ids(field string) []uint64 {
	n := r.count(field, 1)
	if n == 0 {
		return nil
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = r.uvarint(field)
	}
	if r.err != "" {
		return nil
	}
	return ids
}

func (f *SubUnregister) appendBody(b []byte) []byte {
	b = appendString(b, f.DB)
	return appendIDs(b, f.IDs)
}

func (f *SubUnregister) decode(r *reader) {
	f.DB = r.string("db")
	f.IDs = r.ids("ids")
}

func (f *SubAck) appendBody(b []byte) []byte {
	b = appendString(b, f.DB)
	b = appendIDs(b, f.IDs)
	b = appendUvarint(b, f.LSN)
	b = appendUvarint(b, uint64(f.Seq))
	return appendString(b, f.Err)
}

func (f *SubAck) decode(r *reader) {
	f.DB = r.string("db")
	f.IDs = r.ids("ids")
	f.LSN = r.uvarint("lsn")
	f.Seq = r.uint32v("seq")
	f.Err = r.string("err")
}

func (f *Changes) appendBody(b []byte) []byte {
	b = appendString(b, f.DB)
	b = appendUvarint(b, f.LSN)
	b = appendUvarint(b, uint64(f.Seq))
	b = appendBytes(b, f.Record)
	return appendIDs(b, f.IDs)
}

func (f *Changes) decode(r *reader) {
	f.DB = r.string("db")
	f.LSN = r.uvarint("lsn")
	f.Seq = r.uint32v("seq")
	f.Record = r.bytes("record")
	f.IDs = r.ids("ids")
}

func (f *ChangesAck) appendBody(b []byte) []byte {
	b = appendString(b, f.DB)
	b = appendUvarint(b, f.LSN)
	return appendUvarint(b, uint64(f.Seq))
}

func (f *ChangesAck) decode(r *reader) {
	f.DB = r.string("db")
	f.LSN = r.uvarint("lsn")
	f.Seq = r.uint32v("seq")
}

// uint32v reads a uvarint that must fit 32 bits.
func (r *reader) uint32v(field string) uint32 {
	v := r.uvarint(field)
	if v > 1<<32-1 {
		r.fail(field)
		return 0
	}
	return uint32(v)
}
