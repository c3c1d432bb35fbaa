package main

import (
	"github.com/meshcast/meshcast/mesh"
	"github.com/meshcast/meshcast/wal"
)

// meshBus is the wal Service's Bus over the mesh.
type meshBus struct{ n *mesh.Node }

func (b meshBus) Send(to string, l wal.Lane, frame []byte) bool {
	return b.n.Send(to, mesh.Lane(l), frame)
}

// attachWAL connects the other side of the seam, before the node's Start:
// the node advertises the database (and whether this node can read it),
// and hands the Service its frames, the membership and its lanes'
// resyncs.
func attachWAL(n *mesh.Node, db string, s *wal.Service) {
	n.SetDatabase(db, s.CanRead())
	for _, t := range wal.FrameTypes {
		n.Handle(t, s.Receive)
	}
	for _, l := range []wal.Lane{wal.LaneControl, wal.LaneChanges} {
		n.OnResync(mesh.Lane(l), func(peer string, emit func([]byte) error) error {
			for _, f := range s.Resync(peer, l) {
				if err := emit(f); err != nil {
					return err
				}
			}
			return nil
		})
	}
	n.Watch(func(self mesh.Member, members []mesh.Member) {
		ms := make([]wal.Member, 0, 1+len(members))
		for _, m := range append([]mesh.Member{self}, members...) {
			ms = append(ms, wal.Member{ID: m.ID, Name: m.Name, Region: m.Region, DB: m.DB, Reader: m.Reader, Draining: m.Draining})
		}
		s.SetMembers(ms)
	})
}
