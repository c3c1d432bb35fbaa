package edge

import (
	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// meshCluster is the QUIC mesh as a Cluster, for the tests that run real
// mesh nodes: the same adapter as cmd/meshcast's (which this package
// cannot import), so that these tests check the edge over the real mesh.
type meshCluster struct {
	node *mesh.Node
	h    ClusterHandler
}

// newMeshServer makes a server and its mesh node (not started) of cfg
// and mc; the node's metrics are on the server's /metrics.
func newMeshServer(cfg Config, mc mesh.Config) (*Server, *mesh.Node, error) {
	c := &meshCluster{}
	node, err := mesh.New(mc, c)
	if err != nil {
		return nil, nil, err
	}
	c.node = node
	s, err := NewServer(cfg, Deps{Cluster: c})
	if err != nil {
		return nil, nil, err
	}
	s.AddMetrics(node)
	return s, node, nil
}

func (c *meshCluster) ID() string                                  { return c.node.ID() }
func (c *meshCluster) Subscribe(topic string) <-chan struct{}      { return c.node.Subscribe(topic) }
func (c *meshCluster) Unsubscribe(topic string)                    { c.node.Unsubscribe(topic) }
func (c *meshCluster) SendPresence(topic string, d presence.Delta) { c.node.SendPresence(topic, d) }

// Register sets the server's side and, with it, the edge's own frames:
// the mesh sends each topic's frames ahead of its presence snapshot, and
// hands the edge's frame types to the server.
func (c *meshCluster) Register(h ClusterHandler) {
	c.h = h
	c.node.OnTopicSnapshot(func(_, topic string, emit func([]byte) error) error {
		for _, f := range h.TopicFrames(topic) {
			if err := emit(meshproto.Append(nil, f)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, t := range PeerFrameTypes {
		c.node.Handle(t, h.Receive)
	}
}

func (c *meshCluster) Send(peer string, f meshproto.Frame) bool {
	return c.node.Send(peer, mesh.LaneControl, meshproto.Append(nil, f))
}

func (c *meshCluster) Publish(b *Broadcast) {
	c.node.Publish(&meshproto.Broadcast{Topic: b.Topic, Event: b.Event, Payload: b.Payload, Meta: b.Meta,
		Enc: b.Enc, Binary: b.Binary, Unreliable: b.Unreliable})
}

func (c *meshCluster) Deliver(b *meshproto.Broadcast) {
	c.h.Deliver(&Broadcast{Topic: b.Topic, Event: b.Event, Payload: b.Payload, Meta: b.Meta,
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
