package mesh

import (
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshcast/meshcast/mesh/presence"
	"github.com/meshcast/meshcast/mesh/route"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// Publish sends a broadcast to the other nodes that need it and returns
// how many peer queues took a frame. The frame is encoded once and the same
// bytes go to every peer (per region with RegionRelay, since the relay list
// differs).
func (n *Node) Publish(b *meshproto.Broadcast) int {
	b.Origin = n.self.ID
	b.RelayTo = nil
	n.published.Inc()
	n.mu.RLock()
	defer n.mu.RUnlock()
	switch n.cfg.Strategy {
	case AllNodes:
		if len(n.peers) == 0 {
			return 0
		}
		frame := meshproto.AppendBroadcast(broadcastBuf(b), b)
		sent := 0
		for _, p := range n.peers {
			if p.send(laneData, frame) {
				sent++
			}
		}
		return sent
	case RegionRelay:
		return n.publishRelayed(b)
	}
	targets := n.core.Nodes(b.Topic)
	if len(targets) == 0 {
		return 0
	}
	frame := meshproto.AppendBroadcast(broadcastBuf(b), b)
	sent := 0
	for _, id := range targets {
		if p := n.peers[id]; p != nil && p.send(laneData, frame) {
			sent++
		}
	}
	return sent
}

// publishRelayed sends directly to interested nodes of this node's region
// and once per other region, to its first interested node (by ID), with the
// rest of that region's interested nodes to forward to. Called with n.mu
// read-locked.
func (n *Node) publishRelayed(b *meshproto.Broadcast) int {
	targets := n.core.Nodes(b.Topic)
	if len(targets) == 0 {
		return 0
	}
	byRegion := make(map[string][]*peer)
	var order []string
	for _, id := range targets { // sorted, so the relay choice is stable
		p := n.peers[id]
		if p == nil {
			continue
		}
		r := p.m.Region
		if byRegion[r] == nil {
			order = append(order, r)
		}
		byRegion[r] = append(byRegion[r], p)
	}
	sent := 0
	var direct []byte
	for _, r := range order {
		ps := byRegion[r]
		if r == n.self.Region {
			if direct == nil {
				direct = meshproto.AppendBroadcast(broadcastBuf(b), b)
			}
			for _, p := range ps {
				if p.send(laneData, direct) {
					sent++
				}
			}
			continue
		}
		relayed := *b
		relayed.RelayTo = make([]string, 0, len(ps)-1)
		for _, p := range ps[1:] {
			relayed.RelayTo = append(relayed.RelayTo, p.m.ID)
		}
		if ps[0].send(laneData, meshproto.AppendBroadcast(broadcastBuf(&relayed), &relayed)) {
			sent++
		}
	}
	return sent
}

// relay forwards a broadcast this node received as a region relay.
func (n *Node) relay(b *meshproto.Broadcast) {
	to := b.RelayTo
	fwd := *b
	fwd.RelayTo = nil
	frame := meshproto.AppendBroadcast(broadcastBuf(&fwd), &fwd)
	n.mu.RLock()
	for _, id := range to {
		if p := n.peers[id]; p != nil {
			p.send(laneData, frame)
		}
	}
	n.mu.RUnlock()
}

// Subscribe records that topic has local subscribers (the edge calls it
// when the first one joins). On a real 0→1 change every peer is told, and
// the returned channel closes once every peer connected now has answered
// with its presence snapshot (or died), or after Config.SnapshotWait (see
// mesh/route); it closes too when the node stops.
func (n *Node) Subscribe(topic string) <-chan struct{} {
	done := make(chan struct{})
	if !n.in.post(input{ev: route.Subscribe{Topic: topic}, ready: done}) {
		return closedChan
	}
	return done
}

// Unsubscribe records that topic's last local subscriber has gone. Peers
// are told after Config.InterestLinger, unless a subscriber returns first.
func (n *Node) Unsubscribe(topic string) {
	n.in.post(input{ev: route.Unsubscribe{Topic: topic}})
}

// SendPresence sends this node's presence delta for topic to the nodes
// interested in it. The edge calls it under the topic's lock, so deltas
// leave in sequence order.
func (n *Node) SendPresence(topic string, d presence.Delta) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	targets := n.core.Nodes(topic)
	if len(targets) == 0 {
		return
	}
	frame := meshproto.Append(nil, deltaFrame(topic, d))
	for _, id := range targets {
		if p := n.peers[id]; p != nil {
			p.send(laneControl, frame)
		}
	}
}

