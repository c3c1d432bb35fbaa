package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"
)

// The fanout and rooms region scenarios: broadcasts from publishers in
// some regions to subscribers in every region.

// OnMessage takes a broadcast (text or kind 4) and counts it by the pair
// of its origin and this subscriber's region.
func (s *regionSub) OnMessage(op ws.OpCode, b []byte, now int64) {
	if s.r.presence != nil {
		s.presenceDiff(op, b, now)
		return
	}
	if op == ws.OpBinary {
		u, err := phx.DecodeUserBroadcast(b)
		if err != nil {
			s.odd(b)
			return
		}
		b = u.Payload
	} else if f, err := phx.ScanV2(b); err != nil || string(f.Event) != "broadcast" {
		if err != nil || string(f.Event) != "phx_reply" {
			s.odd(b)
		}
		return
	}
	rs, ok := measure.ParseRegionSample(b)
	o := regionIndex(s.r.cfg.Sites, rs.Origin)
	if !ok || o < 0 {
		s.odd(b)
		return
	}
	if rs.Pub < len(s.next) {
		s.seq(&s.next[rs.Pub], rs.Seq)
	}
	s.record(o, rs.T, now)
}

// runBroadcast runs fanout and rooms.
func (r *regionRun) runBroadcast(ctx context.Context, res *RegionResult) error {
	cfg := &r.cfg
	channels := 1
	if cfg.Scenario == ScenarioRooms {
		channels = cfg.Channels
	}
	ps := r.placements()
	r.connectSubs(ctx, res, ps, func(int) client.Join { return client.Join{} },
		func(i int) client.Handler { return r.newSub(i, ps[i].region, len(cfg.PubRegions)) })
	if res.Connected == 0 {
		return fmt.Errorf("bench: no subscriber connected: %s", res.FirstConnectError)
	}
	if err := r.connectPubs(ctx, channels, func(int) client.Join { return client.Join{} }); err != nil {
		return err
	}
	// Publishers in a seeded order, so a channel's publishers take turns.
	order := append([]*regionPub(nil), r.pubs...)
	rand.New(rand.NewPCG(cfg.Seed, 0x7)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	subsOf := func(ch int) (n uint64) {
		for _, v := range r.subChannel[ch] {
			n += uint64(v)
		}
		return n
	}
	var window uint64
	if cfg.Rate == 0 {
		window = uint64(float64(cfg.Window)*float64(res.Connected)/float64(channels)) + 1
	}
	before := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	cpu0 := measure.ReadCPU(0, false)
	r.logf("publishing: %d publishers, warmup %s, measure %s, rate %s", len(order), cfg.Warmup, cfg.Duration, rateString(cfg.Rate))
	p := r.pace(cfg.Rate, window, 0, cfg.Warmup, cfg.Duration, 50*time.Microsecond)
	payload := make([]byte, 0, cfg.PayloadSize)
	var frame, scratch []byte
	for i := uint64(0); i < maxPublications; i++ {
		if _, ok := p.wait(ctx, i); !ok {
			break
		}
		pub := order[i%uint64(len(order))]
		t := r.now()
		payload, _ = measure.AppendRegionPayload(payload[:0], cfg.PayloadSize, t, pub.sent+1, pub.index, cfg.Sites[pub.region].Region)
		frame, scratch = client.Broadcast(frame[:0], scratch, pub.sent+2, pub.topic, "m", payload)
		if err := pub.c.WriteFrame(ws.OpText, frame); err != nil {
			res.PublishErrors++
			res.FirstPublishError = err.Error()
			break
		}
		if pub.sent++; t >= p.warmEnd {
			pub.measured++
		}
		p.owe(subsOf(pub.channel))
	}
	r.finish(ctx, res, p, before, cpu0)
	return nil
}

// finish drains what p's publications owe and fills res from the
// subscribers, the publishers and the nodes' /metrics (before: when
// publishing started).
func (r *regionRun) finish(ctx context.Context, res *RegionResult, p *pacer, before siteScrape, cpu0 measure.CPU) {
	publishEnd := r.now()
	res.Drained = r.drain(ctx, p.owed.Load(), r.cfg.Drain, time.Second)
	drainEnd := r.now()
	after := scrapeSites(ctx, r.cfg.Sites, r.cfg.RegionHeader)
	res.ClientCPU, res.HostCPU, _ = measure.ReadCPU(0, false).Cores(cpu0)
	res.PublisherLagMaxMS, res.PublisherLate, res.WindowStalls = measure.MS(p.lagMax), p.late, p.stalls
	r.collect(res, p.warmEnd, publishEnd)
	res.Server = serverFigures(before, after, res.Published, res.Delivered, time.Duration(drainEnd-p.warmEnd).Seconds())
}
