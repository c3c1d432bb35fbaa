package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"
)

// The slow-consumer scenario (meshbench slow): latency-mode rounds against
// one node, alternating A (Subs subscribers) and B (the same plus one
// subscriber of the same topic that reads SlowBytesPerSec with a tiny
// receive buffer, so that the node's queue for it fills and the node
// closes it). The others' p50/p99 and the server's CPU per delivery are
// compared between A and B, and B says what happened to the slow one.

// SlowConfig configures RunSlow. Zero fields take the defaults noted.
type SlowConfig struct {
	URL         string  // the node's WebSocket URL; default DefaultMeshcastURL
	ServerPID   int     // for server CPU; 0 = none
	Subs        int     // subscribers that keep up; default 1000
	Rate        float64 // publications/s; default 100
	PayloadSize int     // default 1000 bytes: at 100 msg/s the node closes the slow one within a round
	Duration    time.Duration
	Rounds      int // A/B pairs; default 2
	// SlowBytesPerSec is how fast the slow subscriber reads; default 1024.
	SlowBytesPerSec int
	// SlowRcvBuf is the slow subscriber's SO_RCVBUF; default 4096.
	SlowRcvBuf int
	Logf       func(format string, args ...any)
}

func (c SlowConfig) withDefaults() SlowConfig {
	orDefault(&c.URL, DefaultMeshcastURL)
	orDefault(&c.Subs, 1000)
	orDefault(&c.Rate, 100)
	orDefault(&c.PayloadSize, 1000)
	orDefault(&c.Duration, 40*time.Second)
	orDefault(&c.Rounds, 2)
	orDefault(&c.SlowBytesPerSec, 1024)
	orDefault(&c.SlowRcvBuf, 4096)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

func (c SlowConfig) round() Config {
	return Config{URL: c.URL, Mode: ModeLatency, Subs: c.Subs, Rate: c.Rate, PayloadSize: c.PayloadSize,
		Duration: c.Duration, Warmup: time.Second, ServerPID: c.ServerPID, Topic: "realtime:slow"}
}

// Budget bounds RunSlow.
func (c SlowConfig) Budget() time.Duration {
	c = c.withDefaults()
	return time.Duration(2*c.Rounds)*(c.round().Budget()+15*time.Second) + time.Minute
}

// SlowRound is one round.
type SlowRound struct {
	WithSlow bool    `json:"with_slow"`
	Result   *Result `json:"result"`
	// The slow subscriber (B rounds): seconds from its join to the node's
	// meshcast_slow_consumer_closes_total rising (-1: not closed in the
	// round), the close frame it got at the end of what it was sent,
	// and the bytes it read.
	SlowClosedAfter float64 `json:"slow_closed_after_s"`
	SlowClosedBy    string  `json:"slow_closed_by,omitempty"`
	SlowCloseCode   int     `json:"slow_close_code"`
	SlowCloseReason string  `json:"slow_close_reason,omitempty"`
	SlowEnd         string  `json:"slow_end,omitempty"` // how its socket ended, when not by a close frame
	SlowReadBytes   int64   `json:"slow_read_bytes"`    // while the round ran
}

// SlowSide is the median of the rounds of one side.
type SlowSide struct {
	P50, P99, CPUPerDeliveryUs, DeliveriesPerSec float64
	Lost                                         int64
	Disconnects                                  int
}

// SlowResult is what RunSlow measured.
type SlowResult struct {
	Config      SlowConfig  `json:"-"`
	Rounds      []SlowRound `json:"rounds"`
	A           SlowSide    `json:"without_slow"`
	B           SlowSide    `json:"with_slow"`
	P99Change   float64     `json:"p99_change_pct"` // (B − A) / A
	P50Change   float64     `json:"p50_change_pct"`
	CPUChange   float64     `json:"cpu_per_delivery_change_pct"`
	SlowClosed  int         `json:"slow_closed"` // B rounds whose slow subscriber the node closed
	SlowClosedS []float64   `json:"slow_closed_after_s"`
}

func (r *SlowResult) String() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "slow: %d subscribers, %.0f msg/s, %d-byte payload, %s rounds, %d A/B pairs; the slow one reads %d B/s (SO_RCVBUF %d)\n",
		c.Subs, c.Rate, c.PayloadSize, c.Duration, c.Rounds, c.SlowBytesPerSec, c.SlowRcvBuf)
	for i, rd := range r.Rounds {
		side := "A"
		if rd.WithSlow {
			side = "B"
		}
		fmt.Fprintf(&b, "  round %d %s: p50 %.2f p99 %.2f ms, %.2f µs CPU/delivery, %.0f deliveries/s, lost %d, disconnects %d",
			i/2+1, side, rd.Result.P50, rd.Result.P99, rd.Result.ServerCPUPerDeliveryUs, rd.Result.DeliveriesPerSec, rd.Result.Lost, rd.Result.Disconnects)
		if rd.WithSlow {
			if rd.SlowClosedAfter >= 0 {
				fmt.Fprintf(&b, "; slow one closed after %.1f s: %s, close frame %d %q", rd.SlowClosedAfter, rd.SlowClosedBy, rd.SlowCloseCode, rd.SlowCloseReason)
			} else {
				b.WriteString("; slow one not closed in the round")
			}
			if rd.SlowEnd != "" {
				fmt.Fprintf(&b, " (%s)", rd.SlowEnd)
			}
			fmt.Fprintf(&b, ", read %d bytes", rd.SlowReadBytes)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "  medians: A p50 %.2f p99 %.2f ms %.2f µs/delivery | B p50 %.2f p99 %.2f ms %.2f µs/delivery | p99 %+.1f %%, p50 %+.1f %%, CPU/delivery %+.1f %%; slow one closed in %d of %d B rounds",
		r.A.P50, r.A.P99, r.A.CPUPerDeliveryUs, r.B.P50, r.B.P99, r.B.CPUPerDeliveryUs, r.P99Change, r.P50Change, r.CPUChange, r.SlowClosed, c.Rounds)
	return b.String()
}

