package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"
)

// RecoverConfig is meshbench recover: Subs subscribers of one channel on
// the node at FirstURL lose it (the node is killed -9 when KillPID is set,
// else they drop their connections), a publisher on PubURL sends Missed
// broadcasts meanwhile, and every subscriber reconnects at once to URL
// with its positions: how long until all are live again, and what the
// node at URL (ServerPID) spends meanwhile.
type RecoverConfig struct {
	URL, FirstURL, PubURL string
	Subs, Missed          int
	KillPID, ServerPID    int
	Topic                 string
	Logf                  func(string, ...any)
}

// RecoverResult is what meshbench recover reports.
type RecoverResult struct {
	Subs, Missed       int
	Recovered, Failed  int               // join replies with recovered true / false
	Complete           int               // subscribers that got every missed message, in order
	Errors             int               // subscribers that failed to reconnect, join or read
	FirstError         string            `json:",omitempty"`
	AllLiveSeconds     float64           // reconnect start to the last subscriber complete
	PerClient          measure.Durations // reconnect start to all missed messages read
	JoinReply          measure.Durations // reconnect start to the join reply
	ServerCPUCores     float64           // the node at URL, over AllLiveSeconds (-1: unknown)
	ServerRSSAfterKiB  int64
	ServerRSSBeforeKiB int64
}

func (r *RecoverResult) String() string {
	return fmt.Sprintf("recover subs=%d missed=%d: recovered=%d failed=%d complete=%d errors=%d %q all live after %.2fs (per client p50 %.0fms p99 %.0fms max %.0fms; join reply p50 %.0fms p99 %.0fms) server_cpu=%.2f cores rss %d→%d KiB",
		r.Subs, r.Missed, r.Recovered, r.Failed, r.Complete, r.Errors, r.FirstError, r.AllLiveSeconds, measure.MS(r.PerClient.P50), measure.MS(r.PerClient.P99), measure.MS(r.PerClient.Max),
		measure.MS(r.JoinReply.P50), measure.MS(r.JoinReply.P99),
		r.ServerCPUCores, r.ServerRSSBeforeKiB, r.ServerRSSAfterKiB)
}

// recoverSub is one subscriber and the positions it holds.
type recoverSub struct {
	c      client.Conn
	vector map[string]uint64
}

