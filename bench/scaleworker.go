package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/measure"
	"github.com/meshcast/meshcast/wire/phx"
)

// The worker side of meshbench scale: one process of several that together
// hold more connections than one process may open. The coordinator
// (scale.go) starts it with a ScaleWorkerConfig and talks to it over its
// stdin and stdout, one line each way at a time:
//
//	stdin:  "measure <runner ns>" — deliveries stamped from then on count
//	        "stop"                — close the connections, report, exit
//	stdout: {"ev":"progress",…} every progressEvery, then {"ev":"result",…}
//
// Its clock is the coordinator's: both are the wall clock at start plus
// the monotonic time since, and processes on one machine share the wall
// clock, so the publisher's stamps are compared across processes.

// ScaleWorkerConfig says which connections a worker opens: global
// connection i (From ≤ i < To) joins channel i mod Channels on node
// (i / Channels) mod len(URLs), from source address SourceAddr.
type ScaleWorkerConfig struct {
	URLs        []string `json:"urls"`
	From, To    int
	Channels    int
	TopicPrefix string  // channel c is TopicPrefix + c
	SourceAddr  string  // "" = the kernel's choice
	ConnectRate float64 // connections per second
	Pollers     int     // default GOMAXPROCS
	Handshake   time.Duration
}

// scaleProgress is the worker's periodic line.
type scaleProgress struct {
	Ev          string `json:"ev"`
	Connected   int    `json:"connected"`
	Failed      int    `json:"failed"`
	Done        bool   `json:"done"` // connecting is over
	Recv        uint64 `json:"recv"`
	Disconnects int    `json:"disconnects"`
	Subs        []int  `json:"subs,omitempty"` // once done: connected subscribers per channel
}

// scaleWorkerResult is the worker's last line.
type scaleWorkerResult struct {
	Ev              string         `json:"ev"`
	Subs            []int          `json:"subs"` // connected subscribers per channel
	Recv            uint64         `json:"recv"`
	Measured        uint64         `json:"measured"`
	LastRecv        int64          `json:"last_recv"`
	Gaps            uint64         `json:"gaps"`
	OutOfOrder      uint64         `json:"out_of_order"`
	Unexpected      uint64         `json:"unexpected"`
	FirstUnexpected string         `json:"first_unexpected,omitempty"`
	Disconnects     int            `json:"disconnects"`
	FirstDisconnect string         `json:"first_disconnect,omitempty"`
	FirstConnectErr string         `json:"first_connect_error,omitempty"`
	ConnectSeconds  float64        `json:"connect_seconds"`
	ConnectMS       measure.Sparse `json:"connect_ms"`
	Latency         measure.Sparse `json:"latency"`
	RSSKiB          int64          `json:"rss_kib"`
	Goroutines      int            `json:"goroutines"`
}

const progressEvery = 250 * time.Millisecond

// scaleSub is one held subscriber: a single publisher per channel, so one
// sequence to follow.
type scaleSub struct {
	w    *scaleWorker
	id   int
	next uint64
	tally
}

type scaleWorker struct {
	*run
	cfg     ScaleWorkerConfig
	hists   [histShards]*measure.Histogram
	connect *measure.Histogram
	poll    *client.Poller
	mu      sync.Mutex
	subs    []*scaleSub
	perChan []int
}

func (s *scaleSub) OnMessage(op ws.OpCode, b []byte, now int64) {
	f, err := phx.ScanV2(b)
	if op != ws.OpText || err != nil {
		s.odd(b)
		return
	}
	if string(f.Event) != "broadcast" {
		if string(f.Event) != "phx_reply" { // heartbeat replies
			s.odd(b)
		}
		return
	}
	t, seq, err := measure.ParseSample(f.Payload)
	if err != nil {
		s.odd(b)
		return
	}
	s.seq(&s.next, seq)
	s.w.deliver(s.id)
	if s.w.measured(t) {
		s.measured++
		s.lastRecv = max(s.lastRecv, now)
		s.w.hists[s.id%histShards].Record(now - t)
	}
}

