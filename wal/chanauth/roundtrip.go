package chanauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// One round trip is one pipeline: a transaction that is always rolled
// back, with a savepoint that every unit first rolls back to (which also
// undoes the role and the settings of the unit before, and recovers from
// its error), then a Sync, so that a unit's error skips only the rest of
// its unit. A read check is one unit; a write check is one unit per
// extension, so that one refused insert does not hide the other's answer.
//
//	BEGIN; SAVEPOINT check
//	[read]  ROLLBACK TO check; INSERT probes (as the URL's user); SELECT set_config(…); SELECT the probes (as the role); Sync
//	[write] ROLLBACK TO check; SELECT set_config(…); INSERT one row (as the role); Sync
//	ROLLBACK; Sync

const (
	sqlBegin    = "BEGIN"
	sqlSave     = "SAVEPOINT meshcast_check"
	sqlRestore  = "ROLLBACK TO SAVEPOINT meshcast_check"
	sqlRollback = "ROLLBACK"
	// The settings Supabase makes before a check, in its order.
	sqlSettings = `SELECT set_config('role', $1, true), set_config('realtime.topic', $2, true),
		set_config('request.jwt.claims', $3, true), set_config('request.jwt.claim.sub', $4, true),
		set_config('request.jwt.claim.role', $1, true), set_config('request.headers', $5, true)`
	// Probe rows of a read check, inserted as the URL's user. inserted_at
	// is the transaction's time, so that the select below finds them in
	// one partition.
	sqlProbes = `INSERT INTO realtime.messages (id, topic, extension, inserted_at, updated_at)
		SELECT probe.id, $1::text, probe.extension, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
		FROM unnest($2::uuid[], $3::text[]) AS probe(id, extension)`
	// The probes the role can see. The inserted_at condition only prunes
	// partitions: row level security is applied before it.
	sqlVisible = `SELECT id::text FROM realtime.messages
		WHERE id = ANY($1::uuid[]) AND inserted_at = now() AT TIME ZONE 'UTC'`
	// The row of a write check, inserted as the role.
	sqlWrite = `INSERT INTO realtime.messages (topic, extension, inserted_at, updated_at)
		VALUES ($1::text, $2::text, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')`
)

// statements are prepared once on each connection: parsing and planning
// cost more than running them (a cached plan of the select is replanned
// when a policy changes or another role runs it).
var statements = [...]string{sqlBegin, sqlSave, sqlRestore, sqlRollback, sqlSettings, sqlProbes, sqlVisible, sqlWrite}

// statementName is the name a statement is prepared under.
func statementName(sql string) string {
	for i, s := range statements {
		if s == sql {
			return "meshcast_chanauth_" + strconv.Itoa(i)
		}
	}
	panic("chanauth: statement not prepared: " + sql)
}

// refusedError is a statement the database refused to prepare (no
// realtime.messages, no privilege on it): every check's error, as
// Supabase's policy errors are, rather than an unavailable database.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// answer is a check's result.
type answer struct {
	allowed Ext
	err     error
}

// unit is one sync unit of a round trip: which check it answers, and for
// a read the ids of its probes by extension.
type unit struct {
	call  int
	ext   Ext      // a write unit's extension
	probe []string // a read unit's probe ids, in extNames order of its exts
	exts  []Ext
}

// roundTrip runs batch in one pipeline and returns each check's answer;
// an error is the round trip's (no answer at all).
func (c *Checker) roundTrip(ctx context.Context, batch []*call) ([]answer, error) {
	pc, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	for _, sql := range statements {
		if _, err := pc.Conn().Prepare(ctx, statementName(sql), sql); err != nil {
			pc.Release()
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				return nil, &refusedError{err}
			}
			return nil, err
		}
	}
	conn := pc.Conn().PgConn()
	var res []answer
	err = func() error {
		p := conn.StartPipeline(ctx)
		units := sendBatch(p, batch)
		var err error
		res, err = readBatch(p, batch, units)
		if cerr := p.Close(); err == nil {
			err = cerr
		}
		return err
	}()
	if err != nil || conn.TxStatus() != 'I' {
		// A connection whose state is unknown is not reused: closed, the
		// pool drops it.
		conn.Close(context.Background())
		pc.Release()
		if err == nil {
			err = errors.New("round trip ended inside a transaction")
		}
		return nil, err
	}
	pc.Release()
	return res, nil
}

