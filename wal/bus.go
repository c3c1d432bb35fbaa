package wal

import (
	"github.com/meshcast/meshcast/wal/owner"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// Bus is what a Service needs of its cluster: a way to send a frame to a
// member. The rest of the seam runs the other way, the cluster calling the
// Service: Receive for the frames of FrameTypes, SetMembers for every
// change of the membership (this node included), and Resync for what a
// peer's lane needs when it is new or lost frames. cmd/meshcast adapts a
// mesh.Node to it; MemBus is one in memory.
type Bus interface {
	// Send queues frame for member to on lane, without blocking; false
	// when it could not (the member is unknown, or the lane's queue
	// overflowed: the lane then resyncs, calling Resync).
	Send(to string, lane Lane, frame []byte) bool
}

// Lane is the lane of the cluster's links a frame goes on: the cluster
// keeps each lane's frames to one member in order.
type Lane = owner.Lane

// The lanes the change stream uses.
const (
	// LaneControl carries registrations, acknowledgements and sync
	// requests: small, ordered, never lost (a lost frame resyncs).
	LaneControl = owner.LaneControl
	// LaneChanges carries the changes, resent from the owner's outbox when
	// the lane resyncs.
	LaneChanges = owner.LaneChanges
)

// FrameTypes are the frames a Service takes through Receive.
var FrameTypes = []meshproto.Type{meshproto.TypeSubRegister, meshproto.TypeSubUnregister, meshproto.TypeSubAck,
	meshproto.TypeChanges, meshproto.TypeChangesAck, meshproto.TypeSubSync, meshproto.TypeChangesRecover, meshproto.TypeChangesRecovered}
