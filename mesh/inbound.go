package mesh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshcast/meshcast/mesh/quicgate"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// QUIC application error codes the mesh closes connections with.
const (
	errCodeHandshake quic.ApplicationErrorCode = 0x100
	errCodeShutdown  quic.ApplicationErrorCode = 0x101
	errCodeGone      quic.ApplicationErrorCode = 0x102
)

func (n *Node) acceptLoop() {
	for {
		conn, err := n.ln.Accept(n.ctx)
		if err != nil {
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.serveInbound(conn)
		}()
	}
}

// serveInbound authenticates a peer's connection and reads its two lanes.
// TLS has proven the peer holds the cluster's mesh key; its Hellos (one
// per lane, within handshakeTimeout) bind the connection to a member. A
// connection that fails here is closed before any frame of it is
// processed, and counted as unauthenticated (the quicgate's OnAbandon).
func (n *Node) serveInbound(conn *quic.Conn) {
	from, readers, counts, err := n.acceptHellos(conn)
	if err != nil {
		n.log.Debug("mesh peer failed its Hello", "remote", conn.RemoteAddr().String(), "err", err)
		conn.CloseWithError(errCodeHandshake, "authentication failed")
		return
	}
	quicgate.Admit(conn)
	if !n.addInbound(from, conn) {
		conn.CloseWithError(errCodeGone, "node is not a live member")
		return
	}
	defer n.removeInbound(from, conn)
	done := make(chan struct{}, numLanes)
	for _, lane := range lanes {
		go func() {
			err := n.readLane(from, lane, readers[lane], counts[lane])
			if !errors.Is(err, context.Canceled) {
				n.log.Debug("mesh read ended", "peer", from, "lane", laneName(lane), "err", err)
			}
			conn.CloseWithError(0, "")
			done <- struct{}{}
		}()
	}
	for range lanes {
		<-done
	}
}

// acceptHellos reads the dialer's Hello on each lane, and answers the one
// on the control lane. Until they are in, a lane is read through a small
// buffer; its 64 KiB one comes with the peer's proof.
func (n *Node) acceptHellos(conn *quic.Conn) (from string, readers [numLanes]*bufio.Reader, counts [numLanes]*countReader, err error) {
	ekm, err := exportKey(conn)
	if err != nil {
		return "", readers, counts, fmt.Errorf("no keying material: %w", err)
	}
	ctx, cancel := context.WithTimeout(n.ctx, handshakeTimeout)
	defer cancel()
	for _, lane := range lanes {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return "", readers, counts, fmt.Errorf("no stream for lane %s: %w", laneName(lane), err)
		}
		s.SetReadDeadline(time.Now().Add(handshakeTimeout))
		counts[lane] = &countReader{r: s}
		small := bufio.NewReaderSize(counts[lane], helloBuffer)
		f, _, err := meshproto.ReadFrame(small, 4096, nil)
		h, ok := f.(*meshproto.Hello)
		if err != nil || !ok || !n.validHello(h, roleDialer, lane, ekm) || (from != "" && h.NodeID != from) {
			return "", readers, counts, fmt.Errorf("no valid Hello on lane %s (%v)", laneName(lane), err)
		}
		from = h.NodeID
		if lane == laneControl {
			if _, err := s.Write(meshproto.Append(nil, n.hello(roleAcceptor, laneControl, ekm))); err != nil {
				return "", readers, counts, fmt.Errorf("hello reply: %w", err)
			}
		}
		s.SetReadDeadline(time.Time{})
		// Reads of a full buffer's size bypass small's buffer once it is
		// drained.
		readers[lane] = bufio.NewReaderSize(small, 64<<10)
	}
	return from, readers, counts, nil
}

// helloBuffer is a lane's read buffer until its Hello is verified.
const helloBuffer = 512

// readLane reads frames from one lane and dispatches them in order.
func (n *Node) readLane(from string, lane byte, br *bufio.Reader, cr *countReader) error {
	labels := receivedLabels(from, lane)
	frames := n.metrics.GetOrCreateCounter("meshcast_mesh_frames_received_total" + labels)
	bytes := n.metrics.GetOrCreateCounter("meshcast_mesh_bytes_received_total" + labels)
	counted := 0
	asm := newAssembler(n.cfg.MaxSnapshotBytes)
	for {
		// A new buffer for every frame (nil): what the handler keeps of a
		// frame may alias it.
		f, _, err := meshproto.ReadFrame(br, n.cfg.MaxFrameBytes, nil)
		if err != nil {
			if errors.Is(err, meshproto.ErrTooLarge) || errors.Is(err, meshproto.ErrMalformed) ||
				errors.Is(err, meshproto.ErrUnknownType) || errors.Is(err, meshproto.ErrVersion) {
				n.badFrames.Inc()
				n.logLimited.Warn("mesh peer sent a bad frame; closing", "peer", from, "err", err)
			}
			return err
		}
		frames.Inc()
		bytes.Add(cr.n - counted) // bytes read from the stream so far; exact in total
		counted = cr.n
		if f, err = asm.add(f); err != nil {
			n.badFrames.Inc()
			n.logLimited.Warn("mesh peer sent too large a snapshot; closing", "peer", from, "err", err)
			return err
		}
		if f != nil {
			n.dispatch(from, f)
		}
	}
}

// countReader counts the bytes read through it (one goroutine only).
type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func receivedLabels(peer string, lane byte) string {
	return fmt.Sprintf(`{peer=%q,lane=%q}`, peer, laneName(lane))
}
