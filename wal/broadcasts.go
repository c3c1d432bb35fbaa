package wal

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ensureBroadcasts makes sure the publication pub of realtime.messages
// exists (Reader.Broadcasts), and reports whether it does. The rows of
// every daily partition are published as the table's own
// (publish_via_partition_root), and only inserts: a row is a broadcast
// once, when it is written. Several nodes may create it at once.
func ensureBroadcasts(ctx context.Context, conn *pgx.Conn, pub string) (bool, error) {
	if pub == "" {
		return false, nil
	}
	var exists, table bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1),
		to_regclass('realtime.messages') IS NOT NULL`, pub).Scan(&exists, &table)
	switch {
	case err != nil:
		return false, err
	case exists:
		return true, nil
	case !table:
		return false, errors.New("realtime.messages does not exist (see --manage-realtime-schema)")
	}
	_, err = conn.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{pub}.Sanitize()+
		" FOR TABLE realtime.messages WITH (publish_via_partition_root = true, publish = 'insert')")
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "23505") {
		return true, nil // another node created it meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("create publication %s: %w", pub, err)
	}
	return true, nil
}

// publications returns the session's publication_names: the changes'
// publication, and the broadcasts' (Reader.Broadcasts) when it exists and
// the slot may stream it.
//
// Postgres before 18 fails to decode a change older than a publication
// it is asked to stream ("publication does not exist"): a slot that
// predates the broadcasts' publication (a node upgraded, or the realtime
// schema made after the slot) streams without it until its confirmed
// position passes where that failure happened; the session then ends and
// the next one streams both (broadcastsFailed, errBroadcastsReady).
func (s *session) publications(ctx context.Context) string {
	pubs := quotePublication(s.r.publication())
	ok, err := ensureBroadcasts(ctx, s.query, s.r.Broadcasts)
	if err != nil {
		s.r.log.Warn("wal: streaming without the broadcasts of realtime.messages", "publication", s.r.Broadcasts, "err", err)
		return pubs
	}
	if !ok {
		return pubs
	}
	var at string
	if err := s.query.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&at); err == nil {
		if lsn, err := pglogrepl.ParseLSN(at); err == nil {
			s.walAt = LSN(lsn)
		}
	}
	if from := LSN(s.r.broadcastsFrom.Load()); from > 0 {
		s.deferred = from
		s.r.log.Warn("wal: the slot predates the broadcasts' publication; streaming it once the slot passes", "position", from)
		return pubs
	}
	return pubs + "," + quotePublication(s.r.Broadcasts)
}

// errBroadcastsReady ends a session that streamed without the broadcasts'
// publication once the slot passed its creation: the next one streams it.
var errBroadcastsReady = errors.New("the slot passed the broadcasts' publication's creation; restarting the stream to include it")

// broadcastsFailed notes a stream that failed for want of the broadcasts'
// publication at the slot's position: the next sessions stream without it
// until the slot passes the WAL position this session began at.
func (s *session) broadcastsFailed(err error) error {
	var pgErr *pgconn.PgError
	if s.deferred == 0 && s.walAt > 0 && errors.As(err, &pgErr) && pgErr.Code == "42704" {
		s.r.broadcastsFrom.Store(uint64(s.walAt))
	}
	if errors.Is(err, errBroadcastsReady) {
		s.r.broadcastsFrom.Store(0)
	}
	return err
}
