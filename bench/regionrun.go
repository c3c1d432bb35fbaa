package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/gobwas/ws"
)

// regionShard is what one poller's subscribers count, without locks.
type regionShard struct {
	hist       []*measure.Histogram // [from*n+to], measured deliveries
	recv       []uint64             // [from*n+to], every delivery
	received   atomic.Uint64
	lastRecv   int64
	gaps, ooo  uint64
	unexpected uint64
	firstUnexp string
	_          [64]byte
}

// regionRun is the state of one RunRegions.
type regionRun struct {
	cfg      RegionConfig
	n        int // regions
	base     time.Time
	baseUnix int64
	nonce    string

	measureStart atomic.Int64
	stopping     atomic.Bool

	group  *pollGroup
	shards []*regionShard

	subChannel  [][]int // [channel][region] subscribers joined
	pubs        []*regionPub
	connectHist []*measure.Histogram // [region] dial + join of subscribers
	connMu      sync.Mutex
	connErrs    int
	firstErr    string

	presence *presenceTrack // presence scenario only
}

func (r *regionRun) now() int64 { return r.baseUnix + int64(time.Since(r.base)) }

// topic returns the topic of channel c.
func (r *regionRun) topic(c int) string {
	return "realtime:mb-" + string(r.cfg.Scenario) + "-" + r.nonce + "-" + strconv.Itoa(c)
}

// RunRegions runs one region scenario against the nodes of cfg.Sites.
// Like Run it is bounded by cfg's durations (see RegionConfig.Budget) and
// returns an error only when nothing could be measured.
func RunRegions(ctx context.Context, cfg RegionConfig) (*RegionResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &regionRun{cfg: cfg, n: len(cfg.Sites), base: time.Now()}
	r.baseUnix = r.base.UnixNano()
	r.nonce = strconv.FormatInt(r.baseUnix/1e6%1e8, 36)
	r.measureStart.Store(math.MaxInt64)
	pollers := cfg.Pollers
	if pollers <= 0 {
		pollers = runtime.GOMAXPROCS(0)
	}
	if r.group, err = newPollGroup(pollers, r.now, 25*time.Second); err != nil {
		return nil, err
	}
	defer r.group.close()
	for range pollers {
		sh := &regionShard{recv: make([]uint64, r.n*r.n)}
		for range r.n * r.n {
			sh.hist = append(sh.hist, measure.NewHistogram())
		}
		r.shards = append(r.shards, sh)
	}
	for range r.n {
		r.connectHist = append(r.connectHist, measure.NewHistogram())
	}
	res := newRegionResult(&cfg)
	for _, s := range cfg.Sites {
		res.ClientRTTMS[s.Region] = probeRTT(ctx, s.URLs, cfg.RegionHeader, s.Region, cfg.HandshakeTimeout)
	}
	switch cfg.Scenario {
	case ScenarioConnect:
		err = r.runConnect(ctx, res)
	case ScenarioPresence:
		err = r.runPresence(ctx, res)
	default:
		err = r.runBroadcast(ctx, res)
	}
	if err != nil && res.Connected == 0 {
		return nil, err
	}
	return res, err
}

// placement is where subscriber i of a scenario goes.
type placement struct{ region, channel int }

func (r *regionRun) placements() []placement {
	cfg := &r.cfg
	var out []placement
	switch cfg.Scenario {
	case ScenarioRooms:
		for c := range cfg.Channels {
			for k := range cfg.SubsPerChannel {
				out = append(out, placement{region: (c + k) % r.n, channel: c})
			}
		}
	case ScenarioConnect:
		for i := range cfg.Subs {
			out = append(out, placement{region: i % r.n, channel: i / 100})
		}
	default:
		for i := range cfg.Subs {
			out = append(out, placement{region: i % r.n})
		}
	}
	return out
}

// nodeOf picks a node URL of region reg for a client, from the seed.
func (r *regionRun) nodeOf(rng *rand.Rand, reg int) string {
	urls := r.cfg.Sites[reg].URLs
	return urls[rng.IntN(len(urls))]
}

// dial opens a WebSocket to url as a client of region reg.
func (r *regionRun) dial(ctx context.Context, url string, reg int) (*wsConn, error) {
	return dialRegionWS(ctx, url, r.cfg.RegionHeader, r.cfg.Sites[reg].Region, r.cfg.HandshakeTimeout)
}