// sendTo queues a control frame to one member, if it is known.
func (n *Node) sendTo(id string, f meshproto.Frame) {
	n.mu.RLock()
	p := n.peers[id]
	n.mu.RUnlock()
	if p != nil {
		p.send(laneControl, meshproto.Append(nil, f))
	}
}

// resyncFrames emits what a (re)connected peer, or one whose frames on
// lane were lost, needs: on the control lane, this node's interests and
// its presence of every topic the peer listens to (Core.Resync), all as
// snapshots in parts; on every lane, what the OnResync hooks add. The
// lane's writer calls it and writes the frames itself.
func (n *Node) resyncFrames(p *peer, lane byte, emit func([]byte) error) error {
	if lane != laneControl {
		return n.resyncHooks(p, lane, emit)
	}
	n.mu.RLock()
	mine, theirs := n.core.Resync(p.m.ID)
	n.mu.RUnlock()
	if err := interestFrames(mine, emit); err != nil {
		return err
	}
	for _, t := range theirs {
		if err := n.topicSnapshotHooks(p.m.ID, t, emit); err != nil {
			return err
		}
		if err := presenceFrames(t, n.h.OwnPresence(t), emit); err != nil {
			return err
		}
	}
	return n.resyncHooks(p, lane, emit)
}

// sendPresenceSnapshot queues this node's presence of topic, in parts, to
// one member.
func (n *Node) sendPresenceSnapshot(id, topic string) {
	n.mu.RLock()
	p := n.peers[id]
	n.mu.RUnlock()
	if p == nil {
		return
	}
	emit := func(f []byte) error {
		p.send(laneControl, f)
		return nil
	}
	n.topicSnapshotHooks(id, topic, emit)
	presenceFrames(topic, n.h.OwnPresence(topic), emit)
}

// dispatch handles one frame from an authenticated peer.
func (n *Node) dispatch(from string, f meshproto.Frame) {
	n.mu.RLock()
	dead := n.dead[from]
	n.mu.RUnlock()
	if dead {
		return
	}
	switch f := f.(type) {
	case *meshproto.Broadcast:
		if len(f.RelayTo) > 0 {
			n.relay(f)
		}
		n.h.Deliver(f)
	case *meshproto.InterestAdd:
		n.stepAndWait(route.InterestAdd{From: from, Topics: f.Topics})
	case *meshproto.InterestRemove:
		n.stepAndWait(route.InterestRemove{From: from, Topics: f.Topics})
	case *meshproto.InterestSnapshot:
		n.stepAndWait(route.InterestSnapshot{From: from, Topics: f.Topics})
	case *meshproto.PresenceDelta:
		if !n.h.ApplyPresence(f.Topic, deltaOf(f)) {
			n.sendTo(from, &meshproto.PresenceSyncRequest{Topic: f.Topic, Owner: f.Owner})
		}
	case *meshproto.PresenceSnapshot:
		n.h.ApplyPresenceSnapshot(f.Topic, snapshotOf(f))
		n.in.post(input{ev: route.SnapshotArrived{From: from, Topic: f.Topic}})
	case *meshproto.PresenceSyncRequest:
		n.sendPresenceSnapshot(from, f.Topic)
	case *meshproto.Ping:
		n.sendTo(from, &meshproto.Pong{Nanos: f.Nanos})
	case *meshproto.Pong:
		n.mu.RLock()
		p := n.peers[from]
		n.mu.RUnlock()
		if p != nil {
			p.rttNanos.Store(time.Now().UnixNano() - f.Nanos)
		}
	default:
		if fn := n.handlers[f.Type()]; fn != nil {
			fn(from, f)
		}
	}
}

func deltaFrame(topic string, d presence.Delta) *meshproto.PresenceDelta {
	f := &meshproto.PresenceDelta{Topic: topic, Owner: d.Owner, Seq: d.Seq, PrevSeq: d.PrevSeq}
	for _, j := range d.Joins {
		f.Joins = append(f.Joins, meshproto.PresenceEntry{Holder: j.Holder, Key: j.Key, Ref: j.Ref, PrevRef: j.PrevRef, Meta: j.Meta})
	}
	for _, l := range d.Leaves {
		f.Leaves = append(f.Leaves, meshproto.PresenceEntry{Holder: l.Holder, Key: l.Key, Ref: l.Ref, Meta: l.Meta})
	}
	return f
}

