package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file keeps the Authorizer's caches (tables, their policies, each
// role's privileges) in step with the database.
//
// The node creates, once per database, an event trigger on ddl_command_end
// that emits a transactional logical decoding message (prefix
// meshcast.catalog) and a NOTIFY for every DDL command that may change
// what a role sees: GRANT, REVOKE, CREATE/ALTER/DROP POLICY, ALTER TABLE
// (row level security, columns, owner), ALTER PUBLICATION, … The message
// arrives in the replication stream in commit order, so the owner refreshes
// its caches exactly between the transactions before the change and those
// after it (CatalogChanged). The NOTIFY reaches every node's Authorizer,
// which drops its caches for the join checks and asks the edge to check
// the subscriptions it holds again.
//
// Event triggers need a superuser. Without one (and to notice what fires no
// event trigger: role membership, BYPASSRLS, roles dropped), every
// Authorizer polls a fingerprint of the catalog every CatalogPoll: the
// roles and their memberships always, and the tables, columns, policies,
// schemas and publications too while no enabled event trigger exists.

const (
	// catalogPrefix is the prefix of the event trigger's logical
	// messages; catalogChannel its NOTIFY channel.
	catalogPrefix  = "meshcast.catalog"
	catalogChannel = "meshcast_catalog"
	// catalogTrigger names the event trigger.
	catalogTrigger = "meshcast_catalog"
)

// catalogFunction is the event trigger's function. Commands that cannot
// change a table's privileges, policies, columns or publication are
// skipped, so an application that creates indexes or functions does not
// empty the caches. SECURITY DEFINER: the DDL's own user need not be
// allowed to emit messages. The wal_level test keeps DDL working if
// logical decoding is turned off (then no reader runs).
const catalogFunction = `
BEGIN
	IF tg_tag IN ('CREATE INDEX', 'ALTER INDEX', 'DROP INDEX', 'COMMENT', 'CREATE FUNCTION', 'ALTER FUNCTION',
		'DROP FUNCTION', 'CREATE PROCEDURE', 'ALTER PROCEDURE', 'DROP PROCEDURE', 'CREATE TRIGGER', 'ALTER TRIGGER',
		'DROP TRIGGER', 'CREATE SEQUENCE', 'ALTER SEQUENCE', 'DROP SEQUENCE', 'REFRESH MATERIALIZED VIEW',
		'CREATE STATISTICS', 'ALTER STATISTICS', 'DROP STATISTICS', 'CREATE VIEW', 'CREATE MATERIALIZED VIEW') THEN
		RETURN;
	END IF;
	IF current_setting('wal_level') = 'logical' THEN
		PERFORM pg_logical_emit_message(true, 'meshcast.catalog', tg_tag);
	END IF;
	PERFORM pg_notify('meshcast_catalog', tg_tag);
END`

// installCatalogTrigger creates the event trigger and its function unless
// they exist (nodes starting together take turns under an advisory lock).
// It returns whether an enabled trigger exists afterwards; an error means
// this user may not create it (not a superuser), which is not fatal.
func installCatalogTrigger(ctx context.Context, conn *pgx.Conn) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('meshcast.catalog'))"); err != nil {
		return false, err
	}
	var src *string
	var enabled *string
	err = tx.QueryRow(ctx, `SELECT (SELECT p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
			WHERE n.nspname = 'meshcast' AND p.proname = 'catalog_changed'),
		(SELECT evtenabled::text FROM pg_catalog.pg_event_trigger WHERE evtname = $1)`, catalogTrigger).Scan(&src, &enabled)
	if err != nil {
		return false, err
	}
	if enabled != nil && *enabled == "D" {
		return false, nil // disabled by an administrator: respected
	}
	if src != nil && *src == catalogFunction && enabled != nil {
		return true, nil
	}
	stmts := []string{
		"CREATE SCHEMA IF NOT EXISTS meshcast",
		"CREATE OR REPLACE FUNCTION meshcast.catalog_changed() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER " +
			"SET search_path = pg_catalog AS $meshcast$" + catalogFunction + "$meshcast$",
		"REVOKE ALL ON FUNCTION meshcast.catalog_changed() FROM PUBLIC",
	}
	if enabled == nil {
		stmts = append(stmts, "CREATE EVENT TRIGGER "+catalogTrigger+" ON ddl_command_end EXECUTE FUNCTION meshcast.catalog_changed()")
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return false, err
		}
	}
	return true, tx.Commit(ctx)
}

