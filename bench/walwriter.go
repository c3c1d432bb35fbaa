package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/bench/measure"

	"github.com/jackc/pgx/v5"
)

// maxWALTransactions caps one run's transactions whatever the clock does.
const maxWALTransactions = 1 << 32

// windowStallAfter is how long the writer waits for deliveries to progress
// before it writes the missing ones off (they count as lost).
const windowStallAfter = 2 * time.Second

// walWriter commits the rows of a run on cfg.Writers connections of its
// own: at cfg.Rate rows/s, or as fast as the window allows, each row
// stamped with the writer's clock right before its statement is sent.
type walWriter struct {
	r     *walRunner
	cfg   *WALConfig
	conns []*pgx.Conn

	txs, rows atomic.Uint64 // transactions started, rows numbered
	// committed[c] counts the committed rows of class c; expected the
	// deliveries they owe (rows × subscribers of their class).
	committed []atomic.Uint64
	expected  atomic.Uint64
	writeOff  atomic.Uint64 // deliveries given up on by window stalls
	// acked[writer][seq] is the runner clock at which that row's commit
	// was acknowledged (0: not yet); rows past the capacity are not kept.
	acked [][]atomic.Int64

	mu       sync.Mutex
	commit   *measure.Histogram // statement sent → commit acknowledged
	errs     uint64
	firstErr string
	stalls   int
	late     uint64
	lagMax   time.Duration
	rowsMeas uint64 // rows committed with sent_ns after measuring started
	lastSent int64
}

func newWALWriter(ctx context.Context, r *walRunner, url string) (*walWriter, error) {
	w := &walWriter{r: r, cfg: &r.cfg, commit: measure.NewHistogram()}
	classes := 1
	switch r.cfg.Shape {
	case ShapeRLS:
		classes = r.cfg.Teams
	case ShapeFiltered:
		classes = r.cfg.Keys + 1
	}
	w.committed = make([]atomic.Uint64, classes)
	w.acked = make([][]atomic.Int64, r.cfg.Writers)
	for i := range w.acked {
		w.acked[i] = make([]atomic.Int64, ackCapacity(&r.cfg))
	}
	for range r.cfg.Writers {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(cctx, url)
		cancel()
		if err != nil {
			w.close()
			return nil, fmt.Errorf("bench: writer connection: %w", err)
		}
		w.conns = append(w.conns, conn)
	}
	return w, nil
}

// maxAckedRows bounds the acknowledgement times kept per writer (8 bytes
// each) when the rate does not bound them.
const maxAckedRows = 1 << 21

// ackCapacity is how many rows' acknowledgement times one writer keeps:
// all of a fixed-rate run's with room to spare, else maxAckedRows.
func ackCapacity(cfg *WALConfig) int {
	if cfg.Rate <= 0 {
		return maxAckedRows
	}
	secs := (cfg.Warmup + cfg.Duration).Seconds() + 1
	n := int(cfg.Rate*secs*1.5)/cfg.Writers + 2*cfg.RowsPerTx + 1
	return min(n, maxAckedRows)
}

// ackedAt is when the commit of writer's row seq was acknowledged: 0 when
// not yet, ok false when the row is past what is kept.
func (w *walWriter) ackedAt(writer int, seq int64) (at int64, ok bool) {
	a := w.acked[writer]
	if seq <= 0 || seq >= int64(len(a)) {
		return 0, false
	}
	return a[seq].Load(), true
}

func (w *walWriter) close() {
	for _, c := range w.conns {
		c.Close(context.Background())
	}
}

// outstanding is the deliveries owed and not received yet.
func (w *walWriter) outstanding() int64 {
	return int64(w.expected.Load()) - int64(w.r.received()) - int64(w.writeOff.Load())
}

// run writes from start until end (runner clock) and returns when every
// writer is done.
func (w *walWriter) run(ctx context.Context, start, end int64) {
	var wg sync.WaitGroup
	for i, conn := range w.conns {
		wg.Go(func() { w.loop(ctx, i, conn, start, end) })
	}
	wg.Wait()
}

