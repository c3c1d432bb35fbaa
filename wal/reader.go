package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Handler receives a Reader's transactions.
type Handler interface {
	// Transaction is called with each committed transaction, in commit
	// order, on the Reader's goroutine. The consumer accepts tx by calling
	// Reader.Ack(tx.LSN), then or later, from any goroutine; the reader
	// confirms to Postgres only what was acked, so whatever was not is
	// delivered again after a restart (at least once). It calls
	// tx.Release once done with tx, from any goroutine: until then tx
	// counts against the reader's TxMemory, and the reader starts no new
	// transaction while too much is held (flow control). Transaction must
	// return promptly (queue tx): while it runs the reader neither reads
	// the stream nor reports its position. It must not retain tx's
	// Changes' Columns for modification.
	Transaction(ctx context.Context, tx *Transaction)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, tx *Transaction)

// Transaction calls f, then releases tx.
func (f HandlerFunc) Transaction(ctx context.Context, tx *Transaction) {
	defer tx.Release()
	f(ctx, tx)
}

// Reader streams a database's committed changes from a permanent logical
// replication slot (pgoutput) and hands them to its Handler.
//
// The zero values of the optional fields are the documented defaults. Run
// may be called again after it returns; the fields must not change while it
// runs.
type Reader struct {
	// URL is the database URL (postgres://user@host/db). The user needs
	// the REPLICATION attribute, and to create a missing publication FOR
	// ALL TABLES, superuser. Required.
	URL string
	// Handler receives the transactions. Required.
	Handler Handler
	// Publication names the publication to stream (if empty,
	// "supabase_realtime"). If it does not exist, the reader creates it
	// FOR ALL TABLES and logs that it did.
	Publication string
	// Broadcasts, if set, names a second publication streamed on the same
	// slot: the rows inserted into realtime.messages (wal/dbcast). The
	// reader creates it when missing and the table exists (FOR TABLE
	// realtime.messages WITH (publish_via_partition_root, publish =
	// 'insert')), and streams without it, with a warning, when it cannot.
	Broadcasts string
	// Slot names the replication slot (if empty, "meshcast"): permanent,
	// created if missing, and resumed from its confirmed position.
	Slot string
	// MaxSlotLag bounds, in bytes, how far the slot's confirmed position
	// may trail the server's WAL end because the Handler has not acked
	// what it was given (if zero, 1 GiB; if negative, no bound). Past it the
	// reader confirms every transaction it has delivered, acked or not,
	// and logs an error: those changes will not be delivered again. It
	// cannot bound the lag while no reader runs; for that, set Postgres's
	// max_slot_wal_keep_size, and the reader recreates a slot Postgres
	// invalidated (logging the loss).
	MaxSlotLag int64
	// StatusInterval is how often the reader reports its position to
	// Postgres (if zero, 1s). It also reports when Postgres asks.
	StatusInterval time.Duration
	// MaxBackoff caps the wait between attempts after a failure (if zero,
	// 5s; the first wait is 100ms, then doubling).
	MaxBackoff time.Duration
	// TakeOver makes the reader terminate another consumer holding the
	// slot (SQLSTATE 55006) once that consumer has gone silent, as a new
	// owner does after the old one died without its connection closing.
	// A consumer that still reports its position (every StatusInterval)
	// is alive: after a partition of the cluster it is the old owner on
	// the other side, and terminating it would make the two sides take
	// the slot from each other in turn, each confirming changes the other
	// side's subscribers never got. Without TakeOver the reader retries
	// until the slot is free.
	TakeOver bool
	// TakeOverSilence is how long the other consumer must have sent no
	// position report (pg_stat_replication.reply_time) before TakeOver
	// terminates it (if zero, 5s).
	TakeOverSilence time.Duration
	// TxMemory bounds, in bytes, the decoded changes the reader holds in
	// memory: of the transaction it is reading and of those handed to the
	// Handler and not released (if zero, 64 MiB; if negative, no bound). A
	// transaction's changes past it go to a temporary file in SpillDir,
	// which Transaction.Range reads back; and the reader starts no new
	// transaction while the unreleased ones hold half of it, reporting
	// its position meanwhile so that Postgres keeps the connection.
	TxMemory int64
	// SpillDir is where the changes past TxMemory wait (if empty,
	// os.TempDir()). Its files are unlinked as they are made: they take
	// disk only while their transaction is held, and none outlives the
	// process.
	SpillDir string
	// Keep, if set, is asked for every row change (insert, update,
	// delete) as it is read, on the reader's goroutine: a change it
	// refuses is dropped there and then, neither held nor handed over (the
	// Service keeps only those some subscription matches). Other kinds are
	// always kept. Seq still counts every change.
	Keep func(*Change) bool
	// OnStreaming, if set, is called each time the reader starts
	// streaming (the slot exists: every transaction committed from now on
	// will be delivered), on the reader's goroutine.
	OnStreaming func()
	// Logger receives the reader's logs (default slog.Default()).
	Logger *slog.Logger
	// Metrics is where the reader's metrics go (default: a set of its
	// own): meshcast_wal_reader_running, meshcast_wal_changes_total,
	// meshcast_wal_transactions_total, meshcast_wal_lag_bytes,
	// meshcast_wal_confirmed_lsn, meshcast_wal_reconnects_total,
	// meshcast_wal_lag_forced_confirms_total, meshcast_wal_tx_memory_bytes,
	// meshcast_wal_skipped_changes_total, meshcast_wal_spilled_changes_total,
	// meshcast_wal_spilled_bytes_total, meshcast_wal_reader_paused and
	// meshcast_wal_reader_paused_seconds_total.
	Metrics *metrics.Set

	// onForced, if set, is told of a confirmation past MaxSlotLag (the
	// Service's own reader tells its owner core).
	onForced func(LSN)
	// onStart, if set, is told where each session streams from (every
	// transaction after it is read: the Service's history starts there)
	// and the server's WAL position then.
	onStart func(from, walAt LSN)
	// markIdle makes the reader hand the Handler an empty marking
	// transaction (Transaction.mark) at a keepalive's position once
	// everything before it was handed over and released: the Service's
	// history is then complete through it, changes or not.
	markIdle bool
	// holdOn makes the reader confirm at most hold (the Service's history
	// of the recovery window keeps what it holds in the slot); MaxSlotLag
	// still wins.
	holdOn bool
	hold   atomic.Uint64

	acked  atomic.Uint64
	budget *txBudget
	m      *readerMetrics
	log    *slog.Logger

	// broadcastsFrom is where the slot must be before Broadcasts is
	// streamed (broadcasts.go); 0: at once.
	broadcastsFrom atomic.Uint64
}

