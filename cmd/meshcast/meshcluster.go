package main

import (
	"github.com/meshcast/meshcast/edge"
	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// meshCluster is the QUIC mesh as the edge sees it: it adapts a mesh.Node
// to edge.Cluster, and is the node's mesh.Handler, which hands what other
// nodes send to the server's edge.ClusterHandler. The edge knows nothing
// of the mesh, and the mesh nothing of the edge; this is where they meet.
type meshCluster struct {
	node *mesh.Node
	// h is the server's side, registered by edge.NewServer before the
	// node starts (the mesh calls its Handler only once started).
	h edge.ClusterHandler
}

// newMeshCluster makes the node of cfg, not started yet.
func newMeshCluster(cfg mesh.Config) (*meshCluster, error) {
	c := &meshCluster{}
	node, err := mesh.New(cfg, c)
	if err != nil {
		return nil, err
	}
	c.node = node
	return c, nil
}

// edge.Cluster.

func (c *meshCluster) ID() string                             { return c.node.ID() }
func (c *meshCluster) Subscribe(topic string) <-chan struct{} { return c.node.Subscribe(topic) }
func (c *meshCluster) Unsubscribe(topic string)               { c.node.Unsubscribe(topic) }

func (c *meshCluster) SendPresence(topic string, d presence.Delta) { c.node.SendPresence(topic, d) }

// Register sets the server's side and, with it, the edge's own frames:
// the mesh sends each topic's frames ahead of its presence snapshot, and
// hands the edge's frame types to the server.
func (c *meshCluster) Register(h edge.ClusterHandler) {
	c.h = h
	c.node.OnTopicSnapshot(func(_, topic string, emit func([]byte) error) error {
		for _, f := range h.TopicFrames(topic) {
			if err := emit(meshproto.Append(nil, f)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, t := range edge.PeerFrameTypes {
		c.node.Handle(t, h.Receive)
	}
}

func (c *meshCluster) Send(peer string, f meshproto.Frame) bool {
	return c.node.Send(peer, mesh.LaneControl, meshproto.Append(nil, f))
}

func (c *meshCluster) Publish(b *edge.Broadcast) {
	c.node.Publish(&meshproto.Broadcast{Topic: b.Topic, Event: b.Event, Payload: b.Payload, Meta: b.Meta,
		Enc: b.Enc, Binary: b.Binary, Unreliable: b.Unreliable})
}

// mesh.Handler.

func (c *meshCluster) Deliver(b *meshproto.Broadcast) {
	c.h.Deliver(&edge.Broadcast{Topic: b.Topic, Event: b.Event, Payload: b.Payload, Meta: b.Meta,
		Enc: b.Enc, Binary: b.Binary, Unreliable: b.Unreliable, Origin: b.Origin})
}

func (c *meshCluster) ApplyPresence(topic string, d presence.Delta) bool {
	return c.h.ApplyPresence(topic, d)
}

func (c *meshCluster) ApplyPresenceSnapshot(topic string, s presence.Snapshot) {
	c.h.ApplyPresenceSnapshot(topic, s)
}

func (c *meshCluster) OwnPresence(topic string) presence.Snapshot { return c.h.OwnPresence(topic) }
func (c *meshCluster) NodeDown(id string)                         { c.h.NodeDown(id) }
