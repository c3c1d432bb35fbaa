// Package meshproto is the binary protocol between meshcast nodes: the frames
// one node sends another over a mesh lane (see mesh's lanes). It exists apart from
// mesh so that the format is a pure codec, without I/O or goroutines, that can
// be fuzzed on its own and read by tools such as the benchmark.
//
// Every frame is
//
//	u32 big-endian length of the rest | u8 type | u8 version (2) | body
//
// Inside a body, integers are uvarints unless noted, strings and byte slices
// are a uvarint length and the bytes, and lists are a uvarint count and the
// items. A body holds exactly its fields: trailing bytes are malformed, and a
// new field means a new version or a new type. Decoding trusts no length: each
// is checked against the bytes left, and a frame's length against the caller's
// maximum, before anything is allocated.
//
// Frames are the pointer types *Hello, *Ping, ... and Decode returns them the
// same way. Byte slices in a decoded frame alias the input (strings are
// copied): copy them before the input is reused.
package meshproto

import (
	"errors"
	"strconv"
)

// Version is the frame version this package writes and the only one it reads.
// Version 2 sends snapshots in parts. Nodes of one cluster run one version:
// a peer speaking another is refused at its first frame (its Hello).
const Version = 2

// DefaultMaxFrame is the largest frame Decode and ReadFrame accept when
// given maxFrame <= 0, counted as the length field counts: type, version and
// body.
const DefaultMaxFrame = 16 << 20

// Lanes of Hello: each peer connection carries one stream per lane so that
// bulk data never blocks control frames.
const (
	LaneControl uint8 = 0 // hello, interest, presence, subscriptions, change acks
	LaneData    uint8 = 1 // broadcasts
	LaneChanges uint8 = 2 // Postgres change records, never dropped
)

// Type identifies a frame. The numbers are part of the wire format.
type Type uint8

// Frame types. New types take new numbers; numbers are never reused.
const (
	TypeHello               Type = 1
	TypePing                Type = 2
	TypePong                Type = 3
	TypeInterestAdd         Type = 4
	TypeInterestRemove      Type = 5
	TypeInterestSnapshot    Type = 6
	TypeBroadcast           Type = 7
	TypePresenceDelta       Type = 8
	TypePresenceSnapshot    Type = 9
	TypePresenceSyncRequest Type = 10
	TypeSubRegister         Type = 11
	TypeSubUnregister       Type = 12
	TypeSubAck              Type = 13
	TypeChanges             Type = 14
	TypeChangesAck          Type = 15
	TypeSubSync             Type = 16
	TypeStreamHeads         Type = 17
	TypeHistoryRequest      Type = 18
	TypeHistoryReply        Type = 19
	TypeChangesRecover      Type = 20
	TypeChangesRecovered    Type = 21
)

var typeNames = [...]string{
	TypeHello:               "Hello",
	TypePing:                "Ping",
	TypePong:                "Pong",
	TypeInterestAdd:         "InterestAdd",
	TypeInterestRemove:      "InterestRemove",
	TypeInterestSnapshot:    "InterestSnapshot",
	TypeBroadcast:           "Broadcast",
	TypePresenceDelta:       "PresenceDelta",
	TypePresenceSnapshot:    "PresenceSnapshot",
	TypePresenceSyncRequest: "PresenceSyncRequest",
	TypeSubRegister:         "SubRegister",
	TypeSubUnregister:       "SubUnregister",
	TypeSubAck:              "SubAck",
	TypeChanges:             "Changes",
	TypeChangesAck:          "ChangesAck",
	TypeSubSync:             "SubSync",
	TypeStreamHeads:         "StreamHeads",
	TypeHistoryRequest:      "HistoryRequest",
	TypeHistoryReply:        "HistoryReply",
	TypeChangesRecover:      "ChangesRecover",
	TypeChangesRecovered:    "ChangesRecovered",
}

// String returns the frame type's name, for errors and logs.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// Errors of Decode and ReadFrame, wrapped with context; test with errors.Is.
var (
	// ErrShort means the input ends inside a frame: read more and retry.
	ErrShort = errors.New("meshproto: incomplete frame")
	// ErrTooLarge means a frame's length exceeds the maximum. The peer is
	// broken or hostile; the stream cannot be resynchronised.
	ErrTooLarge = errors.New("meshproto: frame too large")
	// ErrVersion means a frame of a version this package does not read.
	ErrVersion = errors.New("meshproto: unsupported frame version")
	// ErrUnknownType means a frame of a type this package does not know.
	ErrUnknownType = errors.New("meshproto: unknown frame type")
	// ErrMalformed means a frame whose body does not parse.
	ErrMalformed = errors.New("meshproto: malformed frame")
)