// RunSlow runs the A/B rounds.
func RunSlow(ctx context.Context, cfg SlowConfig) (*SlowResult, error) {
	cfg = cfg.withDefaults()
	res := &SlowResult{Config: cfg}
	for i := range 2 * cfg.Rounds {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		rd := SlowRound{WithSlow: i%2 == 1, SlowClosedAfter: -1}
		if err := runSlowRound(ctx, cfg, &rd); err != nil {
			return res, err
		}
		cfg.Logf("round %d %v: p99 %.2f ms", i/2+1, map[bool]string{false: "A", true: "B"}[rd.WithSlow], rd.Result.P99)
		res.Rounds = append(res.Rounds, rd)
	}
	side := func(slow bool) SlowSide {
		var p50, p99, cpu, dps []float64
		var s SlowSide
		for _, rd := range res.Rounds {
			if rd.WithSlow != slow {
				continue
			}
			r := rd.Result
			p50, p99, cpu, dps = append(p50, r.P50), append(p99, r.P99), append(cpu, r.ServerCPUPerDeliveryUs), append(dps, r.DeliveriesPerSec)
			s.Lost += r.Lost
			s.Disconnects += r.Disconnects
		}
		s.P50, s.P99, s.CPUPerDeliveryUs, s.DeliveriesPerSec = measure.Median(p50), measure.Median(p99), measure.Median(cpu), measure.Median(dps)
		return s
	}
	res.A, res.B = side(false), side(true)
	pct := func(a, b float64) float64 { return (b - a) / a * 100 }
	res.P99Change, res.P50Change, res.CPUChange = pct(res.A.P99, res.B.P99), pct(res.A.P50, res.B.P50), pct(res.A.CPUPerDeliveryUs, res.B.CPUPerDeliveryUs)
	for _, rd := range res.Rounds {
		if rd.WithSlow && rd.SlowClosedAfter >= 0 {
			res.SlowClosed++
			res.SlowClosedS = append(res.SlowClosedS, rd.SlowClosedAfter)
		}
	}
	return res, nil
}