func dialRegionWS(ctx context.Context, url, header, region string, timeout time.Duration) (*wsConn, error) {
	if header == "" {
		return dialWS(ctx, url, timeout, 4096)
	}
	d := ws.Dialer{Timeout: timeout, ReadBufferSize: 4096, Header: ws.HandshakeHeaderHTTP(http.Header{header: {region}})}
	nc, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	seed := uint64(time.Now().UnixNano())
	return &wsConn{nc: nc, br: br, rbuf: make([]byte, 0, 512), wbuf: make([]byte, 0, 256), rng: rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)}, nil
}

// Join payloads of the region scenarios.
const (
	regionJoinBroadcast = `{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false}}`
	regionJoinPresence  = `{"config":{"broadcast":{"self":false,"ack":false},"presence":{"key":"%s","enabled":true},"postgres_changes":[],"private":false}}`
)

// joinTopic joins topic with join_ref "1" and waits for the ok reply.
func joinTopic(c *wsConn, topic, config string, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	if err := c.WriteFrame(ws.OpText, AppendPhxJoinConfig(nil, phxJoinRef, topic, config)); err != nil {
		return fmt.Errorf("send phx_join: %w", err)
	}
	for range 16 {
		op, b, err := c.ReadFrame()
		if err != nil {
			return fmt.Errorf("await join reply: %w", err)
		}
		if op != ws.OpText {
			continue
		}
		f, err := parsePhxFrame(b)
		if err != nil {
			return err
		}
		if f.Event != "phx_reply" || f.Ref == nil || *f.Ref != phxJoinRef || f.Topic != topic {
			continue
		}
		if f.Status != "ok" {
			return fmt.Errorf("join refused: %s", f.Raw)
		}
		return nil
	}
	return errors.New("no join reply within 16 frames")
}

// connectSubs opens a subscriber per placement at the connect rate, joins
// it (config(i)) and hands it to the pollers with handler h(i).
func (r *regionRun) connectSubs(ctx context.Context, res *RegionResult, ps []placement, config func(i int) string, h func(i int) msgHandler) {
	cfg := &r.cfg
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	urls := make([]string, len(ps))
	for i, p := range ps {
		urls[i] = r.nodeOf(rng, p.region)
	}
	r.subChannel = make([][]int, 0)
	for _, p := range ps {
		for len(r.subChannel) <= p.channel {
			r.subChannel = append(r.subChannel, make([]int, r.n))
		}
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / cfg.ConnectRate)
	sem := make(chan struct{}, maxHandshakes)
	var wg sync.WaitGroup
	var ok atomic.Int64
	lastLog := start
	for i, p := range ps {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			c, err := r.dial(ctx, urls[i], p.region)
			if err == nil {
				if err = joinTopic(c, r.topic(p.channel), config(i), cfg.HandshakeTimeout); err != nil {
					c.Close()
				}
			}
			if err == nil {
				r.connectHist[p.region].Record(int64(time.Since(t0)))
				err = r.group.add(c, h(i))
			}
			r.connMu.Lock()
			defer r.connMu.Unlock()
			if err != nil {
				r.connErrs++
				if r.firstErr == "" {
					r.firstErr = fmt.Sprintf("%s: %v", urls[i], err)
				}
				return
			}
			ok.Add(1)
			r.subChannel[p.channel][p.region]++
		}()
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			cfg.Logf("connecting: %d/%d subscribed", ok.Load(), len(ps))
		}
	}
	wg.Wait()
	res.ConnectSeconds = time.Since(start).Seconds()
	res.Connected = int(ok.Load())
	res.ConnectErrors = len(ps) - res.Connected
	res.FirstConnectError = r.firstErr
	for i, h := range r.connectHist {
		s := h.Summary()
		res.ConnectMS[cfg.Sites[i].Region] = measure.Quantiles{P50: measure.MS(s.P50), P90: measure.MS(s.P90), P99: measure.MS(s.P99), Max: measure.MS(s.Max), Count: s.Count}
	}
	cfg.Logf("connected %d/%d subscribers in %.1fs", res.Connected, len(ps), res.ConnectSeconds)
}

// regionPub is one publishing connection (a few per run: an ordinary
// goroutine reads what it receives and throws it away).
type regionPub struct {
	c              *wsConn
	region         int
	channel, index int // index among the channel's publishers
	sent, measured uint64
	frames         atomic.Uint64
	readErr        error
	done           chan struct{}
}