// Fingerprints of the catalog, polled. The global one covers what no event
// trigger reports (roles: membership, superuser, BYPASSRLS, INHERIT) and
// whether the trigger is there; the local one, used while it is not, the
// rows of the tables, columns, policies, schemas and publications (their
// xmin changes with every GRANT, ALTER or policy change).
const (
	globalFingerprint = `SELECT md5(concat(
		(SELECT string_agg(concat_ws(':', oid, rolname, rolsuper, rolinherit, rolbypassrls), ',' ORDER BY oid) FROM pg_catalog.pg_roles), '|',
		(SELECT string_agg(concat_ws(':', roleid, member), ',' ORDER BY roleid, member) FROM pg_catalog.pg_auth_members))),
		EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = '` + catalogTrigger + `' AND evtenabled <> 'D')`
	localFingerprint = `SELECT md5(concat(
		(SELECT string_agg(concat_ws(':', c.oid, c.xmin), ',' ORDER BY c.oid) FROM pg_catalog.pg_class c
			WHERE c.relkind IN ('r', 'p') AND c.relnamespace <> 'pg_catalog'::regnamespace AND c.relnamespace <> 'information_schema'::regnamespace), '|',
		(SELECT string_agg(concat_ws(':', a.attrelid, a.attnum, a.xmin), ',' ORDER BY a.attrelid, a.attnum) FROM pg_catalog.pg_attribute a
			JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
			WHERE a.attnum > 0 AND c.relkind IN ('r', 'p') AND c.relnamespace <> 'pg_catalog'::regnamespace AND c.relnamespace <> 'information_schema'::regnamespace), '|',
		(SELECT string_agg(concat_ws(':', oid, xmin), ',' ORDER BY oid) FROM pg_catalog.pg_policy), '|',
		(SELECT string_agg(concat_ws(':', oid, xmin), ',' ORDER BY oid) FROM pg_catalog.pg_namespace), '|',
		(SELECT string_agg(concat_ws(':', oid, xmin), ',' ORDER BY oid) FROM pg_catalog.pg_publication), '|',
		(SELECT string_agg(concat_ws(':', oid, xmin), ',' ORDER BY oid) FROM pg_catalog.pg_publication_rel)))`
)

// watchCatalog runs until ctx ends: it listens for the event trigger's
// notifications and polls the fingerprints, and on a change empties the
// caches and calls OnCatalogChange. A lost connection counts as a change
// (notifications may have been missed).
func (a *Authorizer) watchCatalog(ctx context.Context) {
	backoff := 100 * time.Millisecond
	connected := false
	for ctx.Err() == nil {
		err := a.watchSession(ctx, &connected)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("wal: catalog watch failed; retrying", "err", err, "retry_in", backoff)
		if connected {
			connected = false
			a.catalogChanged(ctx, "reconnect")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// watchSession is one connection's life of watchCatalog.
func (a *Authorizer) watchSession(ctx context.Context, connected *bool) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, a.connConfig("meshcast-catalog"))
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+catalogChannel); err != nil {
		return err
	}
	fp, err := a.fingerprint(ctx, conn)
	if err != nil {
		return err
	}
	if *connected {
		// Reconnected after a failure: what happened meanwhile is unknown.
		a.catalogChanged(ctx, "reconnect")
	}
	*connected = true
	for {
		wctx, cancel := context.WithTimeout(ctx, a.poll)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		reason := ""
		switch {
		case err == nil:
			reason = n.Payload
			// A migration is many commands: take them all at once.
			for {
				dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				_, err := conn.WaitForNotification(dctx)
				cancel()
				if err != nil {
					break
				}
			}
		case ctx.Err() != nil:
			return nil
		case !pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded):
			return err
		}
		if conn.IsClosed() {
			return errors.New("catalog watch: connection closed")
		}
		next, err := a.fingerprint(ctx, conn)
		if err != nil {
			return err
		}
		if next != fp && reason == "" {
			reason = "poll"
		}
		fp = next
		if reason != "" {
			a.catalogChanged(ctx, reason)
		}
	}
}

