package dbcast

import (
	"context"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Identity is whom a replay reads as: what a policy check sets.
type Identity struct {
	Role string // the JWT's role; "" reads as the URL's user (a node without a JWT secret)
	Sub  string
	// Claims and Headers are JSON objects (request.jwt.claims,
	// request.headers).
	Claims, Headers string
}

// A Replayer reads a private topic's recent broadcasts from
// realtime.messages for joining channels, as Supabase's replay does, with
// the joining identity's row-level security.
type Replayer struct {
	pool    *pgxpool.Pool
	queries *metrics.Counter
	errors  *metrics.Counter
}

// DefaultReplayConns is a Replayer's pool when NewReplayer is given 0.
const DefaultReplayConns = 2

// NewReplayer returns a Replayer of the database at url over a pool of at
// most conns connections (if zero, DefaultReplayConns); it connects on
// the first replay. set receives its counters (nil: none kept).
func NewReplayer(url string, conns int, set *metrics.Set) (*Replayer, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("dbcast: database URL: %w", err)
	}
	if conns <= 0 {
		conns = DefaultReplayConns
	}
	pc.MaxConns = int32(conns)
	pc.MaxConnIdleTime = time.Minute
	// realtime.messages' inserted_at is now() in UTC, as Supabase's.
	pc.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pc.ConnConfig.RuntimeParams["application_name"] = "meshcast-replay"
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("dbcast: %w", err)
	}
	if set == nil {
		set = metrics.NewSet()
	}
	return &Replayer{pool: pool, queries: set.NewCounter("meshcast_db_replays_total"),
		errors: set.NewCounter("meshcast_db_replay_errors_total")}, nil
}

// Close closes the pool.
func (r *Replayer) Close() { r.pool.Close() }

// replaySettings are a policy check's settings (wal/chanauth), local to
// the replay's transaction; an empty role leaves the role as it is.
const replaySettings = `SELECT set_config('role', CASE WHEN $1 = '' THEN current_user ELSE $1 END, true),
	set_config('realtime.topic', $2, true), set_config('request.jwt.claims', $3, true),
	set_config('request.jwt.claim.sub', $4, true), set_config('request.jwt.claim.role', $1, true),
	set_config('request.headers', $5, true)`

// replayQuery is Supabase's: the newest limit private broadcasts of the
// topic since, oldest first (rows of one transaction in the order they
// were written).
const replayQuery = `SELECT id::text, coalesce(event, ''), payload, binary_payload FROM (
	SELECT id, event, payload, binary_payload, inserted_at, ctid FROM realtime.messages
	WHERE topic = $1 AND private IS TRUE AND extension = 'broadcast'
		AND inserted_at >= to_timestamp($2::float8 / 1000) AT TIME ZONE 'UTC'
	ORDER BY inserted_at DESC, ctid DESC LIMIT $3) m
	ORDER BY inserted_at, ctid`

// Replay returns the newest limit broadcasts of the private topic
// inserted at or after since (epoch ms) that id may see, oldest first.
// Nothing is written; the transaction is rolled back.
func (r *Replayer) Replay(ctx context.Context, id Identity, topic string, since int64, limit int) ([]Message, error) {
	r.queries.Inc()
	msgs, err := r.replay(ctx, id, topic, since, limit)
	if err != nil {
		r.errors.Inc()
	}
	return msgs, err
}

func (r *Replayer) replay(ctx context.Context, id Identity, topic string, since int64, limit int) ([]Message, error) {
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	claims, headers := orEmpty(id.Claims), orEmpty(id.Headers)
	if _, err := tx.Exec(ctx, replaySettings, id.Role, topic, claims, id.Sub, headers); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, replayQuery, topic, since, limit)
	if err != nil {
		return nil, err
	}
	var msgs []Message
	for rows.Next() {
		m := Message{Topic: topic, Private: true}
		var payload, binary []byte
		if err := rows.Scan(&m.ID, &m.Event, &payload, &binary); err != nil {
			return nil, err
		}
		switch {
		case binary != nil:
			m.Payload, m.Binary = binary, true
		case payload != nil:
			m.Payload = payload
		default:
			m.Payload = []byte("{}")
		}
		msgs = append(msgs, m)
	}
	return msgs, rows.Err()
}

func orEmpty(s string) string {
	if s == "" {
		return "{}"
	}
	return s
}