// Defaults of Reader.
const (
	DefaultPublication = "supabase_realtime"
	DefaultSlot        = "meshcast"
	DefaultMaxSlotLag  = 1 << 30
	DefaultTxMemory    = 64 << 20
)

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Ack accepts every transaction whose LSN is at most lsn: the reader may
// confirm them to Postgres. Acks must follow the order transactions were
// delivered in; an ack below an earlier one is ignored.
func (r *Reader) Ack(lsn LSN) {
	for {
		old := r.acked.Load()
		if uint64(lsn) <= old || r.acked.CompareAndSwap(old, uint64(lsn)) {
			return
		}
	}
}

// clone returns a Reader with r's configuration and none of its state.
func (r *Reader) clone() *Reader {
	return &Reader{URL: r.URL, Handler: r.Handler, Publication: r.Publication, Broadcasts: r.Broadcasts, Slot: r.Slot, MaxSlotLag: r.MaxSlotLag,
		StatusInterval: r.StatusInterval, MaxBackoff: r.MaxBackoff, TakeOver: r.TakeOver, TakeOverSilence: r.TakeOverSilence,
		TxMemory: r.TxMemory, SpillDir: r.SpillDir, Keep: r.Keep, OnStreaming: r.OnStreaming, Logger: r.Logger, Metrics: r.Metrics}
}