func send(p *pgconn.Pipeline, sql string, args ...string) {
	var params [][]byte
	for _, a := range args {
		params = append(params, []byte(a))
	}
	p.SendQueryPrepared(statementName(sql), params, nil, nil)
}

// sendBatch queues the units of batch and returns them in order.
func sendBatch(p *pgconn.Pipeline, batch []*call) []unit {
	send(p, sqlBegin)
	send(p, sqlSave)
	var units []unit
	for i, k := range batch {
		r := &k.req
		if r.Write {
			for _, e := range extNames {
				if r.Ext&e.ext == 0 {
					continue
				}
				send(p, sqlRestore)
				send(p, sqlSettings, r.Role, r.Topic, r.Claims, r.Sub, r.Headers)
				send(p, sqlWrite, r.Topic, e.name)
				p.SendPipelineSync()
				units = append(units, unit{call: i, ext: e.ext})
			}
			continue
		}
		u := unit{call: i}
		var names []string
		for _, e := range extNames {
			if r.Ext&e.ext != 0 {
				u.probe = append(u.probe, newUUID())
				u.exts = append(u.exts, e.ext)
				names = append(names, e.name)
			}
		}
		ids := "{" + strings.Join(u.probe, ",") + "}"
		send(p, sqlRestore)
		send(p, sqlProbes, r.Topic, ids, "{"+strings.Join(names, ",")+"}")
		send(p, sqlSettings, r.Role, r.Topic, r.Claims, r.Sub, r.Headers)
		send(p, sqlVisible, ids)
		p.SendPipelineSync()
		units = append(units, u)
	}
	send(p, sqlRollback)
	p.SendPipelineSync()
	return units
}

// readBatch reads the answers of units, then the final rollback's.
func readBatch(p *pgconn.Pipeline, batch []*call, units []unit) ([]answer, error) {
	if err := p.Flush(); err != nil {
		return nil, err
	}
	res := make([]answer, len(batch))
	for _, u := range units {
		rows, uerr, err := readUnit(p)
		if err != nil {
			return nil, err
		}
		a := &res[u.call]
		switch {
		case a.err != nil:
		case batch[u.call].req.Write:
			var pgErr *pgconn.PgError
			switch {
			case uerr == nil:
				a.allowed |= u.ext
			case errors.As(uerr, &pgErr) && pgErr.Code == "42501": // insufficient_privilege
			default:
				a.err = policyError(uerr)
			}
		case uerr != nil:
			a.err = policyError(uerr)
		default:
			for i, id := range u.probe {
				for _, row := range rows {
					if row == id {
						a.allowed |= u.exts[i]
					}
				}
			}
		}
	}
	if _, uerr, err := readUnit(p); err != nil || uerr != nil {
		return nil, errors.Join(err, uerr)
	}
	return res, nil
}

// readUnit reads one unit's results up to its Sync: the rows (first
// column, as text) of its last query, the unit's error (a statement that
// failed), or an error of the pipeline itself.
func readUnit(p *pgconn.Pipeline) (rows []string, uerr, err error) {
	for {
		r, err := p.GetResults()
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr):
			if uerr == nil {
				uerr = err
			}
			continue
		case err != nil:
			return nil, nil, err
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			rows = rows[:0]
			for r.NextRow() {
				rows = append(rows, string(r.Values()[0]))
			}
			if _, err := r.Close(); err != nil {
				if !errors.As(err, &pgErr) {
					return nil, nil, err
				}
				if uerr == nil {
					uerr = err
				}
			}
		case *pgconn.PipelineSync:
			return rows, uerr, nil
		case nil:
			return nil, nil, errors.New("pipeline ended before its sync")
		}
	}
}

// policyError is a unit's error as Check returns it: a missing partition
// is told apart (Postgres reports it as a check violation), anything else
// is the policy's.
func policyError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23514" && strings.HasPrefix(pgErr.Message, "no partition of relation") {
		return fmt.Errorf("%w: %w", ErrMissingPartition, err)
	}
	return err
}

// newUUID returns a random (version 4) UUID, a probe row's id.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
