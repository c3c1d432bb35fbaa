package mesh

import (
	"github.com/meshcast/meshcast/wire/meshproto"
)

// The mesh's services to other subsystems (the Postgres changes of the
// wal package): frames of their own on the control and changes lanes, a
// say in every resync, and the membership. The mesh routes and delivers;
// what the frames mean is theirs.

// Handle registers fn for frames of type t that the mesh does not handle
// itself (the Sub* and Changes* frames). fn runs on the reading
// goroutine of the sender's lane, in the order frames arrive, and must not
// block long. Call Handle before Start.
func (n *Node) Handle(t meshproto.Type, fn func(from string, f meshproto.Frame)) {
	if n.handlers == nil {
		n.handlers = make(map[meshproto.Type]func(string, meshproto.Frame))
	}
	n.handlers[t] = fn
}

// OnResync registers fn to add frames to every resync of a lane (a new
// connection to a peer, or a queue that overflowed and lost frames): fn
// passes them to emit, which writes them before anything queued. Resync
// frames bypass the lane's queue, so a resync always completes, whatever
// its size. fn runs on the lane's writer goroutine. Call before Start.
func (n *Node) OnResync(l Lane, fn func(peer string, emit func([]byte) error) error) {
	n.resyncs[l] = append(n.resyncs[l], fn)
}

// OnTopicSnapshot registers fn to add frames for topic ahead of every
// presence snapshot of it this node sends a peer (answering its
// InterestAdd, a sync request or a resync), on the control lane: the peer
// has them before the snapshot ends its wait for the topic. fn passes them
// to emit; it runs on the mesh's goroutines without its locks held. Call
// before Start.
func (n *Node) OnTopicSnapshot(fn func(peer, topic string, emit func([]byte) error) error) {
	n.topicHooks = append(n.topicHooks, fn)
}

func (n *Node) topicSnapshotHooks(peer, topic string, emit func([]byte) error) error {
	for _, fn := range n.topicHooks {
		if err := fn(peer, topic, emit); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) resyncHooks(p *peer, lane byte, emit func([]byte) error) error {
	for _, fn := range n.resyncs[Lane(lane)] {
		if err := fn(p.m.ID, emit); err != nil {
			return err
		}
	}
	return nil
}

// Send queues an encoded frame (meshproto.Append) for member id on a
// lane. It reports false when the member is unknown or the frame was too
// large to send; a full queue does not lose it for good: the lane resyncs.
func (n *Node) Send(id string, l Lane, frame []byte) bool {
	n.mu.RLock()
	p := n.peers[id]
	n.mu.RUnlock()
	return p != nil && p.send(byte(l), frame)
}

// Watch registers fn to be called with this node and the live members
// whenever the membership changes (and once at Start). fn runs on the
// membership's goroutines, without the mesh's locks held, and must not
// block. Call before Start.
func (n *Node) Watch(fn func(self Member, members []Member)) {
	n.watchers = append(n.watchers, fn)
}

func (n *Node) notifyWatchers() {
	if len(n.watchers) == 0 {
		return
	}
	members := n.Members()
	for _, fn := range n.watchers {
		fn(n.self, members)
	}
}

// SetDatabase sets what this node advertises of the database whose
// changes it takes part in (Member.DB and Member.Reader). Call before
// Start.
func (n *Node) SetDatabase(db string, reader bool) {
	n.self.DB, n.self.Reader = db, reader
}