// Run streams until ctx is cancelled, then confirms what was acked and
// returns nil, with all its goroutines stopped. Connection failures,
// Postgres restarts and a slot held by another consumer are logged and
// retried with backoff; Run returns an error only for a configuration it
// cannot use.
func (r *Reader) Run(ctx context.Context) error {
	if r.URL == "" || r.Handler == nil {
		return errors.New("wal: Reader needs a URL and a Handler")
	}
	if !slotName.MatchString(r.slot()) {
		return fmt.Errorf("wal: slot name %q: use 1-63 lower-case letters, digits and underscores", r.slot())
	}
	if _, err := pgconn.ParseConfig(r.URL); err != nil {
		return fmt.Errorf("wal: database URL: %w", err)
	}
	r.log = r.Logger
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("slot", r.slot(), "publication", r.publication())
	if r.m == nil {
		set := r.Metrics
		if set == nil {
			set = metrics.NewSet()
		}
		r.m = newReaderMetrics(set)
	}
	if r.budget == nil {
		r.budget = newTxBudget(r.txMemory())
	}
	backoff := 100 * time.Millisecond
	for {
		s := &session{r: r}
		err := s.run(ctx)
		r.m.running.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if s.streamed {
			backoff = 100 * time.Millisecond
		}
		r.m.reconnects.Inc()
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "55006":
			r.log.Warn("wal: replication slot is in use by another consumer; retrying", "err", err, "retry_in", backoff)
		default:
			r.log.Error("wal: replication stream failed; retrying", "err", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, r.maxBackoff())
	}
}

func (r *Reader) slot() string        { return orDefault(r.Slot, DefaultSlot) }
func (r *Reader) publication() string { return orDefault(r.Publication, DefaultPublication) }

func (r *Reader) takeOverSilence() time.Duration {
	if r.TakeOverSilence > 0 {
		return r.TakeOverSilence
	}
	return 5 * time.Second
}

func (r *Reader) maxBackoff() time.Duration {
	if r.MaxBackoff > 0 {
		return r.MaxBackoff
	}
	return 5 * time.Second
}

func (r *Reader) statusInterval() time.Duration {
	if r.StatusInterval > 0 {
		return r.StatusInterval
	}
	return time.Second
}

func (r *Reader) maxSlotLag() int64 {
	switch {
	case r.MaxSlotLag < 0:
		return 1<<63 - 1
	case r.MaxSlotLag == 0:
		return DefaultMaxSlotLag
	}
	return r.MaxSlotLag
}

