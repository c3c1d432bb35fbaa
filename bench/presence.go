package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"
)

// The presence scenario: watchers spread over the regions join one channel
// with presence; a churner per region re-tracks its key with a new meta
// {"t":send time,"o":region,"n":number} at Rate joins/s in total. Each
// watcher's presence_diff join gives a latency for (churner region →
// watcher region); a join is complete when every watcher saw it, and the
// last one's latency is the time until every node's clients see the join.

// presenceTrack counts, per join, the watchers that saw it.
type presenceTrack struct {
	mu    sync.Mutex
	seen  map[presenceKey]*presenceSeen
	state uint64
	leave uint64
}

type presenceKey struct {
	origin int
	n      uint64
}

type presenceSeen struct {
	watchers int
	last     int64 // latency of the latest watcher, ns
}

// presenceMeta is what a churner tracks.
type presenceMeta struct {
	T int64  `json:"t"`
	O string `json:"o"`
	N uint64 `json:"n"`
}

// presenceDiff takes a watcher's frame: presence_state, presence_diff or
// a heartbeat's reply.
func (s *regionSub) presenceDiff(op ws.OpCode, b []byte, now int64) {
	f, err := phx.ScanV2(b)
	pt := s.r.presence
	switch {
	case op != ws.OpText || err != nil:
		s.odd(b)
		return
	case string(f.Event) == "presence_state":
		pt.mu.Lock()
		pt.state++
		pt.mu.Unlock()
		return
	case string(f.Event) == "phx_reply":
		return
	case string(f.Event) != "presence_diff":
		s.odd(b)
		return
	}
	var diff struct {
		Joins  map[string]struct{ Metas []presenceMeta } `json:"joins"`
		Leaves map[string]struct{ Metas []presenceMeta } `json:"leaves"`
	}
	if json.Unmarshal(f.Payload, &diff) != nil {
		s.odd(b)
		return
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	for _, e := range diff.Leaves {
		pt.leave += uint64(len(e.Metas))
	}
	for _, e := range diff.Joins {
		for _, m := range e.Metas {
			o := regionIndex(s.r.cfg.Sites, []byte(m.O))
			if o < 0 || m.T == 0 {
				continue
			}
			s.record(o, m.T, now)
			k := presenceKey{o, m.N}
			ps := pt.seen[k]
			if ps == nil {
				ps = &presenceSeen{}
				pt.seen[k] = ps
			}
			ps.watchers++
			ps.last = max(ps.last, now-m.T)
		}
	}
}

// runPresence runs the presence scenario.
func (r *regionRun) runPresence(ctx context.Context, res *RegionResult) error {
	cfg := &r.cfg
	r.presence = &presenceTrack{seen: map[presenceKey]*presenceSeen{}}
	ps := r.placements()
	r.connectSubs(ctx, res, ps, func(i int) client.Join { return client.Join{Presence: "w" + strconv.Itoa(i)} },
		func(i int) client.Handler { return r.newSub(i, ps[i].region, 0) })
	if res.Connected == 0 {
		return fmt.Errorf("bench: no watcher connected: %s", res.FirstConnectError)
	}
	cfg.PubRegions = nil
	for _, s := range cfg.Sites {
		cfg.PubRegions = append(cfg.PubRegions, s.Region)
	}
	if err := r.connectPubs(ctx, 1, func(reg int) client.Join { return client.Join{Presence: "churn-" + cfg.Sites[reg].Region} }); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond) // the watchers' presence_state first
	before := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	cpu0 := measure.ReadCPU(0, false)
	p := r.pace(cfg.Rate, 0, 0, cfg.Warmup, cfg.Duration, 0)
	var measuredJoins []presenceKey
	var frame []byte
	for i := uint64(0); i < maxPublications; i++ {
		if _, ok := p.wait(ctx, i); !ok {
			break
		}
		pub := r.pubs[i%uint64(len(r.pubs))]
		pub.sent++
		t := r.now()
		meta, _ := json.Marshal(presenceMeta{T: t, O: cfg.Sites[pub.region].Region, N: pub.sent})
		frame = client.Track(frame[:0], pub.sent+1, pub.topic, meta)
		if err := pub.c.WriteFrame(ws.OpText, frame); err != nil {
			res.PublishErrors++
			res.FirstPublishError = err.Error()
			break
		}
		if t >= p.warmEnd {
			pub.measured++
			measuredJoins = append(measuredJoins, presenceKey{pub.region, pub.sent})
		}
		p.owe(uint64(res.Connected)) // every watcher sees every join
	}
	r.finish(ctx, res, p, before, cpu0)
	pf := &PresenceFigures{Joins: uint64(len(measuredJoins)), Watchers: res.Connected}
	h := measure.NewHistogram()
	pt := r.presence
	pt.mu.Lock()
	for _, k := range measuredJoins {
		if s := pt.seen[k]; s != nil && s.watchers >= res.Connected {
			h.Record(s.last)
		} else {
			pf.Incomplete++
		}
	}
	pf.StateFrames, pf.Leaves = pt.state, pt.leave
	pt.mu.Unlock()
	pf.AllSeen = h.Quantiles()
	res.Presence = pf
	return nil
}
