package bench

import (
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
)

// subscriber is one receiving connection. Its reader goroutine owns every
// field below "reader-owned"; the runner reads them only after that goroutine
// has exited.
type subscriber struct {
	r    *runner
	id   int
	c    clientConn
	hist *measure.Histogram // shard shared with other subscribers
	recv *atomic.Uint64     // shard of the live delivery counter

	nextHB atomic.Int64 // runner clock of the next heartbeat; 0 = none
	hbRef  uint64       // owned by the heartbeat goroutine

	// reader-owned
	frameTime   int64 // runner clock when the current frame was read
	next        uint64
	total       uint64 // deliveries, warmup included
	measured    uint64
	lastRecv    int64
	gaps, ooo   uint64
	unexpectedN uint64
	firstUnexp  string
	readErr     error

	_ [64]byte // keep hot fields of neighbours off this cache line
}

// readLoop reads until the connection fails or is closed by the runner.
func (s *subscriber) readLoop() {
	for {
		op, b, err := s.c.ReadFrame()
		if err != nil {
			if !s.r.stopping.Load() {
				s.readErr = err
			}
			return
		}
		s.frameTime = s.r.now()
		s.r.proto.scan(op, b, s)
	}
}

func (s *subscriber) sample(b []byte) {
	t, seq, err := measure.ParseSample(b)
	if err != nil {
		s.unexpected(b)
		return
	}
	s.total++
	s.recv.Add(1)
	switch {
	case seq == s.next:
		s.next++
	case seq > s.next:
		s.gaps += seq - s.next
		s.next = seq + 1
	default:
		s.ooo++
	}
	if t >= s.r.measureStart.Load() {
		s.measured++
		s.lastRecv = s.frameTime
		s.hist.Record(s.frameTime - t)
	}
}

func (s *subscriber) unexpected(frame []byte) {
	s.unexpectedN++
	if s.firstUnexp == "" {
		s.firstUnexp = string(frame[:min(len(frame), 300)])
	}
}

func (s *subscriber) reply(frame []byte) {
	// A failed write surfaces as a read error soon after.
	_ = s.c.WriteFrame(ws.OpText, frame)
}

// heartbeat sends the protocol heartbeat if it is due at now.
func (s *subscriber) heartbeat(now int64, every time.Duration, buf []byte) []byte {
	due := s.nextHB.Load()
	if due == 0 || due > now {
		return buf
	}
	s.nextHB.Store(now + int64(every))
	s.hbRef++
	buf = s.r.proto.appendHeartbeat(buf[:0], s.hbRef+1) // ref 1 was the join
	_ = s.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = s.c.WriteFrame(ws.OpText, buf)
	return buf
}

// pubReader reads the publisher's connection: acks, heartbeat replies, errors.
type pubReader struct {
	r           *runner
	c           clientConn
	unexpectedN uint64
	firstUnexp  string
	readErr     error
}

func (p *pubReader) readLoop() {
	for {
		op, b, err := p.c.ReadFrame()
		if err != nil {
			if !p.r.stopping.Load() {
				p.readErr = err
			}
			return
		}
		p.r.proto.scan(op, b, p)
	}
}

// sample on the publisher means the server echoed our own broadcast.
func (p *pubReader) sample(b []byte) { p.unexpected(b) }

func (p *pubReader) unexpected(frame []byte) {
	p.unexpectedN++
	if p.firstUnexp == "" {
		p.firstUnexp = string(frame[:min(len(frame), 300)])
	}
}

func (p *pubReader) reply(frame []byte) { _ = p.c.WriteFrame(ws.OpText, frame) }