func (r *Reader) txMemory() int64 {
	switch {
	case r.TxMemory < 0:
		return 0 // no bound
	case r.TxMemory == 0:
		return DefaultTxMemory
	}
	return r.TxMemory
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

type readerMetrics struct {
	running, lag, confirmed *metrics.Gauge
	changes, txs            *metrics.Counter
	reconnects, forced      *metrics.Counter
	holdBroken              *metrics.Counter
	// Bounded memory and flow control.
	txMemory, paused             *metrics.Gauge
	skipped, spilled, spillBytes *metrics.Counter
	pausedSeconds                *metrics.FloatCounter
}

func newReaderMetrics(set *metrics.Set) *readerMetrics {
	return &readerMetrics{
		running:       set.GetOrCreateGauge("meshcast_wal_reader_running", nil),
		lag:           set.GetOrCreateGauge("meshcast_wal_lag_bytes", nil),
		confirmed:     set.GetOrCreateGauge("meshcast_wal_confirmed_lsn", nil),
		changes:       set.GetOrCreateCounter("meshcast_wal_changes_total"),
		txs:           set.GetOrCreateCounter("meshcast_wal_transactions_total"),
		reconnects:    set.GetOrCreateCounter("meshcast_wal_reconnects_total"),
		forced:        set.GetOrCreateCounter("meshcast_wal_lag_forced_confirms_total"),
		holdBroken:    set.GetOrCreateCounter("meshcast_wal_recovery_hold_exceeded_total"),
		txMemory:      set.GetOrCreateGauge("meshcast_wal_tx_memory_bytes", nil),
		paused:        set.GetOrCreateGauge("meshcast_wal_reader_paused", nil),
		skipped:       set.GetOrCreateCounter("meshcast_wal_skipped_changes_total"),
		spilled:       set.GetOrCreateCounter("meshcast_wal_spilled_changes_total"),
		spillBytes:    set.GetOrCreateCounter("meshcast_wal_spilled_bytes_total"),
		pausedSeconds: set.GetOrCreateFloatCounter("meshcast_wal_reader_paused_seconds_total"),
	}
}

// session is one replication connection's life.
type session struct {
	r        *Reader
	repl     *pgconn.PgConn
	query    *pgx.Conn
	types    *typeCache
	asm      *assembler
	streamed bool // START_REPLICATION succeeded

	pubs     string // publication_names
	deferred LSN    // the broadcasts' publication waits for the slot to pass this (broadcasts.go)
	walAt    LSN    // the server's WAL position as the session began

	delivered LSN // the last transaction handed to the Handler
	confirmed LSN // the last position reported
	walEnd    LSN // the server's WAL end, as last heard
	idleEnd   LSN // a keepalive's position: everything before it was sent
	marked    LSN // the last markIdle's position
}

func (s *session) run(ctx context.Context) error {
	defer s.close()
	if err := s.connect(ctx); err != nil {
		return err
	}
	if err := s.prepare(ctx); err != nil {
		return err
	}
	start := LSN(s.r.acked.Load())
	args := []string{"proto_version '1'", "publication_names '" + s.pubs + "'"}
	// Logical decoding messages (Postgres 14+) carry the catalog changes
	// of meshcast's event trigger in commit order (catalog.go).
	var version int
	if err := s.query.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return err
	}
	if version >= 140000 {
		args = append(args, "messages 'true'")
	}
	err := pglogrepl.StartReplication(ctx, s.repl, s.r.slot(), pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{PluginArgs: args})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" && s.r.TakeOver {
		// Only a consumer silent for TakeOverSilence: its last report, or
		// its start when it has sent none yet.
		// Two statements: in one, Postgres may evaluate the termination
		// before the condition.
		var pid int32
		terr := s.query.QueryRow(ctx, `SELECT s.active_pid FROM pg_replication_slots s
			JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $1 AND COALESCE(r.reply_time, r.backend_start) < now() - make_interval(secs => $2)`,
			s.r.slot(), s.r.takeOverSilence().Seconds()).Scan(&pid)
		if terr == nil {
			_, terr = s.query.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
				WHERE slot_name = $1 AND active_pid = $2`, s.r.slot(), pid)
		}
		switch {
		case terr == nil:
			s.r.log.Warn("wal: took the replication slot over from its silent consumer", "pid", pid, "silent_for_over", s.r.takeOverSilence())
		case errors.Is(terr, pgx.ErrNoRows):
			s.r.log.Info("wal: the replication slot's consumer is alive; not taking it over", "err", err)
		default:
			return terr
		}
	}
	if err != nil {
		return err
	}
	s.streamed = true
	if s.r.onStart != nil {
		from, walAt, err := s.slotPosition(ctx)
		if err != nil {
			return err
		}
		s.r.onStart(max(start, from), walAt)
	}
	s.confirmed, s.delivered = start, start
	s.r.m.running.Set(1)
	s.r.log.Info("wal: streaming", "from", start)
	if s.r.OnStreaming != nil {
		s.r.OnStreaming()
	}
	return s.broadcastsFailed(s.stream(ctx))
}

// slotPosition returns the slot's confirmed position and the server's
// WAL position. Asked once the stream has started, the first is where
// the stream started (when the session asked for an earlier one): the
// slot is this session's, nobody else moves it.
func (s *session) slotPosition(ctx context.Context) (LSN, LSN, error) {
	var slot, now string
	err := s.query.QueryRow(ctx, "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = $1",
		s.r.slot()).Scan(&slot, &now)
	if err != nil {
		return 0, 0, fmt.Errorf("wal: the slot's position: %w", err)
	}
	from, err := pglogrepl.ParseLSN(slot)
	if err != nil {
		return 0, 0, err
	}
	walAt, err := pglogrepl.ParseLSN(now)
	return LSN(from), LSN(walAt), err
}

// markIdle hands the Handler a marking transaction at the last
// keepalive's position (Reader.markIdle) when it moved and nothing is
// being read or held: every transaction before it was handed over.
func (s *session) markIdle(ctx context.Context) {
	if !s.r.markIdle || s.asm.tx != nil || s.idleEnd <= s.marked || s.r.budget.open.Load() > 0 {
		return
	}
	s.marked = s.idleEnd
	s.r.Handler.Transaction(ctx, &Transaction{LSN: s.idleEnd, mark: true})
}

// quotePublication makes name one identifier of pgoutput's
// publication_names list, inside a single-quoted option value.
func quotePublication(name string) string {
	id := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	return strings.ReplaceAll(id, `'`, `''`)
}

func (s *session) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	qcfg, err := pgx.ParseConfig(s.r.URL)
	if err != nil {
		return err
	}
	for k, v := range sessionParams {
		qcfg.RuntimeParams[k] = v
	}
	qcfg.RuntimeParams["application_name"] = "meshcast-wal"
	if s.query, err = pgx.ConnectConfig(ctx, qcfg); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	rcfg := qcfg.Config.Copy()
	rcfg.RuntimeParams["replication"] = "database"
	if s.repl, err = pgconn.ConnectConfig(ctx, rcfg); err != nil {
		return fmt.Errorf("connect for replication: %w", err)
	}
	s.types = newTypeCache()
	s.asm = newAssembler()
	s.asm.keep, s.asm.budget, s.asm.spillDir = s.r.Keep, s.r.budget, s.r.SpillDir
	return nil
}

