package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/measure"
)

// Region scenarios (meshbench local / meshbench regions): clients are placed
// in regions, each connects to a node of its region, and every message says
// where and when it was sent, so latency is reported per (publisher region
// → subscriber region) pair. The subscribers are held by epoll pollers, so
// that one process holds tens of thousands. See bench/README.md "Latency
// by region".

// Scenario names a region scenario.
type Scenario string

// Region scenarios. The Postgres changes scenario is `meshbench wal`
// (RunWAL), which meshbench local starts on the same emulated WAN.
const (
	// ScenarioFanout: Subs subscribers of one channel spread over every
	// region, one publisher per region of PubRegions (default the first).
	ScenarioFanout Scenario = "fanout"
	// ScenarioRooms: Channels channels × SubsPerChannel subscribers each,
	// a channel's subscribers spread over the regions, and one publisher
	// per channel in each region of PubRegions (default every region).
	ScenarioRooms Scenario = "rooms"
	// ScenarioPresence: Subs watchers spread over the regions, joined with
	// presence; one churner per region tracks at Rate joins/s in total;
	// latency is track → presence_diff join at each watcher, and the time
	// until every watcher saw a join.
	ScenarioPresence Scenario = "presence"
	// ScenarioConnect: Subs connections opened at ConnectRate over the
	// regions, held for Idle; reports handshake times per region and the
	// nodes' resident memory per connection.
	ScenarioConnect Scenario = "connect"
)

// Site is a region and the WebSocket URLs of its nodes.
type Site struct {
	Region string
	URLs   []string
	// PIDs of the nodes' processes, when local (server RSS from /proc);
	// otherwise it comes from each node's /metrics.
	PIDs []int
}

// RegionConfig describes one region scenario run. Zero fields take the
// defaults noted.
type RegionConfig struct {
	Scenario Scenario // default ScenarioFanout
	Sites    []Site   // at least one; clients of a region go to its URLs, round-robin
	Label    string   // names the run (the routing strategy in meshbench local)

	Subs           int      // fanout: subscribers (default 300); presence: watchers (default 60); connect: connections (default 1000)
	Channels       int      // rooms: channels (default 20)
	SubsPerChannel int      // rooms: subscribers per channel (default 10)
	PubRegions     []string // regions with publishers (fanout: the first site; rooms: every site)
	// Rate is publications per second over all publishers (fanout,
	// rooms), or presence joins per second over all churners. 0 with
	// fanout or rooms publishes as fast as Window allows.
	Rate        float64
	Window      int           // publications in flight when Rate is 0; default 32
	PayloadSize int           // bytes of each payload; default 120
	Duration    time.Duration // measured publishing; default 10s
	Warmup      time.Duration // publishing before measuring; default 1s
	Drain       time.Duration // max wait for outstanding deliveries; default 5s
	Idle        time.Duration // connect: how long the connections are held after the ramp; default 5s
	ConnectRate float64       // connections opened per second; default 1000
	Seed        uint64        // picks each client's node within its region; default 1
	// RegionHeader, if set, is sent on every WebSocket upgrade with the
	// client's region as value (fly.io: Fly-Prefer-Region routes the
	// connection to a machine of that region).
	RegionHeader string
	// OneWay is the emulated one-way delay between two regions, for the
	// report (nil: not emulated).
	OneWay func(from, to string) time.Duration
	// Pollers is the number of goroutines holding the subscribers
	// (default GOMAXPROCS).
	Pollers int

	HandshakeTimeout time.Duration // dial + join of one connection; default 10s
	Logf             func(format string, args ...any)
}

// Limits of a region run.
const (
	maxRegionConns = 60000
	maxRegionPubs  = 4096
)