// RunRecover runs the scenario.
func RunRecover(ctx context.Context, cfg RecoverConfig) (*RecoverResult, error) {
	if cfg.FirstURL == "" {
		cfg.FirstURL = cfg.URL
	}
	if cfg.PubURL == "" {
		cfg.PubURL = cfg.FirstURL
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	subs := make([]*recoverSub, cfg.Subs)
	if err := recoverJoinAll(ctx, cfg.FirstURL, cfg.Topic, subs); err != nil {
		return nil, err
	}
	pub, err := client.DialWS(ctx, cfg.PubURL, client.Options{})
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	if err := recoverJoin(pub, cfg.Topic, `{"broadcast":{"ack":true}}`, nil); err != nil {
		return nil, err
	}
	// One message everyone gets live: its position is in every vector.
	if err := publishAcked(pub, cfg.Topic, 0, 1); err != nil {
		return nil, err
	}
	if err := readSeq(ctx, subs, 0, 1); err != nil {
		return nil, err
	}
	logf("recover: %d subscribers live on %s", cfg.Subs, cfg.FirstURL)
	if cfg.KillPID > 0 {
		if err := syscall.Kill(cfg.KillPID, syscall.SIGKILL); err != nil {
			return nil, fmt.Errorf("kill -9 %d: %w", cfg.KillPID, err)
		}
	}
	for _, s := range subs {
		s.c.Close()
	}
	if err := publishAcked(pub, cfg.Topic, 1, cfg.Missed); err != nil {
		return nil, err
	}
	logf("recover: %d published while away; reconnecting to %s", cfg.Missed, cfg.URL)
	return measureRecovery(ctx, cfg, subs)
}

// measureRecovery reconnects every subscriber at once and waits until each
// has every missed message.
func measureRecovery(ctx context.Context, cfg RecoverConfig, subs []*recoverSub) (*RecoverResult, error) {
	res := &RecoverResult{Subs: cfg.Subs, Missed: cfg.Missed, ServerCPUCores: -1}
	cpu0, cpuErr := measure.ReadCPUSeconds(cfg.ServerPID)
	res.ServerRSSBeforeKiB, _ = measure.ReadRSSKiB(cfg.ServerPID)
	start := time.Now()
	hist, joinHist := measure.NewHistogram(), measure.NewHistogram()
	var mu sync.Mutex
	g := newGroup(ctx, 256)
	gctx := g.ctx
	for _, s := range subs {
		g.Go(func() error {
			vec, _ := json.Marshal(s.vector)
			c, err := client.DialWS(gctx, cfg.URL, client.Options{})
			if err != nil {
				mu.Lock()
				defer mu.Unlock()
				if res.Errors++; res.FirstError == "" {
					res.FirstError = "dial: " + err.Error()
				}
				return nil
			}
			s.c = c
			var recovered bool
			err = recoverJoin(c, cfg.Topic, `{"broadcast":{"self":false},"recover":{"broadcast":`+string(vec)+`}}`, &recovered)
			if err == nil {
				joinHist.Record(int64(time.Since(start)))
				err = readSeq(gctx, []*recoverSub{s}, 1, cfg.Missed)
			}
			mu.Lock()
			defer mu.Unlock()
			if recovered {
				res.Recovered++
			} else {
				res.Failed++
			}
			if err == nil {
				res.Complete++
				hist.Record(int64(time.Since(start)))
			} else if res.Errors++; res.FirstError == "" {
				res.FirstError = err.Error()
			}
			return nil
		})
	}
	g.Wait()
	res.AllLiveSeconds = time.Since(start).Seconds()
	if cpu1, err := measure.ReadCPUSeconds(cfg.ServerPID); err == nil && cpuErr == nil && cfg.ServerPID > 0 {
		res.ServerCPUCores = (cpu1 - cpu0) / res.AllLiveSeconds
	}
	res.ServerRSSAfterKiB, _ = measure.ReadRSSKiB(cfg.ServerPID)
	res.PerClient, res.JoinReply = hist.Summary(), joinHist.Summary()
	for _, s := range subs {
		if s.c != nil {
			s.c.Close()
		}
	}
	return res, nil
}

// recoverJoinAll dials and joins every subscriber (no recovery asked).
func recoverJoinAll(ctx context.Context, url, topic string, subs []*recoverSub) error {
	g := newGroup(ctx, 64)
	gctx := g.ctx
	for i := range subs {
		g.Go(func() error {
			c, err := client.DialWS(gctx, url, client.Options{})
			if err != nil {
				return err
			}
			subs[i] = &recoverSub{c: c, vector: map[string]uint64{}}
			return recoverJoin(c, topic, `{"broadcast":{"self":false}}`, nil)
		})
	}
	return g.Wait()
}

// recoverJoin joins topic with config and reads the reply; recovered, if
// set, gets the reply's "recovered".
func recoverJoin(c client.Conn, topic, config string, recovered *bool) error {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if err := c.WriteFrame(ws.OpText, phx.AppendPush(nil, client.JoinRef, 1, topic, "phx_join", []byte(`{"config":`+config+`}`))); err != nil {
		return err
	}
	for range 64 {
		_, b, err := c.ReadFrame()
		if err != nil {
			return err
		}
		f, err := phx.ScanV2(b)
		if err != nil || string(f.Event) != "phx_reply" || string(f.Ref) != "1" {
			continue
		}
		var r struct {
			Status   string
			Response struct{ Recovered *bool }
		}
		if json.Unmarshal(f.Payload, &r) != nil || r.Status != "ok" {
			return fmt.Errorf("join refused: %.200s", f.Payload)
		}
		if recovered != nil {
			*recovered = r.Response.Recovered != nil && *r.Response.Recovered
		}
		return nil
	}
	return errors.New("no join reply")
}

// publishAcked publishes {"n": first..first+n-1} with ack, one at a time.
func publishAcked(c client.Conn, topic string, first, n int) error {
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	defer c.SetDeadline(time.Time{})
	for i := first; i < first+n; i++ {
		frame, _ := client.Broadcast(nil, nil, uint64(10+i), topic, "seq", []byte(`{"n":`+strconv.Itoa(i)+`}`))
		if err := c.WriteFrame(ws.OpText, frame); err != nil {
			return err
		}
		for {
			_, b, err := c.ReadFrame()
			if err != nil {
				return err
			}
			if f, err := phx.ScanV2(b); err == nil && string(f.Event) == "phx_reply" && string(f.Ref) == strconv.Itoa(10+i) {
				break
			}
		}
	}
	return nil
}

// readSeq reads, on each subscriber, broadcasts n = first..first+count-1
// in order, and keeps their positions.
func readSeq(ctx context.Context, subs []*recoverSub, first, count int) error {
	for _, s := range subs {
		s.c.SetDeadline(time.Now().Add(60 * time.Second))
		for want := first; want < first+count; {
			_, b, err := s.c.ReadFrame()
			if err != nil {
				return err
			}
			f, err := phx.ScanV2(b)
			if err != nil || string(f.Event) != "broadcast" {
				continue
			}
			var m struct {
				Payload struct{ N int }
				Meta    struct{ Pos string }
			}
			if err := json.Unmarshal(f.Payload, &m); err != nil {
				return err
			}
			if m.Payload.N != want {
				return fmt.Errorf("got n=%d, want %d", m.Payload.N, want)
			}
			if epoch, off, ok := strings.Cut(m.Meta.Pos, ":"); ok {
				s.vector[epoch], _ = strconv.ParseUint(off, 10, 64)
			}
			want++
		}
		s.c.SetDeadline(time.Time{})
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// group runs at most limit functions at once and keeps the first error,
// which cancels ctx for the others.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context, limit int) *group {
	g := &group{sem: make(chan struct{}, limit)}
	g.ctx, g.cancel = context.WithCancel(ctx)
	return g
}

func (g *group) Go(fn func() error) {
	g.sem <- struct{}{}
	g.wg.Add(1)
	go func() {
		defer func() { <-g.sem; g.wg.Done() }()
		if err := fn(); err != nil {
			g.once.Do(func() { g.err = err; g.cancel() })
		}
	}()
}

func (g *group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