func deltaOf(f *meshproto.PresenceDelta) presence.Delta {
	d := presence.Delta{Owner: f.Owner, Seq: f.Seq, PrevSeq: f.PrevSeq}
	for _, e := range f.Joins {
		d.Joins = append(d.Joins, presence.Join{Entry: entryOf(f.Owner, e), PrevRef: e.PrevRef})
	}
	for _, e := range f.Leaves {
		d.Leaves = append(d.Leaves, entryOf(f.Owner, e))
	}
	return d
}

func snapshotOf(f *meshproto.PresenceSnapshot) presence.Snapshot {
	s := presence.Snapshot{Owner: f.Owner, Seq: f.Seq}
	for _, e := range f.Entries {
		s.Entries = append(s.Entries, entryOf(f.Owner, e))
	}
	return s
}

func entryOf(owner string, e meshproto.PresenceEntry) presence.Entry {
	return presence.Entry{Owner: owner, Holder: e.Holder, Key: e.Key, Ref: e.Ref, Meta: e.Meta}
}

// memberUp adds or updates a live member (memberlist callback).
func (n *Node) memberUp(m Member) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	if n.dead[m.ID] {
		// memberlist declared it dead and now hears it alive: its
		// presence was removed everywhere for nothing.
		n.returned.Inc()
		n.log.Warn("cluster member declared dead is alive again", "member", m.ID)
		// Posted under n.mu, as memberDown posts NodeDown: the core hears
		// deaths and returns in the order n.dead records them.
		n.in.post(input{ev: route.NodeUp{ID: m.ID}})
	}
	delete(n.dead, m.ID)
	if p := n.peers[m.ID]; p != nil {
		changed := p.m.Draining != m.Draining
		p.m.Draining = m.Draining
		n.mu.Unlock()
		if changed {
			n.notifyWatchers()
		}
		return
	}
	p := newPeer(n, m)
	n.peers[m.ID] = p
	n.log.Info("cluster member up", "member", m.ID, "region", m.Region, "mesh", m.MeshAddr)
	n.wg.Add(1)
	go func() { defer n.wg.Done(); p.run() }()
	n.mu.Unlock()
	n.notifyWatchers()
}

// memberDown removes a member that left or was declared dead: its
// connection closes, its interests go, and then the edge drops what it
// owned (on the driver, once the core has forgotten the member, so that
// when its presence leaves reach clients no route to it remains).
func (n *Node) memberDown(id string, left bool) {
	n.mu.Lock()
	p := n.peers[id]
	if p == nil || n.closed {
		n.mu.Unlock()
		return
	}
	delete(n.peers, id)
	n.dead[id] = true
	if left { // counted with the removal: Members never shows one without the other
		n.departed.Inc()
	} else {
		n.failed.Inc()
	}
	n.in.post(input{ev: route.NodeDown{ID: id}, then: func() { n.h.NodeDown(id) }})
	conns := n.inbound[id]
	delete(n.inbound, id)
	n.mu.Unlock()

	p.cancel()
	p.unregisterMetrics()
	for _, lane := range lanes {
		labels := receivedLabels(id, lane)
		n.metrics.UnregisterMetric("meshcast_mesh_frames_received_total" + labels)
		n.metrics.UnregisterMetric("meshcast_mesh_bytes_received_total" + labels)
	}
	for _, c := range conns {
		c.CloseWithError(errCodeGone, "member left the cluster")
	}
	n.log.Info("cluster member down", "member", id, "graceful", left)
	n.notifyWatchers()
}

// addInbound registers an authenticated inbound connection; false when
// its node was declared dead or this node is closing.
func (n *Node) addInbound(from string, c *quic.Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.dead[from] {
		return false
	}
	n.inbound[from] = append(n.inbound[from], c)
	return true
}

func (n *Node) removeInbound(from string, c *quic.Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	conns := n.inbound[from]
	for i, x := range conns {
		if x == c {
			conns = append(conns[:i], conns[i+1:]...)
			break
		}
	}
	if len(conns) == 0 {
		delete(n.inbound, from)
	} else {
		n.inbound[from] = conns
	}
}

// broadcastBuf returns a buffer large enough for b's frame, so that it is
// encoded with one allocation.
func broadcastBuf(b *meshproto.Broadcast) []byte {
	n := 64 + len(b.Topic) + len(b.Event) + len(b.Payload) + len(b.Meta) + len(b.Origin)
	for _, id := range b.RelayTo {
		n += 10 + len(id)
	}
	return make([]byte, 0, n)
}