func (c RegionConfig) withDefaults() (RegionConfig, error) {
	orDefault(&c.Scenario, ScenarioFanout)
	orDefault(&c.Subs, map[Scenario]int{ScenarioFanout: 300, ScenarioPresence: 60, ScenarioConnect: 1000}[c.Scenario])
	orDefault(&c.Channels, 20)
	orDefault(&c.SubsPerChannel, 10)
	if len(c.PubRegions) == 0 {
		for i, s := range c.Sites {
			if i == 0 || c.Scenario != ScenarioFanout {
				c.PubRegions = append(c.PubRegions, s.Region)
			}
		}
	}
	orDefault(&c.Window, 32)
	orDefault(&c.PayloadSize, 120)
	orDefault(&c.Duration, 10*time.Second)
	orDefault(&c.Warmup, time.Second)
	orDefault(&c.Drain, 5*time.Second)
	orDefault(&c.Idle, 5*time.Second)
	orDefault(&c.ConnectRate, 1000)
	orDefault(&c.Seed, 1)
	orDefault(&c.HandshakeTimeout, 10*time.Second)
	orDefault(&c.Pollers, runtime.GOMAXPROCS(0))
	var errs checks
	check := errs.ok
	check(slices.Contains([]Scenario{ScenarioFanout, ScenarioRooms, ScenarioPresence, ScenarioConnect}, c.Scenario),
		"unknown scenario %q (fanout, rooms, presence, connect; wal is meshbench wal)", c.Scenario)
	check(len(c.Sites) > 0, "no regions")
	seen := map[string]bool{}
	for _, s := range c.Sites {
		check(s.Region != "" && len(s.Region) <= 16 && plainJSONString(s.Region) && !seen[s.Region], "bad or repeated region %q", s.Region)
		seen[s.Region] = true
		check(len(s.URLs) > 0, "region %s has no node URL", s.Region)
		for _, u := range s.URLs {
			p, err := url.Parse(u)
			check(err == nil && (p.Scheme == "ws" || p.Scheme == "wss"), "node URL %q is not ws:// or wss://", u)
		}
	}
	for _, r := range c.PubRegions {
		check(seen[r], "publisher region %q has no site", r)
	}
	check(c.conns() >= 1 && c.conns() <= maxRegionConns, "%d connections outside [1, %d]", c.conns(), maxRegionConns)
	check(c.publishers() <= maxRegionPubs, "%d publishers over %d", c.publishers(), maxRegionPubs)
	check(c.Rate >= 0 && (c.Scenario != ScenarioPresence || c.Rate > 0), "rate must be >= 0 (presence: > 0 joins/s)")
	check(c.PayloadSize >= measure.MinRegionPayloadSize && c.PayloadSize <= 1<<20, "payload must be within [%d, 1 MiB]", measure.MinRegionPayloadSize)
	for _, d := range []time.Duration{c.Duration, c.Warmup, c.Idle} {
		check(d >= 0 && d <= maxDuration, "durations must be within [0, 1h]")
	}
	check(c.Drain >= 0 && c.Drain <= time.Minute, "drain must be within [0, 1m]")
	check(c.ConnectRate > 0 && c.ConnectRate <= maxConnectRate, "connect rate must be within (0, %d]", maxConnectRate)
	return c, errs.err("region config")
}

// conns is the number of subscriber connections the scenario opens.
func (c *RegionConfig) conns() int {
	if c.Scenario == ScenarioRooms {
		return c.Channels * c.SubsPerChannel
	}
	return c.Subs
}

// publishers is the number of publishing connections.
func (c *RegionConfig) publishers() int {
	switch c.Scenario {
	case ScenarioFanout:
		return len(c.PubRegions)
	case ScenarioRooms:
		return c.Channels * len(c.PubRegions)
	case ScenarioPresence:
		return len(c.Sites)
	}
	return 0
}

// Budget bounds how long RunRegions takes with this config.
func (c RegionConfig) Budget() time.Duration {
	c, err := c.withDefaults()
	if err != nil {
		return time.Minute
	}
	connect := time.Duration(float64(c.conns()+c.publishers())/c.ConnectRate*float64(time.Second)) + 2*c.HandshakeTimeout
	d := connect + c.Warmup + c.Duration + c.Drain + 30*time.Second
	if c.Scenario == ScenarioConnect {
		d += c.Idle + 10*time.Second
	}
	return d
}