// RunScaleWorker opens cfg's connections, reports progress on out and
// follows the coordinator's commands on in until "stop" (or in's end).
func RunScaleWorker(ctx context.Context, cfg ScaleWorkerConfig, in io.Reader, out io.Writer) error {
	orDefault(&cfg.Pollers, runtime.GOMAXPROCS(0))
	orDefault(&cfg.Handshake, 10*time.Second)
	if len(cfg.URLs) == 0 || cfg.Channels <= 0 || cfg.To <= cfg.From || cfg.ConnectRate <= 0 {
		return fmt.Errorf("bench: scale worker: bad config %+v", cfg)
	}
	w := &scaleWorker{run: newRun(nil), cfg: cfg, connect: measure.NewHistogram(), perChan: make([]int, cfg.Channels)}
	for i := range w.hists {
		w.hists[i] = measure.NewHistogram()
	}
	var err error
	if w.poll, err = client.NewPoller(cfg.Pollers, w.now, client.PhoenixHeartbeat, heartbeatEvery); err != nil {
		return err
	}
	defer w.poll.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	go w.commands(in, cancel, stopped)
	var enc = json.NewEncoder(out)
	var st connectStats
	var connDone = make(chan struct{})
	go func() {
		defer close(connDone)
		st = w.run.connect(ctx, cfg.To-cfg.From, cfg.ConnectRate, maxHandshakes, w.open)
	}()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for done := false; ; {
		select {
		case <-connDone:
			done, connDone = true, nil
		case <-tick.C:
		case <-stopped:
			if connDone != nil {
				<-connDone
			}
			return enc.Encode(w.result(st))
		}
		w.mu.Lock()
		p := scaleProgress{Ev: "progress", Connected: len(w.subs), Done: done, Recv: w.received()}
		p.Disconnects, _ = w.poll.Errs()
		if done {
			p.Failed, p.Subs = st.errs, w.perChan
		}
		err := enc.Encode(p)
		w.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// commands follows the coordinator's lines; stop (or the end of in) cancels
// the connecting and closes stopped.
func (w *scaleWorker) commands(in io.Reader, cancel func(), stopped chan<- struct{}) {
	defer close(stopped)
	defer cancel()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "measure":
			if t, err := strconv.ParseInt(arg, 10, 64); err == nil {
				w.measureStart.Store(t)
			}
		case "stop":
			return
		}
	}
}

// open dials connection From+i, joins its channel and hands it to the
// pollers.
func (w *scaleWorker) open(ctx context.Context, i int) error {
	g := w.cfg.From + i
	ch, url := g%w.cfg.Channels, w.cfg.URLs[(g/w.cfg.Channels)%len(w.cfg.URLs)]
	t0 := time.Now()
	c, err := client.DialWS(ctx, url, client.Options{Timeout: w.cfg.Handshake, LocalAddr: w.cfg.SourceAddr})
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if err := client.JoinChannel(c, w.cfg.TopicPrefix+strconv.Itoa(ch), client.Join{}, w.cfg.Handshake, nil); err != nil {
		c.Close()
		return fmt.Errorf("%s: %w", url, err)
	}
	w.connect.Record(int64(time.Since(t0)))
	s := &scaleSub{w: w, id: g, next: 1}
	if err := w.poll.Hold(c, s); err != nil {
		return err
	}
	w.mu.Lock()
	w.subs = append(w.subs, s)
	w.perChan[ch]++
	w.mu.Unlock()
	return nil
}

// result closes the pollers (the counters are final then) and sums them.
func (w *scaleWorker) result(st connectStats) scaleWorkerResult {
	w.poll.Close()
	res := scaleWorkerResult{Ev: "result", Recv: w.received(), ConnectSeconds: st.seconds, FirstConnectErr: st.first}
	w.mu.Lock()
	defer w.mu.Unlock()
	var t tally
	for _, s := range w.subs {
		t.add(&s.tally)
	}
	res.Subs, res.Measured, res.LastRecv = w.perChan, t.measured, t.lastRecv
	res.Gaps, res.OutOfOrder, res.Unexpected, res.FirstUnexpected = t.gaps, t.ooo, t.unexpected, t.firstUnexp
	if n, err := w.poll.Errs(); n > 0 {
		res.Disconnects, res.FirstDisconnect = n, err.Error()
	}
	h := measure.NewHistogram()
	for _, sh := range w.hists {
		h.Merge(sh)
	}
	res.Latency, res.ConnectMS = h.Sparse(), w.connect.Sparse()
	res.RSSKiB, _ = measure.ReadRSSKiB(0)
	res.Goroutines = runtime.NumGoroutine()
	return res
}
