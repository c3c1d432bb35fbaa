// Package wal turns a Postgres database's committed changes into Supabase
// postgres_changes records and finds the subscriptions each one reaches.
// It is the core of meshcast's Postgres changes (README, Postgres changes): the mesh and
// the edge drive it, it holds no client connections and imports neither.
//
// # Parts
//
//   - Reader streams a permanent logical replication slot (pgoutput,
//     protocol version 1) into Transactions of typed Changes, and confirms
//     to Postgres only what its Handler acked.
//   - Change.AppendData encodes a change once as the "data" object clients
//     receive; Change.AppendBinary and DecodeChange are its form for the
//     mesh.
//   - ParseFilter parses Supabase's filter grammar; Matcher finds the
//     Subscriptions a change reaches, equality filters through a hash index.
//   - Authorizer checks bindings at join, with Supabase's error texts, and
//     on the owner which subscribers may see each change: privileges, and
//     row level security policies evaluated on the change's own values.
//     It follows the catalog (catalog.go): an event trigger marks the
//     transactions that change privileges, policies, the publication or
//     columns in the replication stream, and the owner refreshes its caches
//     there, in commit order.
//   - Service is one node's part in a cluster's change stream: the rules
//     (ownership, hand-off, absent members, windows, confirmation order,
//     resync) are package owner's pure core, which the Service drives on
//     one goroutine. It reaches the other nodes through the Bus it
//     declares (cmd/meshcast adapts the mesh to it; MemHub is one in
//     memory, for tests).
//
// # Values
//
// A value is the JSON to_jsonb gives for it (numbers, floats written out
// as numeric writes them; "NaN" and the infinities as strings; jsonb
// embedded, json turned into jsonb's form; arrays and composites as
// JSON; timestamps as "2024-05-01T10:00:00.123456" and
// "…+00:00"; bytea as "\\x0102"; everything else as its text). The reader's
// sessions set TimeZone=UTC, DateStyle=ISO, IntervalStyle=postgres,
// extra_float_digits=1 and bytea_output=hex whatever the database's
// defaults, so timestamptz values are always in UTC. commit_timestamp is
// UTC with milliseconds ("…T10:00:00.123Z"). A row over 1 MiB (measured on
// its values, as Supabase measures its wal2json text) is sent with its
// values over 64 bytes left out and errors ["Error 413: Payload Too
// Large"]; an unchanged TOAST value is taken from the old row when
// REPLICA IDENTITY FULL sent one, else left out of record.
//
// # Memory and flow control
//
// Postgres sends a transaction once it has committed, whole (pgoutput
// without streaming). The reader drops the changes Reader.Keep refuses
// (the Service's: those no subscription matches) as it reads them, holds
// the rest within Reader.TxMemory, shared with the transactions handed
// over and not released, and writes what does not fit to an unlinked
// temporary file; Transaction.Range reads a transaction back in chunks.
// The Handler releases each transaction once done with it; the reader
// starts no new transaction while too much is unreleased, and keeps
// reporting its position meanwhile (see spill.go). The Service's owner
// routes in chunks and stops when a node's window of unacknowledged
// changes is full; a node acknowledges a change once Deliver returned,
// and Deliver may wait for a subscriber: so subscribers pace the reader.
//
// # At least once
//
// The Handler gets each transaction in commit order and accepts it with
// Reader.Ack(tx.LSN) once every node it must reach has it; the reader
// confirms (flush and apply position) the highest LSN acked. While nothing
// delivered awaits an ack and no transaction is half read, it confirms the
// position of Postgres's keepalives instead, so a stream of changes nobody
// subscribes to, or of tables outside the publication, never holds WAL
// back. A restarted reader, in this process or another, resumes after the
// slot's confirmed position: only the unacked tail is delivered again, and
// (LSN, Seq) identifies a change for dropping duplicates. If acks lag more
// than MaxSlotLag bytes behind the server's WAL, the reader confirms what
// it delivered anyway and logs an error: the bound wins over redelivery.
// Nothing bounds a slot while no reader runs; Postgres's
// max_slot_wal_keep_size does, and a slot it invalidates is recreated with
// an error logged.
//
// # Recovery
//
// A change's Pos (commit LSN, sequence) orders the whole database. With
// ServiceConfig.RecoveryWindow the owner keeps every change it reads of
// the publications for the window (history.go; the reader then keeps the
// changes no subscription matches too), within HistoryBytes, and the
// slot is confirmed only up to what the window no longer needs (the core's
// Hold), so that a new owner reads the window again and rebuilds the
// same history. Recover asks the owner for what a node's subscriptions
// missed after a position; the owner answers from its history once it
// reaches the node's Head, matching and authorizing the changes as it
// does live changes, or fails with a RecoveryError when it cannot prove
// the answer complete (serve.go). Head is what a channel's seam is: the
// last change handed to Deliver, or the owner's head at the last
// acknowledgement of this node's subscriptions.
//
// # Matching
//
// Filters compare after a cast to the column's type, as Supabase's
// check_equality_op does: numerically for integers, floats (NaN equal to
// itself and above all) and numeric, in time for date, time, timetz,
// timestamp, timestamptz and interval (a month is 30 days), by bytes for
// text (Postgres's C collation: databases with other collations may order
// text differently for lt/gt), uuid and bytea; char(n) ignores trailing
// spaces. SQL's NULL logic holds: a comparison with NULL is not true,
// negated or not; is and isdistinct are NULL-aware; an in list with a NULL
// never yields false. Inserts and updates test the new row, deletes the
// old one; a value the change does not carry (unchanged TOAST, a column
// outside the replica identity) fails its filter. Differences from
// Postgres: match and imatch use Go's RE2 (no backreferences or lookaround,
// no \m \M \y word boundaries; "." matches a newline as in Postgres);
// ilike folds case with Unicode rules where a C-collated database folds
// only ASCII; enums, jsonb and other types have equality but no ordering
// (lt… are refused at join), jsonb compares its canonical text (1.0 and 1
// differ), and json, arrays and composites take is only.
//
// Matching costs one hash lookup per indexed column plus the matches, for
// subscriptions with a non-negated eq or in filter; subscriptions without
// one are evaluated one by one, per table and event. Each filter is linear
// in the value it tests: like and ilike match bit-parallel in one pass
// (no backtracking), match and imatch with RE2, whose cost per byte grows
// with the program; Limits bounds patterns and programs at join, and the
// Service's RegexValueBytes the bytes of a value a regex scans (a longer
// value does not match). A
// subscription removed gives its memory back at once (see Matcher).
//
// # Authorization cost
//
// Check reads the publication and the role's column privileges afresh
// (two catalog queries per binding; the table's columns and types are
// cached) and sends one cast query per filter. Authorize checks every
// hit's privileges from caches that CatalogChanged empties in WAL order
// (a few catalog queries per table and role after each catalog change),
// and costs nothing more for tables without RLS. For tables with RLS it
// sends one round trip per distinct (role, claims) among the batch's
// matches: a pipelined BEGIN READ ONLY; set_config('role'…),
// set_config('request.jwt.claims'…); one SELECT that evaluates the tables'
// SELECT policies on the batch's values (jsonb_populate_record of each
// change, the old row too for an update with REPLICA IDENTITY FULL), as
// the role; ROLLBACK. The decision is on the row as committed, whatever
// happened to it since. Policies may read other tables (a team's members):
// those are read as they are when checked. Postgres hands a commit to
// logical decoding a moment before other sessions see it, so the SELECT
// also returns its snapshot, and a check whose snapshot does not cover the
// batch's transactions yet is sent again (1 ms later, doubling; rare, and
// never more than a second); a broken connection (Postgres restarted) is
// retried on fresh ones. What cannot be decided is hidden and counted.
// Deletes on RLS tables are not checked and carry only the primary key.
package wal
