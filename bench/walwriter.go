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

// walWriter commits the rows of a run on cfg.Writers connections of its
// own: at cfg.Rate rows/s, or as fast as the window allows, each row
// stamped with the writer's clock right before its statement is sent.
type walWriter struct {
	r     *walRun
	cfg   *WALConfig
	conns []*pgx.Conn

	txs, rows atomic.Uint64 // transactions started, rows numbered
	// committed[c] counts the committed rows of class c.
	committed []atomic.Uint64
	// acked[writer][seq] is the runner clock at which that row's commit
	// was acknowledged (0: not yet); rows past the capacity are not kept.
	acked [][]atomic.Int64

	commit *measure.Histogram // statement sent → commit acknowledged

	mu       sync.Mutex
	errs     uint64
	firstErr string
	rowsMeas uint64 // rows committed with sent_ns after measuring started
	lastSent int64
}

func newWALWriter(ctx context.Context, r *walRun, url string) (*walWriter, error) {
	w := &walWriter{r: r, cfg: &r.cfg, commit: measure.NewHistogram()}
	w.committed = make([]atomic.Uint64, r.cfg.classes())
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

// run writes what p lets go and returns when every writer is done.
func (w *walWriter) run(ctx context.Context, p *pacer) {
	var wg sync.WaitGroup
	for i, conn := range w.conns {
		wg.Go(func() { w.loop(ctx, i, conn, p) })
	}
	wg.Wait()
}

// rows is one writer's next transaction.
type rows struct {
	ids, seqs []int64
	teams     []int32
	pads      []string
}

// loop is writer id: a transaction whenever p lets one go.
func (w *walWriter) loop(ctx context.Context, id int, conn *pgx.Conn, p *pacer) {
	cfg, r := w.cfg, w.r
	tx := rows{ids: make([]int64, cfg.RowsPerTx), seqs: make([]int64, cfg.RowsPerTx), teams: make([]int32, cfg.RowsPerTx), pads: make([]string, cfg.RowsPerTx)}
	for i := range tx.pads {
		tx.pads[i] = strings.Repeat("x", cfg.Pad)
	}
	var seq int64
	for ctx.Err() == nil {
		j := w.txs.Add(1) - 1
		if _, ok := p.wait(ctx, j); !ok || j >= maxWALTransactions {
			return
		}
		for k := range cfg.RowsPerTx {
			n := w.rows.Add(1)
			seq++
			tx.seqs[k], tx.ids[k], tx.teams[k] = seq, int64(n), int32(rowTeam(cfg, n))
			if cfg.Shape == ShapeFiltered {
				tx.ids[k] = int64((n-1)%uint64(cfg.Keys)) + 1
				tx.teams[k] = int32(tx.ids[k])
			}
		}
		sent := r.now()
		err := w.exec(ctx, conn, id, sent, &tx)
		done := r.now()
		if err != nil {
			if ctx.Err() != nil || conn.IsClosed() {
				return
			}
			continue
		}
		var owed uint64
		for k := range cfg.RowsPerTx {
			w.committed[tx.teams[k]].Add(1)
			owed += uint64(r.classSubs[tx.teams[k]])
			if a := w.acked[id]; tx.seqs[k] < int64(len(a)) {
				a[tx.seqs[k]].Store(done)
			}
		}
		p.owe(owed)
		w.commit.Record(done - sent)
		if sent >= p.warmEnd {
			w.mu.Lock()
			w.rowsMeas += uint64(cfg.RowsPerTx)
			w.lastSent = max(w.lastSent, sent)
			w.mu.Unlock()
		}
	}
}

// exec commits one transaction of writer id, stamped sent, and counts an
// error.
func (w *walWriter) exec(ctx context.Context, conn *pgx.Conn, id int, sent int64, tx *rows) error {
	table := WALTable(w.cfg.Shape)
	var err error
	switch w.cfg.Shape {
	case ShapeDBCast:
		// One broadcast per row, to its topic, as an app's trigger or
		// function would send it.
		_, err = conn.Exec(ctx, `SELECT realtime.send(jsonb_build_object('writer', $1::int, 'seq', u.seq, 'team', u.team,
			'sent_ns', $2::bigint, 'pad', u.pad), 'row', '`+dbcastTopicPrefix+`' || u.team, false)
			FROM unnest($3::bigint[], $4::int[], $5::text[]) AS u(seq, team, pad)`, id, sent, tx.seqs, tx.teams, tx.pads)
	case ShapeFiltered:
		_, err = conn.Exec(ctx, `UPDATE `+table+` t SET writer = $1, seq = u.seq, sent_ns = $2
			FROM unnest($3::bigint[], $4::bigint[]) AS u(id, seq) WHERE t.id = u.id`, id, sent, tx.ids, tx.seqs)
	default:
		_, err = conn.Exec(ctx, `INSERT INTO `+table+` (id, writer, seq, team, sent_ns, pad)
			SELECT u.id, $1, u.seq, u.team, $2, u.pad FROM unnest($3::bigint[], $4::bigint[], $5::int[], $6::text[]) AS u(id, seq, team, pad)`,
			id, sent, tx.ids, tx.seqs, tx.teams, tx.pads)
	}
	if err != nil && ctx.Err() == nil {
		w.mu.Lock()
		w.errs++
		if w.firstErr == "" {
			w.firstErr = err.Error()
		}
		w.mu.Unlock()
	}
	return err
}
