package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
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

// presenceSub is one watcher.
type presenceSub struct {
	r      *regionRun
	region int
}

var (
	phxPresenceDiff  = []byte(`"presence_diff"`)
	phxPresenceState = []byte(`"presence_state"`)
)

// presenceMeta is what a churner tracks.
type presenceMeta struct {
	T int64  `json:"t"`
	O string `json:"o"`
	N uint64 `json:"n"`
}

func (s *presenceSub) onMessage(shard int, op ws.OpCode, b []byte, now int64) {
	st := s.r.shards[shard]
	if op != ws.OpText {
		st.unexpectedFrame(b)
		return
	}
	switch {
	case bytes.Contains(b, phxPresenceState):
		s.r.presence.mu.Lock()
		s.r.presence.state++
		s.r.presence.mu.Unlock()
		return
	case bytes.Contains(b, phxReplyEvent):
		return
	case !bytes.Contains(b, phxPresenceDiff):
		st.unexpectedFrame(b)
		return
	}
	var frame [5]json.RawMessage
	var diff struct {
		Joins  map[string]struct{ Metas []presenceMeta } `json:"joins"`
		Leaves map[string]struct{ Metas []presenceMeta } `json:"leaves"`
	}
	if json.Unmarshal(b, &frame) != nil || json.Unmarshal(frame[4], &diff) != nil {
		st.unexpectedFrame(b)
		return
	}
	pt := s.r.presence
	for _, e := range diff.Leaves {
		pt.mu.Lock()
		pt.leave += uint64(len(e.Metas))
		pt.mu.Unlock()
	}
	for _, e := range diff.Joins {
		for _, m := range e.Metas {
			o := regionIndex(s.r.cfg.Sites, []byte(m.O))
			if o < 0 || m.T == 0 {
				continue
			}
			k := o*s.r.n + s.region
			st.recv[k]++
			st.received.Add(1)
			lat := now - m.T
			if m.T >= s.r.measureStart.Load() {
				st.hist[k].Record(lat)
				st.lastRecv = max(st.lastRecv, now)
			}
			pt.mu.Lock()
			ps := pt.seen[presenceKey{o, m.N}]
			if ps == nil {
				ps = &presenceSeen{}
				pt.seen[presenceKey{o, m.N}] = ps
			}
			ps.watchers++
			ps.last = max(ps.last, lat)
			pt.mu.Unlock()
		}
	}
}

// runPresence runs the presence scenario.
func (r *regionRun) runPresence(ctx context.Context, res *RegionResult) error {
	cfg := &r.cfg
	r.presence = &presenceTrack{seen: map[presenceKey]*presenceSeen{}}
	ps := r.placements()
	r.connectSubs(ctx, res, ps, func(i int) string { return fmt.Sprintf(regionJoinPresence, "w"+strconv.Itoa(i)) },
		func(i int) msgHandler { return &presenceSub{r: r, region: ps[i].region} })
	if res.Connected == 0 {
		return fmt.Errorf("bench: no watcher connected: %s", res.FirstConnectError)
	}
	cfg.PubRegions = nil
	for _, s := range cfg.Sites {
		cfg.PubRegions = append(cfg.PubRegions, s.Region)
	}
	if err := r.connectPubs(ctx, 1, func(reg int) string {
		return fmt.Sprintf(regionJoinPresence, "churn-"+cfg.Sites[reg].Region)
	}); err != nil {
		r.closePubs()
		return err
	}
	defer r.closePubs()
	time.Sleep(200 * time.Millisecond) // the watchers' presence_state first
	before := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	cpu0 := readClientCPU()
	interval := int64(float64(time.Second) / cfg.Rate)
	start := r.now()
	warmEnd := start + int64(cfg.Warmup)
	end := warmEnd + int64(cfg.Duration)
	measuring, measureT := false, start
	var measuredJoins []presenceKey
	var frame []byte
	for i := uint64(0); i < maxPublications && ctx.Err() == nil; i++ {
		sched := start + int64(i)*interval
		if now := r.now(); sched > now {
			time.Sleep(time.Duration(sched - now))
		}
		now := r.now()
		if now >= end {
			break
		}
		if !measuring && now >= warmEnd {
			measuring, measureT = true, now
			r.measureStart.Store(now)
		}
		p := r.pubs[i%uint64(len(r.pubs))]
		p.sent++
		meta, _ := json.Marshal(presenceMeta{T: r.now(), O: cfg.Sites[p.region].Region, N: p.sent})
		frame = append(frame[:0], `["1","`...)
		frame = strconv.AppendUint(frame, p.sent+1, 10)
		frame = append(frame, `","`...)
		frame = append(frame, r.topic(0)...)
		frame = append(frame, `","presence",{"type":"presence","event":"track","payload":`...)
		frame = append(append(frame, meta...), `}]`...)
		if err := p.c.WriteFrame(ws.OpText, frame); err != nil {
			res.PublishErrors++
			res.FirstPublishError = err.Error()
			break
		}
		if measuring {
			p.measured++
			measuredJoins = append(measuredJoins, presenceKey{p.region, p.sent})
		}
	}
	publishEnd := r.now()
	if !measuring {
		measureT = publishEnd
		r.measureStart.Store(publishEnd)
	}
	// Every watcher gets every join: subChannel counts them for collect.
	var want uint64
	for _, p := range r.pubs {
		want += p.sent * uint64(res.Connected)
	}
	res.Drained = r.drainRegions(ctx, want)
	drainEnd := r.now()
	after := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	cpu1 := readClientCPU()
	r.collect(res, measureT, publishEnd)
	res.Server = serverFigures(before, after, res.Published, res.Delivered, time.Duration(drainEnd-measureT).Seconds())
	res.ClientCPU, res.HostCPU = cpu1.rate(cpu0)
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
	s := h.Summary()
	pf.AllSeen = measure.Quantiles{P50: measure.MS(s.P50), P90: measure.MS(s.P90), P99: measure.MS(s.P99), Max: measure.MS(s.Max), Count: s.Count}
	res.Presence = pf
	return nil
}