func (w *walWriter) loop(ctx context.Context, id int, conn *pgx.Conn, start, end int64) {
	cfg := w.cfg
	r := w.r
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(cfg.RowsPerTx) / cfg.Rate * float64(time.Second))
	}
	// The window in deliveries: rows in flight times the mean fan-out of
	// a row (subscribers spread evenly over the classes).
	limit := int64(-1)
	if cfg.Window > 0 {
		classes := int64(len(w.committed))
		if cfg.Shape == ShapeFiltered {
			classes-- // class 0 is no key
		}
		limit = max(1, int64(cfg.Window)*int64(len(r.connected))/classes)
	}
	var seq int64
	ids := make([]int64, cfg.RowsPerTx)
	seqs := make([]int64, cfg.RowsPerTx)
	teams := make([]int32, cfg.RowsPerTx)
	pads := make([]string, cfg.RowsPerTx)
	pad := strings.Repeat("x", cfg.Pad)
	table := WALTable(cfg.Shape)
	for i := range pads {
		pads[i] = pad
	}
	for ctx.Err() == nil {
		j := w.txs.Add(1) - 1
		if j >= maxWALTransactions {
			return
		}
		if interval > 0 {
			due := start + int64(j)*int64(interval)
			if due >= end {
				return
			}
			if d := time.Duration(due - r.now()); d > 0 {
				sleepCtx(ctx, d)
			} else if lag := -d; lag > time.Millisecond {
				w.mu.Lock()
				w.late++
				w.lagMax = max(w.lagMax, lag)
				w.mu.Unlock()
			}
		}
		if r.now() >= end || !w.awaitWindow(ctx, limit, end) {
			return
		}
		for k := range cfg.RowsPerTx {
			n := w.rows.Add(1)
			seq++
			seqs[k] = seq
			switch cfg.Shape {
			case ShapeFiltered:
				ids[k] = int64((n-1)%uint64(cfg.Keys)) + 1
				teams[k] = int32(ids[k])
			default:
				ids[k] = int64(n)
				teams[k] = int32(rowTeam(cfg, n))
			}
		}
		sent := r.now()
		var err error
		if cfg.Shape == ShapeFiltered {
			_, err = conn.Exec(ctx, `UPDATE `+table+` t SET writer = $1, seq = u.seq, sent_ns = $2
				FROM unnest($3::bigint[], $4::bigint[]) AS u(id, seq) WHERE t.id = u.id`, id, sent, ids, seqs)
		} else {
			_, err = conn.Exec(ctx, `INSERT INTO `+table+` (id, writer, seq, team, sent_ns, pad)
				SELECT u.id, $1, u.seq, u.team, $2, u.pad FROM unnest($3::bigint[], $4::bigint[], $5::int[], $6::text[]) AS u(id, seq, team, pad)`,
				id, sent, ids, seqs, teams, pads)
		}
		done := r.now()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.mu.Lock()
			w.errs++
			if w.firstErr == "" {
				w.firstErr = err.Error()
			}
			w.mu.Unlock()
			if conn.IsClosed() {
				return
			}
			continue
		}
		var owed uint64
		for k := range cfg.RowsPerTx {
			w.committed[teams[k]].Add(1)
			owed += uint64(r.classSubs[teams[k]])
		}
		w.expected.Add(owed)
		for k := range cfg.RowsPerTx {
			if a := w.acked[id]; seqs[k] < int64(len(a)) {
				a[seqs[k]].Store(done)
			}
		}
		w.commit.Record(done - sent)
		if sent >= r.measureStart.Load() {
			w.mu.Lock()
			w.rowsMeas += uint64(cfg.RowsPerTx)
			w.lastSent = max(w.lastSent, sent)
			w.mu.Unlock()
		}
	}
}

// awaitWindow waits until fewer than limit deliveries are outstanding
// (limit < 0: no window). After windowStallAfter without progress the
// missing deliveries are written off. It returns false when ctx ends or
// the clock passes end.
func (w *walWriter) awaitWindow(ctx context.Context, limit, end int64) bool {
	if limit < 0 {
		return true
	}
	last := w.r.received()
	since := time.Now()
	for {
		out := w.outstanding()
		if out < limit {
			return true
		}
		if ctx.Err() != nil || w.r.now() >= end {
			return false
		}
		if got := w.r.received(); got != last {
			last, since = got, time.Now()
		} else if time.Since(since) > windowStallAfter {
			w.writeOff.Add(uint64(out))
			w.mu.Lock()
			w.stalls++
			w.mu.Unlock()
			since = time.Now()
		}
		sleepCtx(ctx, 200*time.Microsecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