// fingerprint reads the catalog's fingerprint, the local part too while no
// event trigger reports changes, and logs when that changes.
func (a *Authorizer) fingerprint(ctx context.Context, conn *pgx.Conn) (string, error) {
	var global string
	var trigger bool
	if err := conn.QueryRow(ctx, globalFingerprint).Scan(&global, &trigger); err != nil {
		return "", fmt.Errorf("catalog fingerprint: %w", err)
	}
	if trigger {
		a.setTriggered(trigger)
		return global, nil
	}
	var local string
	if err := conn.QueryRow(ctx, localFingerprint).Scan(&local); err != nil {
		return "", fmt.Errorf("catalog fingerprint: %w", err)
	}
	a.setTriggered(trigger)
	return global + local, nil
}

// setTriggered records whether the event trigger reports changes, logging
// the bound that applies when that changes.
func (a *Authorizer) setTriggered(on bool) {
	if a.triggered.Swap(on) == on && a.triggerKnown.Swap(true) {
		return
	}
	if on {
		a.log.Info("wal: catalog changes (grants, policies, publication, columns) apply to the changes committed after them, "+
			"in WAL order (event trigger "+catalogTrigger+"); role membership changes within the catalog poll", "catalog_poll", a.poll)
	} else {
		a.log.Warn("wal: no event trigger "+catalogTrigger+" (creating it needs a superuser): catalog changes (grants, policies, "+
			"publication, columns) are noticed by polling, and apply at most one poll interval plus one batch late", "catalog_poll", a.poll)
	}
}

// catalogChanged empties the caches and tells the consumer.
func (a *Authorizer) catalogChanged(ctx context.Context, reason string) {
	a.log.Debug("wal: catalog changed", "reason", reason)
	a.invalidate()
	a.m.catalogChanges.Inc()
	if a.onChange != nil {
		a.onChange(ctx)
	}
}

// CatalogChanged refreshes the caches for a transaction that changed the
// catalog, read from the replication stream (ServiceConfig.CatalogChanged):
// it waits until the transaction is visible to new snapshots (Postgres
// hands a commit to logical decoding a moment before), then empties the
// caches, so every later check reads the catalog as of that commit or
// newer. Until it succeeds, no cache is filled and Authorize fails closed.
func (a *Authorizer) CatalogChanged(ctx context.Context, tx *Transaction) error {
	a.mu.Lock()
	if tx.xid != 0 {
		a.pending = append(a.pending, tx.xid)
	}
	a.gen++
	a.clearLocked()
	a.mu.Unlock()
	a.m.catalogChanges.Inc()
	return a.awaitPending(ctx)
}

// awaitPending waits until the pending catalog change is visible, then
// lets the caches fill again.
func (a *Authorizer) awaitPending(ctx context.Context) error {
	a.mu.Lock()
	xids := slices.Clone(a.pending)
	a.mu.Unlock()
	if len(xids) == 0 {
		return nil
	}
	wait := time.Millisecond
	for {
		var text string
		err := a.retrying(ctx, func() error {
			return a.pool.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&text)
		})
		if err != nil {
			return fmt.Errorf("wal: catalog change: %w", err)
		}
		snap, err := parseSnapshot(text)
		if err != nil {
			return err
		}
		if snap.sees(xids) {
			break
		}
		if wait > time.Second {
			return errors.New("wal: catalog change: its transaction is still not visible")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
	a.mu.Lock()
	a.pending = slices.DeleteFunc(a.pending, func(x uint32) bool { return slices.Contains(xids, x) })
	// Fills that began before the change was visible are not kept.
	a.gen++
	a.mu.Unlock()
	return nil
}
