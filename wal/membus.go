package wal

import (
	"slices"
	"sync"

	"github.com/meshcast/meshcast/wire/meshproto"
)

// MemHub connects Services in one process without a network, in the
// manner of Centrifuge's memory broker: each frame is decoded and handed
// to its receiver's Receive in order, per sender and lane, from a
// goroutine of the hub's; SetMembers tells every attached Service the
// membership. It lets the Service's cluster rules be tested without QUIC.
// Close stops its goroutines.
type MemHub struct {
	mu      sync.Mutex
	svcs    map[string]*Service
	members []Member
	q       []memFrame
	wake    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

type memFrame struct {
	from, to string
	frame    []byte
}

// NewMemHub returns a hub with no member; Close stops it.
func NewMemHub() *MemHub {
	h := &MemHub{svcs: map[string]*Service{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.wg.Go(h.run)
	return h
}

// Bus returns the Bus of member id.
func (h *MemHub) Bus(id string) Bus { return memBus{h, id} }

// Attach makes s the receiver of member id's frames; SetMembers makes it
// a live member.
func (h *MemHub) Attach(id string, s *Service) {
	h.mu.Lock()
	h.svcs[id] = s
	h.mu.Unlock()
}

// SetMembers makes ms the live membership and tells every attached
// Service of a member (ms must carry the members' DB and Reader). A
// Service of a member not in ms is cut off: frames to and from it are
// dropped.
func (h *MemHub) SetMembers(ms []Member) {
	h.mu.Lock()
	h.members = slices.Clone(ms)
	var svcs []*Service
	for _, m := range ms {
		if s := h.svcs[m.ID]; s != nil {
			svcs = append(svcs, s)
		}
	}
	h.mu.Unlock()
	for _, s := range svcs {
		s.SetMembers(slices.Clone(ms))
	}
}

func (h *MemHub) live(id string) bool {
	return slices.ContainsFunc(h.members, func(m Member) bool { return m.ID == id })
}

// Close stops the hub's goroutine; frames still queued are dropped.
func (h *MemHub) Close() {
	close(h.done)
	h.wg.Wait()
}

type memBus struct {
	h    *MemHub
	self string
}

func (b memBus) Send(to string, _ Lane, frame []byte) bool {
	h := b.h
	h.mu.Lock()
	ok := h.live(to) && h.live(b.self)
	if ok {
		h.q = append(h.q, memFrame{b.self, to, frame})
	}
	h.mu.Unlock()
	if ok {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	return ok
}

// run hands the queued frames to their receivers, in the order they were
// sent.
func (h *MemHub) run() {
	var batch []memFrame
	for {
		select {
		case <-h.done:
			return
		case <-h.wake:
		}
		h.mu.Lock()
		batch, h.q = h.q, batch[:0]
		h.mu.Unlock()
		for i, f := range batch {
			h.mu.Lock()
			s := h.svcs[f.to]
			ok := h.live(f.from) && h.live(f.to)
			h.mu.Unlock()
			if fr, _, err := meshproto.Decode(f.frame, 0); ok && s != nil && err == nil {
				s.Receive(f.from, fr)
			}
			batch[i] = memFrame{}
		}
	}
}