// connectPubs opens one publisher per (channel, publisher region).
func (r *regionRun) connectPubs(ctx context.Context, channels int, config func(reg int) string) error {
	cfg := &r.cfg
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x9b))
	for ch := range channels {
		for k, name := range cfg.PubRegions {
			reg := regionIndex(cfg.Sites, []byte(name))
			url := r.nodeOf(rng, reg)
			c, err := r.dial(ctx, url, reg)
			if err == nil {
				if err = joinTopic(c, r.topic(ch), config(reg), cfg.HandshakeTimeout); err != nil {
					c.Close()
				}
			}
			if err != nil {
				return fmt.Errorf("bench: publisher in %s (%s): %w", name, url, err)
			}
			p := &regionPub{c: c, region: reg, channel: ch, index: k, done: make(chan struct{})}
			go p.readLoop(&r.stopping)
			r.pubs = append(r.pubs, p)
		}
	}
	return nil
}

func (p *regionPub) readLoop(stopping *atomic.Bool) {
	defer close(p.done)
	for {
		if _, _, err := p.c.ReadFrame(); err != nil {
			if !stopping.Load() {
				p.readErr = err
			}
			return
		}
		p.frames.Add(1)
	}
}

func (r *regionRun) closePubs() {
	r.stopping.Store(true)
	for _, p := range r.pubs {
		p.c.CloseGracefully()
	}
	for _, p := range r.pubs {
		<-p.done
	}
}

// broadcastSub is a subscriber of the fanout and rooms scenarios.
type broadcastSub struct {
	r      *regionRun
	region int
	next   []uint64 // per publisher of the channel: the next sequence
}

func (s *broadcastSub) onMessage(shard int, op ws.OpCode, b []byte, now int64) {
	st := s.r.shards[shard]
	switch op {
	case ws.OpBinary:
		k, err := ParseKind4(b)
		if err != nil {
			st.unexpectedFrame(b)
			return
		}
		b = k.Payload
	case ws.OpText:
		if !bytes.Contains(b, phxBroadcastEvent) {
			if !bytes.Contains(b, phxReplyEvent) {
				st.unexpectedFrame(b)
			}
			return
		}
	}
	rs, ok := measure.ParseRegionSample(b)
	o := regionIndex(s.r.cfg.Sites, rs.Origin)
	if !ok || o < 0 {
		st.unexpectedFrame(b)
		return
	}
	k := o*s.r.n + s.region
	st.recv[k]++
	st.received.Add(1)
	if rs.Pub < len(s.next) {
		switch n := &s.next[rs.Pub]; {
		case rs.Seq == *n:
			*n++
		case rs.Seq > *n:
			st.gaps += rs.Seq - *n
			*n = rs.Seq + 1
		default:
			st.ooo++
		}
	}
	if rs.T >= s.r.measureStart.Load() {
		st.hist[k].Record(now - rs.T)
		st.lastRecv = max(st.lastRecv, now)
	}
}

func (st *regionShard) unexpectedFrame(b []byte) {
	st.unexpected++
	if st.firstUnexp == "" {
		st.firstUnexp = string(b[:min(len(b), 200)])
	}
}

// received is every delivery so far, over all shards.
func (r *regionRun) received() uint64 {
	var n uint64
	for _, s := range r.shards {
		n += s.received.Load()
	}
	return n
}