// regionRun is one RunRegions.
type regionRun struct {
	*run
	cfg   RegionConfig
	n     int // regions
	nonce string
	poll  *client.Poller
	hists [histShards][]*measure.Histogram // per shard, [from*n+to]

	subs        []*regionSub
	subChannel  [][]int // [channel][region] subscribers joined
	mu          sync.Mutex
	pubs        []*regionPub
	pubHolder   *client.Readers      // from connectPubs on
	connectHist []*measure.Histogram // [region] dial + join of subscribers
	presence    *presenceTrack       // presence scenario only
}

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
	r := &regionRun{run: newRun(cfg.Logf), cfg: cfg, n: len(cfg.Sites)}
	r.nonce = strconv.FormatInt(r.baseUnix/1e6%1e8, 36)
	if r.poll, err = client.NewPoller(cfg.Pollers, r.now, client.PhoenixHeartbeat, heartbeatEvery); err != nil {
		return nil, err
	}
	defer r.poll.Close()
	defer func() {
		if r.pubHolder != nil {
			r.pubHolder.Close()
		}
	}()
	for i := range r.hists {
		for range r.n * r.n {
			r.hists[i] = append(r.hists[i], measure.NewHistogram())
		}
	}
	for range r.n {
		r.connectHist = append(r.connectHist, measure.NewHistogram())
	}
	res := newRegionResult(&cfg)
	for _, s := range cfg.Sites {
		res.ClientRTTMS[s.Region] = r.probeRTT(ctx, s)
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
	var out []placement
	for i := range r.cfg.conns() {
		switch r.cfg.Scenario {
		case ScenarioRooms:
			c, k := i/r.cfg.SubsPerChannel, i%r.cfg.SubsPerChannel
			out = append(out, placement{region: (c + k) % r.n, channel: c})
		case ScenarioConnect:
			out = append(out, placement{region: i % r.n, channel: i / 100})
		default:
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

// dial opens a WebSocket to url as a client of region reg and joins topic.
func (r *regionRun) dial(ctx context.Context, url string, reg int, topic string, j client.Join) (*client.WS, error) {
	o := client.Options{Timeout: r.cfg.HandshakeTimeout}
	if r.cfg.RegionHeader != "" {
		o.Header = http.Header{r.cfg.RegionHeader: {r.cfg.Sites[reg].Region}}
	}
	c, err := client.DialWS(ctx, url, o)
	if err == nil && topic != "" {
		if err = client.JoinChannel(c, topic, j, r.cfg.HandshakeTimeout, nil); err != nil {
			c.Close()
		}
	}
	return c, err
}

// connectSubs opens a subscriber per placement at the connect rate, joins
// it (join(i)) and hands it to the pollers with handler h(i).
func (r *regionRun) connectSubs(ctx context.Context, res *RegionResult, ps []placement, join func(i int) client.Join, h func(i int) client.Handler) {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x5eed))
	urls := make([]string, len(ps))
	for i, p := range ps {
		urls[i] = r.nodeOf(rng, p.region)
		for len(r.subChannel) <= p.channel {
			r.subChannel = append(r.subChannel, make([]int, r.n))
		}
	}
	st := r.connect(ctx, len(ps), r.cfg.ConnectRate, maxHandshakes, func(ctx context.Context, i int) error {
		t0, p := time.Now(), ps[i]
		c, err := r.dial(ctx, urls[i], p.region, r.topic(p.channel), join(i))
		if err == nil {
			r.connectHist[p.region].Record(int64(time.Since(t0)))
			err = r.poll.Hold(c, h(i))
		}
		if err != nil {
			return fmt.Errorf("%s: %v", urls[i], err)
		}
		r.mu.Lock()
		r.subChannel[p.channel][p.region]++
		r.mu.Unlock()
		return nil
	})
	res.Connected, res.ConnectErrors, res.FirstConnectError, res.ConnectSeconds = st.ok, st.errs, st.first, st.seconds
	for i, h := range r.connectHist {
		res.ConnectMS[r.cfg.Sites[i].Region] = h.Quantiles()
	}
}

// regionPub is one publishing connection; a holder reads (and drops) what
// it receives.
type regionPub struct {
	c              *client.WS
	topic          string
	region         int
	channel, index int // index among the channel's publishers
	sent, measured uint64
}

// connectPubs opens one publisher per (channel, publisher region).
func (r *regionRun) connectPubs(ctx context.Context, channels int, join func(reg int) client.Join) error {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x9b))
	r.pubHolder = client.NewReaders(r.now, client.PhoenixHeartbeat, heartbeatEvery)
	for ch := range channels {
		for k, name := range r.cfg.PubRegions {
			reg := slices.IndexFunc(r.cfg.Sites, func(s Site) bool { return s.Region == name })
			url := r.nodeOf(rng, reg)
			c, err := r.dial(ctx, url, reg, r.topic(ch), join(reg))
			if err != nil {
				return fmt.Errorf("bench: publisher in %s (%s): %w", name, url, err)
			}
			r.pubHolder.Hold(c, discard{})
			r.pubs = append(r.pubs, &regionPub{c: c, topic: r.topic(ch), region: reg, channel: ch, index: k})
		}
	}
	return nil
}

// discard is the handler of connections whose frames do not matter.
type discard struct{}

func (discard) OnMessage(ws.OpCode, []byte, int64) {}

// regionSub is a subscriber of the fanout, rooms or presence scenario.
type regionSub struct {
	r      *regionRun
	id     int
	region int
	hists  []*measure.Histogram // its shard's, by pair
	recv   []uint64             // deliveries by origin region
	next   []uint64             // broadcast: per publisher of its channel, the next sequence
	tally
}

func (r *regionRun) newSub(i, region, pubs int) *regionSub {
	s := &regionSub{r: r, id: i, region: region, hists: r.hists[i%histShards], recv: make([]uint64, r.n), next: make([]uint64, pubs)}
	for j := range s.next {
		s.next[j] = 1
	}
	r.mu.Lock()
	r.subs = append(r.subs, s)
	r.mu.Unlock()
	return s
}