func runSlowRound(ctx context.Context, cfg SlowConfig, rd *SlowRound) error {
	rc := cfg.round()
	ctx, cancel := context.WithTimeout(ctx, rc.Budget())
	defer cancel()
	var slow *slowSub
	if rd.WithSlow {
		var err error
		if slow, err = dialSlow(ctx, cfg, rc.Topic); err != nil {
			return err
		}
		defer slow.c.Close()
	}
	closedAt := make(chan closure, 1)
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if slow != nil {
			watchClose(ctx, cluster.MetricsURL(cfg.URL), closedAt, stopWatch)
		}
	}()
	res, err := Run(ctx, rc)
	close(stopWatch)
	<-watchDone
	if err != nil {
		return err
	}
	rd.Result = res
	if slow == nil {
		return nil
	}
	select {
	case c := <-closedAt:
		rd.SlowClosedAfter, rd.SlowClosedBy = c.at.Sub(slow.joined).Seconds(), c.why
	default:
	}
	rd.SlowReadBytes = slow.r.n.Load()
	if rd.SlowClosedAfter >= 0 {
		// Read what the node sent before closing at full speed, to the
		// close frame.
		slow.r.fast.Store(true)
		select {
		case <-slow.done:
		case <-time.After(10 * time.Second):
		}
	}
	slow.c.Close()
	<-slow.done
	var ce *client.CloseError
	if errors.As(slow.err, &ce) {
		rd.SlowCloseCode, rd.SlowCloseReason = ce.Code, ce.Reason
	} else if rd.SlowClosedAfter >= 0 && slow.err != nil {
		rd.SlowEnd = slow.err.Error()
	}
	return nil
}

// closure is when and why the node closed the slow subscriber.
type closure struct {
	at  time.Time
	why string
}

// watchClose polls the node's /metrics every 100 ms until the node closed
// a slow subscriber — when its queue overflows
// (meshcast_slow_consumer_closes_total, close 1008) or when one write to
// it blocks past --write-timeout (errors_total{reason="write"}, the socket
// closed without a close frame), whichever comes first — or stop closes.
func watchClose(ctx context.Context, metricsURL string, closed chan<- closure, stop <-chan struct{}) {
	const slowCloses, writeErrors = "meshcast_slow_consumer_closes_total", `meshcast_errors_total{reason="write"}`
	var closes0, writes0 float64
	if m, err := cluster.Scrape(ctx, metricsURL, nil); err == nil {
		closes0, writes0 = m[slowCloses], m[writeErrors]
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		m, err := cluster.Scrape(ctx, metricsURL, nil)
		switch {
		case err != nil:
		case m[slowCloses] > closes0:
			closed <- closure{time.Now(), "queue full (meshcast_slow_consumer_closes_total)"}
			return
		case m[writeErrors] > writes0:
			closed <- closure{time.Now(), "write timeout (meshcast_errors_total{reason=\"write\"})"}
			return
		}
	}
}

// slowSub is the subscriber that reads slowly.
type slowSub struct {
	c      *client.WS
	r      *throttled
	joined time.Time
	done   chan struct{} // the reader ended, with err
	err    error
}

// throttled reads at most perSec bytes per second until fast is set.
type throttled struct {
	nc     io.Reader
	perSec int
	fast   atomic.Bool
	n      atomic.Int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if !t.fast.Load() {
		time.Sleep(100 * time.Millisecond)
		p = p[:min(len(p), max(t.perSec/10, 1))]
	}
	n, err := t.nc.Read(p)
	t.n.Add(int64(n))
	return n, err
}

// dialSlow connects the slow subscriber (a small receive buffer), joins at
// full speed and then reads slowly until the socket ends.
func dialSlow(ctx context.Context, cfg SlowConfig, topic string) (*slowSub, error) {
	t := &throttled{perSec: cfg.SlowBytesPerSec}
	t.fast.Store(true) // the join at full speed
	c, err := client.DialWS(ctx, cfg.URL, client.Options{ReadBuffer: 512, RcvBuf: cfg.SlowRcvBuf,
		Reader: func(nc net.Conn) io.Reader { t.nc = nc; return t }})
	if err == nil {
		if err = client.JoinChannel(c, topic, client.Join{}, 10*time.Second, nil); err != nil {
			c.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bench: slow subscriber: %w", err)
	}
	t.fast.Store(false)
	s := &slowSub{c: c, r: t, joined: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for s.err == nil {
			_, _, s.err = c.ReadFrame()
		}
	}()
	return s, nil
}