// runBroadcast runs fanout and rooms.
func (r *regionRun) runBroadcast(ctx context.Context, res *RegionResult) error {
	cfg := &r.cfg
	channels := 1
	if cfg.Scenario == ScenarioRooms {
		channels = cfg.Channels
	}
	ps := r.placements()
	r.connectSubs(ctx, res, ps, func(int) string { return regionJoinBroadcast }, func(i int) msgHandler {
		next := make([]uint64, len(cfg.PubRegions))
		for j := range next {
			next[j] = 1
		}
		return &broadcastSub{r: r, region: ps[i].region, next: next}
	})
	if res.Connected == 0 {
		return fmt.Errorf("bench: no subscriber connected: %s", res.FirstConnectError)
	}
	if err := r.connectPubs(ctx, channels, func(int) string { return regionJoinBroadcast }); err != nil {
		r.closePubs()
		return err
	}
	defer r.closePubs()
	// Publishers in a seeded order, so a channel's publishers take turns.
	order := append([]*regionPub(nil), r.pubs...)
	rand.New(rand.NewPCG(cfg.Seed, 0x7)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	subsOf := func(ch int) (n uint64) {
		for _, v := range r.subChannel[ch] {
			n += uint64(v)
		}
		return n
	}
	subsPerChannel := float64(res.Connected) / float64(channels)

	before := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	cpu0 := readClientCPU()
	cfg.Logf("publishing: %d publishers, warmup %s, measure %s, rate %s", len(order), cfg.Warmup, cfg.Duration, rateString(cfg.Rate))
	var interval int64
	if cfg.Rate > 0 {
		interval = int64(float64(time.Second) / cfg.Rate)
	}
	payload := make([]byte, 0, cfg.PayloadSize)
	frame := make([]byte, 0, cfg.PayloadSize+256)
	start := r.now()
	warmEnd := start + int64(cfg.Warmup)
	end := warmEnd + int64(cfg.Duration)
	var expected, writtenOff uint64
	var lagMax time.Duration
	var late uint64
	measuring := false
	measureT := start
	var writeErr error
	for i := uint64(0); i < maxPublications && ctx.Err() == nil; i++ {
		now := r.now()
		if interval > 0 {
			sched := start + int64(i)*interval
			if sched > now {
				time.Sleep(time.Duration(sched - now))
				now = r.now()
			} else if lag := time.Duration(now - sched); lag > time.Millisecond {
				late++
				lagMax = max(lagMax, lag)
			}
		} else {
			now = r.waitInflight(ctx, expected, uint64(float64(cfg.Window)*subsPerChannel)+1, end, &writtenOff, &res.WindowStalls)
		}
		if now >= end {
			break
		}
		if !measuring && now >= warmEnd {
			measuring, measureT = true, now
			r.measureStart.Store(now)
		}
		p := order[i%uint64(len(order))]
		payload, _ = measure.AppendRegionPayload(payload[:0], cfg.PayloadSize, r.now(), p.sent+1, p.index, cfg.Sites[p.region].Region)
		frame = AppendPhxBroadcast(frame[:0], phxJoinRef, p.sent+2, r.topic(p.channel), "m", payload)
		if err := p.c.WriteFrame(ws.OpText, frame); err != nil {
			writeErr = err
			break
		}
		p.sent++
		if measuring {
			p.measured++
		}
		expected += subsOf(p.channel)
	}
	publishEnd := r.now()
	if !measuring {
		measureT = publishEnd
		r.measureStart.Store(publishEnd)
	}
	res.Drained = r.drainRegions(ctx, expected)
	drainEnd := r.now()
	after := scrapeSites(ctx, cfg.Sites, cfg.RegionHeader)
	cpu1 := readClientCPU()
	res.PublisherLagMaxMS, res.PublisherLate = measure.MS(lagMax), late
	if writeErr != nil {
		res.PublishErrors++
		res.FirstPublishError = writeErr.Error()
	}
	r.collect(res, measureT, publishEnd)
	res.Server = serverFigures(before, after, res.Published, res.Delivered, time.Duration(drainEnd-measureT).Seconds())
	res.ClientCPU, res.HostCPU = cpu1.rate(cpu0)
	return nil
}

// waitInflight blocks until fewer than limit deliveries are outstanding,
// the run ends, or nothing arrives for 2 s (then the outstanding ones are
// written off and a stall counted).
func (r *regionRun) waitInflight(ctx context.Context, expected, limit uint64, end int64, writtenOff *uint64, stalls *int) int64 {
	last, lastProgress := r.received(), r.now()
	for {
		now := r.now()
		got := r.received() + *writtenOff
		if expected < got+limit || now >= end || ctx.Err() != nil {
			return now
		}
		if got != last {
			last, lastProgress = got, now
		} else if now-lastProgress > int64(2*time.Second) {
			*writtenOff += expected - got
			*stalls++
			return now
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// drainRegions waits for want deliveries, at most cfg.Drain, or until
// nothing arrived for a second (the WAN adds at most a few hundred ms).
func (r *regionRun) drainRegions(ctx context.Context, want uint64) bool {
	deadline := time.Now().Add(r.cfg.Drain)
	last, lastProgress := r.received(), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got := r.received()
		if got >= want {
			return true
		}
		if got != last {
			last, lastProgress = got, time.Now()
		} else if time.Since(lastProgress) > time.Second {
			r.cfg.Logf("drain: no progress for 1s, %d of %d deliveries missing", want-got, want)
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return r.received() >= want
}

// collect fills res from the shards and publishers once the drain is
// over: it stops the pollers first, so their counters are final.
func (r *regionRun) collect(res *RegionResult, measureT, publishEnd int64) {
	cfg := &r.cfg
	r.group.stopping.Store(true) // pollers stop; their counters are final
	r.group.wg.Wait()
	n := r.n
	for from := range n {
		for to := range n {
			k := from*n + to
			h := measure.NewHistogram()
			var recv uint64
			for _, st := range r.shards {
				h.Merge(st.hist[k])
				recv += st.recv[k]
			}
			var exp, expM uint64
			for _, p := range r.pubs {
				if p.region == from {
					exp += p.sent * uint64(r.subChannel[p.channel][to])
					expM += p.measured * uint64(r.subChannel[p.channel][to])
				}
			}
			if exp == 0 && recv == 0 {
				continue
			}
			ps := pairStats(h, cfg.Sites[from].Region, cfg.Sites[to].Region, cfg.OneWay)
			ps.Expected, ps.Received, ps.Lost = exp, recv, int64(exp)-int64(recv)
			ps.ExpectedMeasured = expM
			res.Pairs = append(res.Pairs, ps)
			res.Delivered += ps.Count
			res.Expected += expM
			res.Lost += ps.Lost
		}
	}
	var lastRecv int64
	for _, st := range r.shards {
		res.Gaps += st.gaps
		res.OutOfOrder += st.ooo
		res.Unexpected += st.unexpected
		if res.FirstUnexpected == "" {
			res.FirstUnexpected = st.firstUnexp
		}
		lastRecv = max(lastRecv, st.lastRecv)
	}
	for _, p := range r.pubs {
		res.Published += p.sent
		res.PublishedMeasured += p.measured
		if p.readErr != nil {
			res.PublishErrors++
			if res.FirstPublishError == "" {
				res.FirstPublishError = p.readErr.Error()
			}
		}
	}
	res.Publishers = len(r.pubs)
	if d := time.Duration(publishEnd - measureT).Seconds(); d > 0 {
		res.PublishPerSec = float64(res.PublishedMeasured) / d
	}
	if lastRecv > measureT {
		res.DeliveriesPerSec = float64(res.Delivered) / time.Duration(lastRecv-measureT).Seconds()
	}
	res.Disconnects, _ = r.group.errs()
	if _, err := r.group.errs(); err != nil {
		res.FirstDisconnect = err.Error()
	}
	res.Goroutines = runtime.NumGoroutine()
	sort.Slice(res.Pairs, func(i, j int) bool {
		if res.Pairs[i].From != res.Pairs[j].From {
			return res.Pairs[i].From < res.Pairs[j].From
		}
		return res.Pairs[i].To < res.Pairs[j].To
	})
}

// pairStats summarises one pair's histogram.
func pairStats(h *measure.Histogram, from, to string, oneWay func(a, b string) time.Duration) PairStats {
	s := h.Summary()
	ps := PairStats{From: from, To: to, Count: s.Count, OneWayMS: -1,
		P50: measure.MS(s.P50), P90: measure.MS(s.P90), P99: measure.MS(s.P99), Max: measure.MS(s.Max), Mean: measure.MS(s.Mean), CDF: h.CDF(60)}
	if s.Count > 0 {
		ps.Min = measure.MS(time.Duration(h.Min()))
	}
	if oneWay != nil {
		ps.OneWayMS = measure.MS(oneWay(from, to))
	}
	return ps
}

// clientCPU is meshbench's and the host's CPU seconds.
type clientCPU struct {
	at            time.Time
	self, host    float64
	selfOK, hstOK bool
}

func readClientCPU() clientCPU {
	c := clientCPU{at: time.Now()}
	if v, err := measure.ReadCPUSeconds(0); err == nil {
		c.self, c.selfOK = v, true
	}
	if v, err := measure.ReadHostBusySeconds(); err == nil {
		c.host, c.hstOK = v, true
	}
	return c
}

// rate returns meshbench's and the host's cores between c0 and c.
func (c clientCPU) rate(c0 clientCPU) (self, host float64) {
	d := c.at.Sub(c0.at).Seconds()
	self, host = -1, -1
	if d <= 0 {
		return
	}
	if c.selfOK && c0.selfOK {
		self = (c.self - c0.self) / d
	}
	if c.hstOK && c0.hstOK {
		host = (c.host - c0.host) / d
	}
	return
}

// probeRTT measures the client ↔ node round trip of a region: the median
// of a few heartbeat round trips on the first node (0 if it failed).
func probeRTT(ctx context.Context, urls []string, header, region string, timeout time.Duration) float64 {
	c, err := dialRegionWS(ctx, urls[0], header, region, timeout)
	if err != nil {
		return -1
	}
	defer c.CloseGracefully()
	var rtts []time.Duration
	c.SetDeadline(time.Now().Add(timeout))
	for i := range 5 {
		t0 := time.Now()
		if c.WriteFrame(ws.OpText, AppendPhxHeartbeat(nil, uint64(i+1))) != nil {
			return -1
		}
		for range 4 {
			_, b, err := c.ReadFrame()
			if err != nil {
				return -1
			}
			if bytes.Contains(b, phxReplyEvent) {
				break
			}
		}
		rtts = append(rtts, time.Since(t0))
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	return measure.MS(rtts[len(rtts)/2])
}