// record counts a delivery from region o stamped t, read at now.
func (s *regionSub) record(o int, t, now int64) {
	s.recv[o]++
	s.r.deliver(s.id)
	if s.r.measured(t) {
		s.hists[o*s.r.n+s.region].Record(now - t)
		s.lastRecv = max(s.lastRecv, now)
	}
}

// regionIndex returns the index of region name b among the sites, -1 if
// none.
func regionIndex(sites []Site, b []byte) int {
	return slices.IndexFunc(sites, func(s Site) bool { return s.Region == string(b) })
}

// collect fills res from the subscribers and publishers once the drain is
// over: it closes the pollers first, so the counters are final.
func (r *regionRun) collect(res *RegionResult, measureT, publishEnd int64) {
	r.poll.Close()
	n := r.n
	recv := make([]uint64, n*n)
	var t tally
	for _, s := range r.subs {
		for o, c := range s.recv {
			recv[o*n+s.region] += c
		}
		t.add(&s.tally)
	}
	for from := range n {
		for to := range n {
			k := from*n + to
			h := measure.NewHistogram()
			for _, sh := range r.hists {
				h.Merge(sh[k])
			}
			var exp, expM uint64
			for _, p := range r.pubs {
				if p.region == from {
					exp += p.sent * uint64(r.subChannel[p.channel][to])
					expM += p.measured * uint64(r.subChannel[p.channel][to])
				}
			}
			if exp == 0 && recv[k] == 0 {
				continue
			}
			ps := pairStats(h, r.cfg.Sites[from].Region, r.cfg.Sites[to].Region, r.cfg.OneWay)
			ps.Expected, ps.Received, ps.Lost, ps.ExpectedMeasured = exp, recv[k], int64(exp)-int64(recv[k]), expM
			res.Pairs = append(res.Pairs, ps)
			res.Delivered += ps.Count
			res.Expected += expM
			res.Lost += ps.Lost
		}
	}
	res.Gaps, res.OutOfOrder, res.Unexpected, res.FirstUnexpected = t.gaps, t.ooo, t.unexpected, t.firstUnexp
	for _, p := range r.pubs {
		res.Published += p.sent
		res.PublishedMeasured += p.measured
	}
	if n, err := r.pubHolder.Errs(); n > 0 {
		res.PublishErrors += n
		res.FirstPublishError = err.Error()
	}
	res.Publishers = len(r.pubs)
	if d := time.Duration(publishEnd - measureT).Seconds(); d > 0 {
		res.PublishPerSec = float64(res.PublishedMeasured) / d
	}
	if t.lastRecv > measureT {
		res.DeliveriesPerSec = float64(res.Delivered) / time.Duration(t.lastRecv-measureT).Seconds()
	}
	r.disconnects(res)
	res.Goroutines = runtime.NumGoroutine()
}

// disconnects reports the subscribers that failed while held.
func (r *regionRun) disconnects(res *RegionResult) {
	if n, err := r.poll.Errs(); n > 0 {
		res.Disconnects, res.FirstDisconnect = n, err.Error()
	}
}

// pairStats summarises one pair's histogram.
func pairStats(h *measure.Histogram, from, to string, oneWay func(a, b string) time.Duration) PairStats {
	s := h.Summary()
	ps := PairStats{From: from, To: to, Count: s.Count, OneWayMS: -1, P50: measure.MS(s.P50), P90: measure.MS(s.P90),
		P99: measure.MS(s.P99), Max: measure.MS(s.Max), Mean: measure.MS(s.Mean), CDF: h.CDF(60)}
	if s.Count > 0 {
		ps.Min = measure.MS(time.Duration(h.Min()))
	}
	if oneWay != nil {
		ps.OneWayMS = measure.MS(oneWay(from, to))
	}
	return ps
}

// probeRTT measures meshbench's round trip to a region: the median of a
// few heartbeat round trips on its first node (-1 if it failed).
func (r *regionRun) probeRTT(ctx context.Context, s Site) float64 {
	c, err := r.dial(ctx, s.URLs[0], regionIndex(r.cfg.Sites, []byte(s.Region)), "", client.Join{})
	if err != nil {
		return -1
	}
	defer c.CloseGracefully()
	var rtts []float64
	c.SetDeadline(time.Now().Add(r.cfg.HandshakeTimeout))
	for i := range 5 {
		t0 := time.Now()
		if c.WriteFrame(ws.OpText, client.PhoenixHeartbeat(nil, uint64(i+1))) != nil {
			return -1
		}
		if _, _, err := c.ReadFrame(); err != nil { // the reply: nothing else is joined
			return -1
		}
		rtts = append(rtts, measure.MS(time.Since(t0)))
	}
	return measure.Median(rtts)
}
