package wal

import (
	"context"

	"github.com/meshcast/meshcast/wal/owner"
	"github.com/meshcast/meshcast/wire/meshproto"
)

// The owner's side of recovery: it answers a node's ChangesRecover
// (owner.ServeRecovery) from its history, on a goroutine of its own (row-
// level security queries the database), at most maxServing at a time.

const (
	maxServing = 4
	// answerPart bounds (about) the records of one ChangesRecovered.
	answerPart = 1 << 20
)

// serve answers e: the history's changes after the request's position
// through e.Through that its subscriptions match and may see, or why it
// cannot prove that list complete. The parts go out as they fill (the
// owner holds one at a time); a failure found later is the last part's
// Err, and the node drops what came before it.
func (s *Service) serve(ctx context.Context, e owner.ServeRecovery) {
	select {
	case s.serving <- struct{}{}:
		defer func() { <-s.serving }()
	case <-ctx.Done():
		return
	}
	p := &answerParts{s: s, to: e.To, cur: &meshproto.ChangesRecovered{DB: s.cfg.DB, Call: e.Req.Call, ThroughLSN: e.Through.LSN, ThroughSeq: e.Through.Seq}}
	reason := s.recoverFor(ctx, e, p.add)
	if ctx.Err() != nil {
		return
	}
	if reason != "" {
		p.cur.Records, p.cur.ThroughLSN, p.cur.ThroughSeq, p.cur.Err = nil, 0, 0, reason
	} else {
		s.served.Inc()
	}
	s.answer(e.To, p.cur)
}

// answerParts sends an answer's records in parts of about answerPart
// bytes.
type answerParts struct {
	s    *Service
	to   string
	cur  *meshproto.ChangesRecovered
	size int
}

func (p *answerParts) add(r meshproto.RecoveredRecord) {
	if p.size > 0 && p.size+len(r.Record) > answerPart {
		p.cur.More = true
		p.s.answer(p.to, p.cur)
		next := *p.cur
		next.Records, next.More, next.Part = nil, false, p.cur.Part+1
		p.cur, p.size = &next, 0
	}
	p.cur.Records = append(p.cur.Records, r)
	p.size += len(r.Record) + 8*len(r.IDs)
}

// recoverFor matches and authorizes the history's changes for e's
// subscriptions, handing each record to emit; a reason when they cannot
// be proven complete.
func (s *Service) recoverFor(ctx context.Context, e owner.ServeRecovery, emit func(meshproto.RecoveredRecord)) string {
	f := e.Req
	var subs []*Subscription
	m := NewMatcherBounded(s.cfg.RegexValueBytes, s.regexSkipped)
	for i := range f.Subs {
		sub, err := subOf(e.To, &f.Subs[i])
		if err != nil {
			return ReasonUnknown
		}
		subs = append(subs, sub)
		m.Add(sub)
	}
	after := Pos{LSN(f.AfterLSN), f.AfterSeq}
	changes, reason := s.store.snapshot(after, Pos{LSN(e.Through.LSN), e.Through.Seq}, subs)
	if reason != "" {
		return reason
	}
	for len(changes) > 0 {
		n := min(len(changes), maxBatchChanges)
		chunk := make([]*Change, n)
		hits := make([][]*Subscription, n)
		hit := false
		for i, c := range changes[:n] {
			cp := *c // Authorize may reduce OldRecord: not the history's
			chunk[i] = &cp
			hits[i] = m.Match(&cp, nil)
			hit = hit || len(hits[i]) > 0
		}
		changes = changes[n:]
		if hit && s.cfg.Authorize != nil {
			if err := s.cfg.Authorize(ctx, chunk, hits); err != nil {
				s.log.Warn("row-level security check of recovered changes failed; the recovery fails", "err", err)
				return ReasonUnchecked
			}
		}
		for i, c := range chunk {
			if len(hits[i]) == 0 {
				continue
			}
			ids := make([]uint64, len(hits[i]))
			for j, sub := range hits[i] {
				ids[j] = sub.ID
			}
			emit(meshproto.RecoveredRecord{Record: c.AppendBinary(nil), IDs: ids})
		}
	}
	// The authorization caches follow the catalog as the router reads
	// it; one that changed after the position (noted before the caches
	// were) may have decided on privileges the changes did not have.
	if s.store.catalogAfter(after.LSN) {
		return ReasonCatalog
	}
	return ""
}

// answer sends a part of an answer to node to (this node's own calls
// take it at once).
func (s *Service) answer(to string, f *meshproto.ChangesRecovered) {
	if to == s.cfg.Self || s.bus == nil {
		s.answers.deliver(f)
		return
	}
	s.bus.Send(to, LaneChanges, meshproto.Append(nil, f))
}
