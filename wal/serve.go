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
// cannot prove that list complete.
func (s *Service) serve(ctx context.Context, e owner.ServeRecovery) {
	select {
	case s.serving <- struct{}{}:
		defer func() { <-s.serving }()
	case <-ctx.Done():
		return
	}
	f := e.Req
	recs, reason := s.recoverFor(ctx, e)
	if ctx.Err() != nil {
		return
	}
	if reason != "" {
		s.answer(e.To, &meshproto.ChangesRecovered{DB: s.cfg.DB, Call: f.Call, Err: reason})
		return
	}
	out := &meshproto.ChangesRecovered{DB: s.cfg.DB, Call: f.Call, ThroughLSN: e.Through.LSN, ThroughSeq: e.Through.Seq}
	size := 0
	for _, r := range recs {
		if size > 0 && size+len(r.Record) > answerPart {
			out.More = true
			s.answer(e.To, out)
			out = &meshproto.ChangesRecovered{DB: s.cfg.DB, Call: f.Call, ThroughLSN: e.Through.LSN, ThroughSeq: e.Through.Seq, Part: out.Part + 1}
			size = 0
		}
		out.Records = append(out.Records, r)
		size += len(r.Record) + 8*len(r.IDs)
	}
	s.answer(e.To, out)
	s.served.Inc()
}

// recoverFor matches and authorizes the history's changes for e's
// subscriptions; a reason when they cannot be proven complete.
func (s *Service) recoverFor(ctx context.Context, e owner.ServeRecovery) ([]meshproto.RecoveredRecord, string) {
	f := e.Req
	var subs []*Subscription
	m := NewMatcherBounded(s.cfg.RegexValueBytes, s.regexSkipped)
	for i := range f.Subs {
		sub, err := subOf(e.To, &f.Subs[i])
		if err != nil {
			return nil, ReasonUnknown
		}
		subs = append(subs, sub)
		m.Add(sub)
	}
	after := Pos{LSN(f.AfterLSN), f.AfterSeq}
	changes, reason := s.store.snapshot(after, Pos{LSN(e.Through.LSN), e.Through.Seq}, subs)
	if reason != "" {
		return nil, reason
	}
	var recs []meshproto.RecoveredRecord
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
				return nil, ReasonUnchecked
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
			recs = append(recs, meshproto.RecoveredRecord{Record: c.AppendBinary(nil), IDs: ids})
		}
	}
	// The authorization caches follow the catalog as the router reads
	// it; one that changed after the position (noted before the caches
	// were) may have decided on privileges the changes did not have.
	if s.store.catalogAfter(after.LSN) {
		return nil, ReasonCatalog
	}
	return recs, ""
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
