package mesh

import (
	"bufio"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/quic-go/quic-go"

	"github.com/meshcast/meshcast/wire/meshproto"
)

const (
	handshakeTimeout = 5 * time.Second
	streamWriteLimit = 10 * time.Second
	maxBackoff       = 5 * time.Second
)

// peer is this node's sending side toward one other member: the QUIC
// connection this node dials for its own sends (the peer dials its own
// connection back for its sends), with one bounded queue per lane. It
// redials with backoff until the member is gone.
type peer struct {
	n      *Node
	m      Member
	lanes  [numLanes]*lane
	ctx    context.Context
	cancel context.CancelFunc

	connected   atomic.Bool
	rttNanos    atomic.Int64
	metricNames []string
}

func newPeer(n *Node, m Member) *peer {
	ctx, cancel := context.WithCancel(n.ctx)
	p := &peer{n: n, m: m, ctx: ctx, cancel: cancel}
	for _, id := range lanes {
		l := newLane(id, n.cfg.QueueBytes)
		labels := fmt.Sprintf(`{peer=%q,lane=%q}`, m.ID, laneName(id))
		l.sentFrames = p.counter("meshcast_mesh_frames_sent_total" + labels)
		l.sentBytes = p.counter("meshcast_mesh_bytes_sent_total" + labels)
		l.drops = p.counter("meshcast_mesh_drops_total" + labels)
		name := "meshcast_mesh_queue_bytes" + labels
		p.n.metrics.GetOrCreateGauge(name, func() float64 { return float64(l.depth()) })
		p.metricNames = append(p.metricNames, name)
		p.lanes[id] = l
	}
	name := fmt.Sprintf(`meshcast_mesh_rtt_seconds{peer=%q}`, m.ID)
	n.metrics.GetOrCreateGauge(name, func() float64 { return float64(p.rttNanos.Load()) / 1e9 })
	p.metricNames = append(p.metricNames, name)
	return p
}

func (p *peer) counter(name string) *metrics.Counter {
	p.metricNames = append(p.metricNames, name)
	return p.n.metrics.GetOrCreateCounter(name)
}

func (p *peer) unregisterMetrics() {
	for _, name := range p.metricNames {
		p.n.metrics.UnregisterMetric(name)
	}
}

// send queues a frame on a lane. A frame larger than a peer accepts is
// dropped here (counted and logged): sent, it would make the peer reset
// the whole connection.
func (p *peer) send(lane byte, frame []byte) bool {
	if len(frame)-4 > p.n.cfg.MaxFrameBytes {
		p.lanes[lane].drops.Inc()
		p.n.logLimited.Warn("mesh frame too large for peers; dropped", "peer", p.m.ID, "lane", laneName(lane), "bytes", len(frame), "limit", p.n.cfg.MaxFrameBytes)
		return false
	}
	return p.lanes[lane].push(frame)
}