func (s *session) close() {
	if s.asm != nil {
		s.asm.abort()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.repl != nil {
		s.repl.Close(ctx)
	}
	if s.query != nil {
		s.query.Close(ctx)
	}
}

// prepare makes sure the publication and the slot exist.
func (s *session) prepare(ctx context.Context) error {
	pub, slot := s.r.publication(), s.r.slot()
	var exists bool
	if err := s.query.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", pub).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		_, err := s.query.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{pub}.Sanitize()+" FOR ALL TABLES")
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42710") { // created meanwhile
			return fmt.Errorf("create publication %s: %w", pub, err)
		}
		if err == nil {
			s.r.log.Info("wal: created the missing publication FOR ALL TABLES")
		}
	}
	s.pubs = s.publications(ctx)
	var plugin, walStatus, db, currentDB string
	err := s.query.QueryRow(ctx, `SELECT coalesce(plugin, ''), coalesce(wal_status, ''), coalesce(database, ''), current_database()
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &walStatus, &db, &currentDB)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return s.createSlot(ctx)
	case err != nil:
		return err
	case plugin != "pgoutput" || db != currentDB:
		return fmt.Errorf("replication slot %s exists for plugin %q in database %q, not pgoutput in %q", slot, plugin, db, currentDB)
	case walStatus == "lost":
		s.r.log.Error("wal: Postgres removed WAL the replication slot still needed (max_slot_wal_keep_size); " +
			"recreating the slot: changes committed while it was invalid are lost")
		if _, err := s.query.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
			return err
		}
		s.r.acked.Store(0)
		return s.createSlot(ctx)
	}
	return nil
}

func (s *session) createSlot(ctx context.Context) error {
	_, err := pglogrepl.CreateReplicationSlot(ctx, s.repl, s.r.slot(), "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" {
		return nil // another reader created it meanwhile
	}
	if err != nil {
		return fmt.Errorf("create replication slot: %w", err)
	}
	s.r.log.Info("wal: created the replication slot")
	return nil
}

// stream reads the replication stream until ctx ends or it fails.
func (s *session) stream(ctx context.Context) error {
	interval := s.r.statusInterval()
	next := time.Now().Add(interval)
	for {
		if ctx.Err() != nil {
			return s.status(true)
		}
		if !time.Now().Before(next) {
			if err := s.status(false); err != nil {
				return err
			}
			if s.deferred > 0 && s.confirmed >= s.deferred {
				return errBroadcastsReady
			}
			s.markIdle(ctx)
			next = time.Now().Add(interval)
		}
		if s.asm.tx == nil && !s.r.budget.mayRead() {
			s.pause(ctx, next)
			continue
		}
		s.r.m.paused.Set(0)
		rctx, cancel := context.WithDeadline(ctx, next)
		msg, err := s.repl.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) || ctx.Err() != nil {
				continue
			}
			return err
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			reply, err := s.copyData(ctx, msg.Data)
			if err != nil {
				return err
			}
			if reply {
				next = time.Now() // report at once
			}
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(msg)
		case *pgproto3.CopyDone:
			return errors.New("server ended the replication stream")
		}
	}
}

// pause waits, between transactions, until the Handler released some of
// what it holds or the next status report is due: the reader reads
// nothing meanwhile, and Postgres, which sees its reports, keeps the
// connection open (wal_sender_timeout counts from the last report).
func (s *session) pause(ctx context.Context, until time.Time) {
	s.r.m.paused.Set(1)
	start := time.Now()
	t := time.NewTimer(time.Until(until))
	select {
	case <-s.r.budget.freed:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	s.r.m.pausedSeconds.Add(time.Since(start).Seconds())
}

// copyData handles one message of the stream; reply says Postgres asked
// for a status report.
func (s *session) copyData(ctx context.Context, b []byte) (reply bool, err error) {
	if len(b) == 0 {
		return false, errors.New("empty replication message")
	}
	switch b[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(b[1:])
		if err != nil {
			return false, err
		}
		s.walEnd = max(s.walEnd, LSN(k.ServerWALEnd))
		if s.asm.tx == nil {
			s.idleEnd = max(s.idleEnd, LSN(k.ServerWALEnd))
		}
		return k.ReplyRequested, nil
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(b[1:])
		if err != nil {
			return false, err
		}
		s.walEnd = max(s.walEnd, LSN(x.ServerWALEnd))
		return false, s.message(ctx, x.WALData)
	}
	return false, nil
}

// message decodes one pgoutput message and delivers what it completes.
func (s *session) message(ctx context.Context, b []byte) error {
	m, err := parseMessage(b)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case msgBegin:
		return s.asm.begin(m)
	case msgRelation:
		rel, err := s.types.relation(ctx, s.query, m)
		if err != nil {
			return err
		}
		s.asm.addRelation(rel)
	case msgType:
		s.types.forget(m.oid)
	case msgRow:
		return s.asm.row(m)
	case msgTruncate:
		return s.asm.truncate(m)
	case msgMessage:
		s.asm.message(m)
	case msgCommit:
		tx, err := s.asm.commit(m)
		if err != nil {
			return err
		}
		h := tx.hold
		s.r.m.txs.Inc()
		s.r.m.changes.Add(tx.Len() + h.skipped)
		s.r.m.skipped.Add(h.skipped)
		if h.spill != nil {
			s.r.m.spilled.Add(h.spill.n)
			s.r.m.spillBytes.Add(int(h.spill.bytes))
		}
		s.delivered = tx.LSN
		h.open = true
		s.r.budget.open.Add(1)
		s.r.Handler.Transaction(ctx, tx)
	}
	return nil
}

// held bounds pos by the Service's hold (read after acked: the driver
// raises the hold before it acks), unless that would hold more than
// MaxSlotLag bytes of WAL: the bound wins (and a new owner's history
// starts later).
func (s *session) held(pos LSN) LSN {
	if !s.r.holdOn {
		return pos
	}
	hold := LSN(s.r.hold.Load())
	if hold >= pos {
		return pos
	}
	if lag := int64(s.walEnd) - int64(max(s.confirmed, hold)); lag > s.r.maxSlotLag() {
		s.r.m.holdBroken.Inc()
		s.r.log.Warn("wal: the recovery window holds more WAL than --max-slot-lag; confirming past it: after a failover, recovery reaches back less far",
			"lag_bytes", lag, "max_slot_lag", s.r.maxSlotLag())
		return pos
	}
	return max(s.confirmed, hold)
}

// status reports the position to Postgres: what the Handler acked, or,
// while nothing delivered awaits an ack and no transaction is half read,
// the last keepalive's position, so an idle or uninteresting stream never
// holds WAL back. Past MaxSlotLag it confirms what was delivered, acked or
// not.
func (s *session) status(final bool) error {
	acked := LSN(s.r.acked.Load())
	pos := max(s.confirmed, acked)
	if s.delivered <= acked && s.asm.tx == nil {
		pos = max(pos, s.idleEnd)
	}
	pos = s.held(pos)
	if lag := int64(s.walEnd) - int64(pos); lag > s.r.maxSlotLag() && s.delivered > pos {
		s.r.log.Error("wal: slot lag exceeds MaxSlotLag; confirming transactions the consumer has not acknowledged: they will not be delivered again",
			"lag_bytes", lag, "max_slot_lag", s.r.maxSlotLag(), "acked", acked, "confirming", s.delivered)
		s.r.m.forced.Inc()
		s.r.Ack(s.delivered)
		pos = s.delivered
		if s.r.onForced != nil {
			s.r.onForced(pos)
		}
	}
	s.confirmed = pos
	s.r.m.txMemory.Set(float64(s.r.budget.held.Load()))
	s.r.m.confirmed.Set(float64(pos))
	s.r.m.lag.Set(float64(max(int64(s.walEnd)-int64(pos), 0)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(pos), WALFlushPosition: pglogrepl.LSN(pos), WALApplyPosition: pglogrepl.LSN(pos),
	})
	if err != nil && final {
		s.r.log.Warn("wal: could not report the final position", "err", err)
		return nil
	}
	return err
}
