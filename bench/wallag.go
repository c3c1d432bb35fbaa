package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/bench/measure"
)

// walSnapshot is what the nodes, Postgres and this process had consumed at
// one instant.
type walSnapshot struct {
	nodes []cluster.Metrics // nil entries: not readable
	cpu   measure.CPU       // meshbench, the host, Postgres (the postmaster and its children)
}

func (r *walRun) snapshot(ctx context.Context, pgPID int) walSnapshot {
	s := walSnapshot{nodes: make([]cluster.Metrics, len(r.metricURLs))}
	var wg sync.WaitGroup
	for i, u := range r.metricURLs {
		wg.Go(func() {
			if m, err := cluster.Scrape(ctx, u, nil); err == nil {
				s.nodes[i] = m
			}
		})
	}
	s.cpu = measure.ReadCPU(pgPID, true)
	wg.Wait()
	return s
}

// lagSampler reads the slot's lag from Postgres (current WAL position −
// confirmed_flush_lsn) and the nodes' meshcast_wal_lag_bytes, a few times
// a second.
type lagSampler struct {
	connMu     sync.Mutex // mark and run read concurrently
	conn       *pgx.Conn
	slot       string
	metricURLs []string

	mu        sync.Mutex
	marks     []int64 // slot lag at mark() calls
	walAt     []int64 // pg_current_wal_lsn at mark() calls
	max       int64
	nodeMax   float64
	at, lags  []float64 // (seconds since the first mark, lag) between the marks
	first     time.Time
	lastFinal int64
}

func newLagSampler(ctx context.Context, url, slot string, metricURLs []string) (*lagSampler, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, url)
	if err != nil {
		return nil, fmt.Errorf("bench: lag reader connection: %w", err)
	}
	return &lagSampler{conn: conn, slot: slot, metricURLs: metricURLs, lastFinal: -1}, nil
}

func (l *lagSampler) close() { l.conn.Close(context.Background()) }

// read returns the slot's lag and the current WAL position; -1 when
// unknown.
func (l *lagSampler) read(ctx context.Context) (lag, wal int64) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	lag, wal = -1, -1
	var lagN *int64
	l.connMu.Lock()
	defer l.connMu.Unlock()
	err := l.conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0')::bigint,
		(SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1)`, l.slot).Scan(&wal, &lagN)
	if err != nil {
		return -1, -1
	}
	if lagN != nil {
		lag = *lagN
	}
	return lag, wal
}

// mark records the lag now: the start and the end of the measured window.
func (l *lagSampler) mark() {
	lag, wal := l.read(context.Background())
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.marks) == 0 {
		l.first = time.Now()
	}
	l.marks = append(l.marks, lag)
	l.walAt = append(l.walAt, wal)
}

func (l *lagSampler) run(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		lag, _ := l.read(ctx)
		var nodeLag float64
		if n%2 == 0 {
			for _, u := range l.metricURLs {
				if m, err := cluster.Scrape(ctx, u, nil); err == nil {
					nodeLag = max(nodeLag, m["meshcast_wal_lag_bytes"])
				}
			}
		}
		l.mu.Lock()
		l.nodeMax = max(l.nodeMax, nodeLag)
		if len(l.marks) == 1 && lag >= 0 { // within the measured window
			l.max = max(l.max, lag)
			l.at, l.lags = append(l.at, time.Since(l.first).Seconds()), append(l.lags, float64(lag))
		}
		l.mu.Unlock()
	}
}

// final reads the lag once more after the drain.
func (l *lagSampler) final(ctx context.Context) {
	lag, _ := l.read(ctx)
	l.mu.Lock()
	l.lastFinal = lag
	l.mu.Unlock()
}

func (l *lagSampler) fill(res *WALResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	res.SlotLagStart, res.SlotLagEnd, res.SlotLagMax, res.SlotLagDrained = -1, -1, l.max, l.lastFinal
	res.NodeLagMax = l.nodeMax
	if len(l.marks) >= 2 {
		res.SlotLagStart, res.SlotLagEnd = l.marks[0], l.marks[1]
		res.SlotLagMax = max(res.SlotLagMax, l.marks[0], l.marks[1])
		if l.walAt[0] >= 0 && l.walAt[1] > l.walAt[0] {
			res.WALBytes = l.walAt[1] - l.walAt[0]
		}
	}
	res.SlotLagSlope = measure.Slope(l.at, l.lags)
}