// run dials and serves sessions until the peer is removed.
func (p *peer) run() {
	backoff := 100 * time.Millisecond
	for p.ctx.Err() == nil {
		conn, streams, err := p.dial()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			p.n.log.Debug("mesh dial failed", "peer", p.m.ID, "addr", p.m.MeshAddr, "err", err)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		began := time.Now()
		p.session(conn, streams)
		if time.Since(began) > maxBackoff {
			backoff = 100 * time.Millisecond
			continue
		}
		// A session that ended at once (the peer refused us, or is
		// going away) is retried with backoff too.
		select {
		case <-time.After(backoff):
		case <-p.ctx.Done():
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (p *peer) dial() (*quic.Conn, [numLanes]*quic.Stream, error) {
	var streams [numLanes]*quic.Stream
	addr, err := net.ResolveUDPAddr("udp", p.m.MeshAddr)
	if err != nil {
		return nil, streams, err
	}
	ctx, cancel := context.WithTimeout(p.ctx, handshakeTimeout)
	defer cancel()
	conn, err := p.n.tr.Dial(ctx, addr, p.n.tlsClient, p.n.quicConfig())
	if err != nil {
		return nil, streams, err
	}
	fail := func(err error) (*quic.Conn, [numLanes]*quic.Stream, error) {
		conn.CloseWithError(errCodeHandshake, "handshake failed")
		return nil, streams, err
	}
	ekm, err := exportKey(conn)
	if err != nil {
		return fail(err)
	}
	for _, lane := range lanes {
		s, err := conn.OpenStreamSync(ctx)
		if err != nil {
			return fail(err)
		}
		s.SetDeadline(time.Now().Add(handshakeTimeout))
		hello := p.n.hello(roleDialer, lane, ekm)
		if _, err := s.Write(meshproto.Append(nil, hello)); err != nil {
			return fail(err)
		}
		if lane == laneControl {
			// The acceptor proves it holds the secret too before we send
			// it anything else.
			f, _, err := meshproto.ReadFrame(bufio.NewReaderSize(s, 512), 4096, nil)
			if err != nil {
				return fail(fmt.Errorf("mesh: hello reply: %w", err))
			}
			h, ok := f.(*meshproto.Hello)
			if !ok || !p.n.validHello(h, roleAcceptor, laneControl, ekm) {
				p.n.authFailures.Inc()
				return fail(errors.New("mesh: peer failed authentication"))
			}
			if h.NodeID != p.m.ID {
				// A restarted node on the old one's address: the old member
				// is about to be declared dead.
				return fail(fmt.Errorf("mesh: %s answers at %s, not %s", h.NodeID, p.m.MeshAddr, p.m.ID))
			}
		}
		s.SetDeadline(time.Time{})
		streams[lane] = s
	}
	return conn, streams, nil
}

// session runs one connection: a writer per lane, pings for RTT. It
// returns when the connection fails or the peer is removed.
func (p *peer) session(conn *quic.Conn, streams [numLanes]*quic.Stream) {
	p.connected.Store(true)
	p.n.connects.Inc()
	p.n.log.Info("mesh peer connected", "peer", p.m.ID, "region", p.m.Region)
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	go func() { // conn.Context ends when the connection does
		select {
		case <-conn.Context().Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	p.lanes[laneControl].requestResync()
	p.lanes[laneChanges].requestResync()
	done := make(chan struct{}, numLanes)
	for _, lane := range lanes {
		go func() {
			p.write(ctx, p.lanes[lane], streams[lane])
			cancel()
			done <- struct{}{}
		}()
	}
	ping := time.NewTicker(p.n.cfg.PingInterval)
	defer ping.Stop()
	for loop := true; loop; {
		select {
		case <-ctx.Done():
			loop = false
		case <-ping.C:
			p.send(laneControl, meshproto.Append(nil, &meshproto.Ping{Nanos: time.Now().UnixNano()}))
		}
	}
	conn.CloseWithError(0, "")
	for range lanes {
		<-done
	}
	p.connected.Store(false)
	// Control and changes frames lost with the connection are superseded
	// by the resync on reconnect; data frames wait for it.
	p.lanes[laneControl].reset()
	p.lanes[laneChanges].reset()
	if p.ctx.Err() == nil {
		p.n.log.Info("mesh peer disconnected", "peer", p.m.ID)
	}
}

// write drains one lane into its stream: each wake-up takes everything
// queued and writes it as one buffer.
func (p *peer) write(ctx context.Context, l *lane, s *quic.Stream) {
	var spare [][]byte
	var buf []byte
	l.kick() // start with what queued while disconnected
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		}
		batch, resync := l.take(spare)
		buf = buf[:0]
		if resync {
			// Written before the batch: the batch's presence deltas are
			// older than the snapshots, which the peer then keeps.
			err := p.n.resyncFrames(p, l.id, func(f []byte) error {
				buf = append(buf, f...)
				l.sentFrames.Inc()
				if len(buf) < 1<<20 {
					return nil
				}
				err := p.writeStream(s, buf)
				l.sentBytes.Add(len(buf))
				buf = buf[:0]
				return err
			})
			if err != nil {
				p.n.log.Debug("mesh resync write failed", "peer", p.m.ID, "err", err)
				return
			}
		}
		frames := 0
		for _, f := range batch {
			if len(f) > 0 {
				buf = append(buf, f...)
				frames++
			}
		}
		clear(batch)
		spare = batch[:0]
		if len(buf) == 0 {
			continue
		}
		if err := p.writeStream(s, buf); err != nil {
			p.n.log.Debug("mesh write failed", "peer", p.m.ID, "lane", laneName(l.id), "err", err)
			return
		}
		l.sentFrames.Add(frames)
		l.sentBytes.Add(len(buf))
		if cap(buf) > 1<<20 {
			buf = nil // don't keep a burst's buffer forever
		}
	}
}

func (p *peer) writeStream(s *quic.Stream, b []byte) error {
	s.SetWriteDeadline(time.Now().Add(streamWriteLimit))
	_, err := s.Write(b)
	return err
}

func exportKey(conn *quic.Conn) ([]byte, error) {
	state := conn.ConnectionState().TLS
	return state.ExportKeyingMaterial(ekmLabel, nil, 32)
}

func (n *Node) hello(role, lane byte, ekm []byte) *meshproto.Hello {
	return &meshproto.Hello{
		NodeID:      n.self.ID,
		Region:      n.self.Region,
		Incarnation: n.incarnation,
		Lane:        lane,
		MAC:         helloMAC(n.meshKey, role, lane, n.self.ID, n.incarnation, ekm),
	}
}

func (n *Node) validHello(h *meshproto.Hello, role, lane byte, ekm []byte) bool {
	want := helloMAC(n.meshKey, role, lane, h.NodeID, h.Incarnation, ekm)
	return h.Lane == lane && hmac.Equal(h.MAC, want)
}
