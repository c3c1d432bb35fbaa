package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// TestPolicyMatchesPostgres compares the RLS decision made on a change's
// values with Postgres's own: for every viewer (roles that are subject to
// policies, a member of a role a policy names, the table's owner, a
// BYPASSRLS role), the inserts and updates Authorize lets through must be
// exactly the rows SELECT returns as that role and claims (the rows are
// not changed after the changes checked, so the table is the oracle).
// Policies: permissive and restrictive, FOR SELECT and FOR ALL, TO a role
// and TO PUBLIC, a subquery on another table, a whole-row reference, a
// LIKE with %. Then FORCE ROW LEVEL SECURITY (the owner is subject too)
// and a membership revoked, which applies without emptying any cache.
func TestPolicyMatchesPostgres(t *testing.T) {
	pg := pgtest.Shared(t)
	db := pg.Database()
	role := func(r string) string { return r + "_" + db }
	user, member, group, owner, bypass := role("pol_user"), role("pol_member"), role("pol_group"), role("pol_owner"), role("pol_bypass")
	roles := []string{user, member, group, owner, bypass}
	for _, r := range roles {
		pg.Exec(fmt.Sprintf("DROP ROLE IF EXISTS %[1]s; CREATE ROLE %[1]s", r))
	}
	t.Cleanup(func() {
		for _, r := range roles {
			pg.Exec(fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", r))
		}
	})
	pg.Exec(fmt.Sprintf(`
		ALTER ROLE %[5]s BYPASSRLS;
		GRANT %[3]s TO %[2]s;
		CREATE SCHEMA auth;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
			SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
		GRANT USAGE ON SCHEMA auth TO PUBLIC;
		CREATE TABLE members (team int, uid uuid);
		CREATE TABLE docs (id int PRIMARY KEY, owner uuid, team int, level int, flag bool, tags text[], body text, price numeric);
		ALTER TABLE docs REPLICA IDENTITY FULL;
		ALTER TABLE docs OWNER TO %[4]s;
		GRANT SELECT ON docs, members TO PUBLIC;
		ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
		CREATE POLICY own ON docs FOR SELECT TO %[1]s, %[2]s USING (owner = auth.uid());
		CREATE POLICY team ON docs FOR ALL TO %[3]s USING (team IN (SELECT m.team FROM members m WHERE m.uid = auth.uid()));
		CREATE POLICY level ON docs AS RESTRICTIVE FOR SELECT USING (level < 7 OR flag);
		CREATE POLICY tagged ON docs FOR SELECT TO %[1]s USING ('public' = ANY (tags));
		CREATE POLICY whole ON docs FOR SELECT TO %[4]s USING (docs IS NOT NULL);
		CREATE POLICY percent ON docs FOR SELECT TO %[2]s USING (body LIKE 'm%%');
		CREATE POLICY writes ON docs FOR UPDATE USING (true);
		CREATE PUBLICATION supabase_realtime FOR ALL TABLES`, user, member, group, owner, bypass))
	uids := []string{"a0000000-0000-0000-0000-000000000001", "b0000000-0000-0000-0000-000000000002", "c0000000-0000-0000-0000-000000000003"}
	pg.Exec(fmt.Sprintf(`INSERT INTO members VALUES (1, '%s'), (2, '%s'), (3, '%s')`, uids[0], uids[1], uids[1]))
	slot := "pol_" + db
	pg.Exec("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')")

	rng := rand.New(rand.NewPCG(15, 2))
	values := func() string {
		tags := []string{"'{}'", "'{public}'", "'{a,public}'", "'{b}'", "NULL"}[rng.IntN(5)]
		body := []string{"mine", "m%", "other", "NULL", "x"}[rng.IntN(5)]
		if body != "NULL" {
			body = "'" + body + "'"
		}
		uid := "NULL"
		if k := rng.IntN(4); k < 3 {
			uid = "'" + uids[k] + "'"
		}
		return fmt.Sprintf("%s, %d, %d, %v, %s, %s, %d.%d", uid, rng.IntN(4), rng.IntN(10), rng.IntN(2) == 1, tags, body, rng.IntN(100), rng.IntN(10))
	}
	var stmts []string
	const rows = 80
	for id := 1; id <= rows; id++ {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO docs VALUES (%d, %s)", id, values()))
	}
	pg.Exec(strings.Join(stmts, ";"))
	stmts = stmts[:0]
	for id := 1; id <= rows; id++ {
		stmts = append(stmts, fmt.Sprintf("UPDATE docs SET (owner, team, level, flag, tags, body, price) = (%s) WHERE id = %d", values(), id))
	}

	conn := connect(t, pg.URL())
	a := newAuthorizer(t, pg)
	viewers := []viewer{
		{user, claimsOf(uids[0])}, {user, claimsOf(uids[1])}, {user, "{}"},
		{member, claimsOf(uids[0])}, {member, claimsOf(uids[1])}, {member, claimsOf(uids[2])},
		{group, claimsOf(uids[1])}, {owner, claimsOf(uids[0])}, {bypass, "{}"},
	}
	// seen is the oracle: the ids each viewer may select now.
	seen := func() map[viewer][]int {
		out := map[viewer][]int{}
		for _, v := range viewers {
			tx, err := conn.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(context.Background(), "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", v.role, v.claims); err != nil {
				t.Fatal(err)
			}
			r, _ := tx.Query(context.Background(), "SELECT id FROM docs ORDER BY id")
			ids, err := pgx.CollectRows(r, pgx.RowTo[int])
			if err != nil {
				t.Fatal(err)
			}
			tx.Rollback(context.Background())
			out[v] = ids
		}
		return out
	}
	// authorized is what Authorize lets each viewer see of changes.
	authorized := func(changes []*Change) map[viewer][]int {
		m := NewMatcher()
		for k, v := range viewers {
			m.Add(&Subscription{ID: uint64(k), Node: "n", Schema: "public", Table: "docs", Role: v.role, Claims: v.claims})
		}
		hits := make([][]*Subscription, len(changes))
		for i, c := range changes {
			hits[i] = m.Match(c, nil)
		}
		if err := a.Authorize(context.Background(), changes, hits); err != nil {
			t.Fatal(err)
		}
		out := map[viewer][]int{}
		for i, c := range changes {
			var id int
			json.Unmarshal(c.Record[0], &id)
			for _, s := range hits[i] {
				v := viewers[s.ID]
				out[v] = append(out[v], id)
			}
		}
		for _, ids := range out {
			slices.Sort(ids)
		}
		return out
	}
	compare := func(phase string, got, want map[viewer][]int) {
		t.Helper()
		for _, v := range viewers {
			if !slices.Equal(got[v], want[v]) {
				t.Errorf("%s: %s %s sees %v\nPostgres: %v", phase, v.role, v.claims, got[v], want[v])
			}
		}
	}
	changes := func() []*Change {
		var out []*Change
		for _, tx := range slotTransactions(t, conn, slot, "supabase_realtime") {
			for _, c := range tx.Changes {
				if c.Table == "docs" {
					out = append(out, c)
				}
			}
		}
		return out
	}
	inserts := changes()
	before := seen()
	compare("inserts", authorized(inserts), before)

	pg.Exec(strings.Join(stmts, ";"))
	updates := changes()
	after := seen()
	compare("updates", authorized(updates), after)
	// An update's old row stays whole only if every receiver saw it.
	reduced := 0
	for i, c := range updates {
		id := i + 1
		whole := true
		for _, v := range viewers {
			if slices.Contains(after[v], id) && !slices.Contains(before[v], id) {
				whole = false
			}
		}
		if got := fullOld(c); got != whole {
			t.Errorf("row %d: old_record whole = %v, want %v", id, got, whole)
		}
		if !whole {
			reduced++
		}
	}
	if reduced == 0 || reduced == rows {
		t.Errorf("%d of %d updates reduced their old_record: the test does not exercise it", reduced, rows)
	}

	pg.Exec("ALTER TABLE docs FORCE ROW LEVEL SECURITY")
	a.Invalidate()
	compare("forced", authorized(refetch(updates)), seen())
	pg.Exec(fmt.Sprintf("REVOKE %s FROM %s", group, member))
	compare("membership revoked", authorized(refetch(updates)), seen())
}

func claimsOf(sub string) string { return fmt.Sprintf(`{"sub":%q}`, sub) }

// refetch copies changes so that they can be authorized again (Authorize
// may reduce an update's old row).
func refetch(changes []*Change) []*Change {
	out := make([]*Change, len(changes))
	for i, c := range changes {
		cp := *c
		out[i] = &cp
	}
	return out
}
