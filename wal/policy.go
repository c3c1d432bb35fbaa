package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// rlsPolicy is how Postgres decides which rows of a table with row level
// security a role may SELECT, written as SQL that evaluates the table's
// policies on a change's values (the row as committed) instead of on the
// table (the row as it is when checked, maybe deleted or another's since).
//
// It follows Postgres (check_enable_rls, get_policies_for_relation,
// add_security_quals): superusers and BYPASSRLS roles see every row, and
// so does the table's owner (a member of the owning role) unless FORCE ROW
// LEVEL SECURITY; otherwise the policies for SELECT or ALL that apply to
// the role (TO PUBLIC, or a role whose privileges it has) decide: at least
// one permissive policy must pass (none: no row) and every restrictive one.
// Role membership and the role's attributes are read when the check runs.
//
// A change's values are sent as a JSON object of the columns the policies
// read, made into a row of the table's type by jsonb_populate_record. A
// policy that applies is decided only if the change carries every column
// it reads (pg_depend lists them; a whole-row reference reads all) and
// each of them turns back into the same JSON (to_jsonb); otherwise the
// change is hidden and counted as unverified.
type rlsPolicy struct {
	// cols are the columns some policy reads: the values sent along.
	cols []string
	// head and tail make the query (query) that selects, from a jsonb
	// array parameter of such objects, the 1-based ordinal and status of
	// each (rlsVisible, rlsMissing, rlsRoundTrip; rlsHidden ones are not
	// returned).
	head, tail string
}

// query is the policy's SELECT as the t-th of a batch, reading param.
func (p *rlsPolicy) query(t int, param string) string {
	return "SELECT " + strconv.Itoa(t) + p.head + param + p.tail
}

// Statuses of rlsPolicy's query.
const (
	rlsHidden = iota
	rlsVisible
	rlsMissing
	rlsRoundTrip
)

type policyRow struct {
	permissive bool
	roles      []uint32 // 0: PUBLIC
	qual       string
	wholeRow   bool
	cols       []string
}

// loadPolicy reads info's SELECT policies and builds its rlsPolicy. The
// expressions are deparsed with an empty search_path, so that every name
// they use is qualified and means the same whatever the role's path.
func (a *Authorizer) loadPolicy(ctx context.Context, info *tableInfo) (*rlsPolicy, error) {
	var force bool
	var owner uint32
	var rows []policyRow
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SELECT set_config('search_path', '', true)")
	b.Queue(`
		SELECT c.relforcerowsecurity, c.relowner, p.polpermissive, p.polroles, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
			p.polqual::text ~ ':varattno 0 ',
			ARRAY(SELECT a.attname::text FROM pg_catalog.pg_depend d
				JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
				WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = p.oid
					AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = p.polrelid
					AND d.refobjsubid > 0 ORDER BY a.attnum)
		FROM pg_catalog.pg_class c
		LEFT JOIN pg_catalog.pg_policy p ON p.polrelid = c.oid AND p.polcmd IN ('r', '*') AND p.polqual IS NOT NULL
		WHERE c.oid = $1
		ORDER BY p.polname`, info.oid).Query(func(r pgx.Rows) error {
		for r.Next() {
			var p policyRow
			var permissive, wholeRow *bool
			var qual *string
			var cols []string
			if err := r.Scan(&force, &owner, &permissive, &p.roles, &qual, &wholeRow, &cols); err != nil {
				return err
			}
			if qual == nil {
				continue // no policy (the LEFT JOIN's row)
			}
			p.permissive, p.qual, p.wholeRow, p.cols = *permissive, *qual, *wholeRow, cols
			rows = append(rows, p)
		}
		return r.Err()
	})
	// The column types, qualified, for casting the values a policy reads.
	var types []string
	b.Queue(`SELECT array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, info.oid).QueryRow(func(r pgx.Row) error {
		return r.Scan(&types)
	})
	b.Queue("ROLLBACK")
	if err := a.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	if len(types) != len(info.columns) {
		types = nil // changed meanwhile: the row is made whole
	}
	return buildPolicy(info, force, owner, rows, types), nil
}

// buildPolicy writes the query of rlsPolicy. Whether a policy applies to
// the role, and whether the role bypasses RLS, are uncorrelated scalar
// subqueries: Postgres evaluates them once per query (InitPlans), not per
// row. The row is made of the columns the policies read, each value cast
// from its JSON text to the column's type (types, qualified), which costs
// half of jsonb_populate_record; that makes the whole row instead when a
// policy reads it whole, or a column whose JSON is not its text (json,
// jsonb, arrays, composites), or types is nil.
func buildPolicy(info *tableInfo, force bool, owner uint32, rows []policyRow, types []string) *rlsPolicy {
	p := &rlsPolicy{}
	var all []string
	for _, c := range info.columns {
		all = append(all, c.Name)
	}
	// The row takes the table's name, as the deparsed expressions may
	// qualify its columns with it. The input's alias and columns must
	// differ from it and from the table's columns, which the expressions
	// name unqualified.
	row := pgx.Identifier{info.name.table}.Sanitize()
	pre := "meshcast_"
	for slices.ContainsFunc(append(all, info.name.table), func(n string) bool { return strings.HasPrefix(n, pre) }) {
		pre += "_"
	}
	in, val, ord := pre+"in", pre+"v", pre+"o"
	need := map[string]bool{}
	var present, roundTrip, permissive, restrictive []string
	for _, r := range rows {
		cols := r.cols
		if r.wholeRow {
			cols = all
		}
		applies := "true"
		if !(len(r.roles) == 1 && r.roles[0] == 0) {
			var or []string
			for _, oid := range r.roles {
				or = append(or, fmt.Sprintf("pg_catalog.pg_has_role(CURRENT_USER, %d::pg_catalog.oid, 'USAGE')", oid))
			}
			applies = "(SELECT " + strings.Join(or, " OR ") + ")"
		}
		if len(cols) > 0 {
			var keys, same []string
			for _, c := range cols {
				need[c] = true
				keys = append(keys, quoteLiteral(c))
				same = append(same, fmt.Sprintf("pg_catalog.to_jsonb(%s.%s) IS NOT DISTINCT FROM NULLIF(%s.%s -> %s, 'null'::jsonb)",
					row, pgx.Identifier{c}.Sanitize(), in, val, quoteLiteral(c)))
			}
			present = append(present, fmt.Sprintf("(NOT %s OR %s.%s ?& ARRAY[%s])", applies, in, val, strings.Join(keys, ", ")))
			roundTrip = append(roundTrip, fmt.Sprintf("(NOT %s OR (%s))", applies, strings.Join(same, " AND ")))
		}
		if r.permissive {
			permissive = append(permissive, "("+applies+" AND ("+r.qual+"))")
		} else {
			restrictive = append(restrictive, "(NOT "+applies+" OR ("+r.qual+"))")
		}
	}
	for _, c := range all {
		if need[c] {
			p.cols = append(p.cols, c)
		}
	}
	bypass := "(SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER)"
	if !force {
		bypass = fmt.Sprintf("(SELECT %s OR pg_catalog.pg_has_role(CURRENT_USER, %d::pg_catalog.oid, 'USAGE'))", bypass, owner)
	}
	perm := "false"
	if len(permissive) > 0 {
		perm = strings.Join(permissive, " OR ")
	}
	status := "CASE WHEN " + bypass + " IS TRUE THEN " + strconv.Itoa(rlsVisible) +
		" WHEN (" + joinAnd(present) + ") IS NOT TRUE THEN " + strconv.Itoa(rlsMissing) +
		" WHEN (" + joinAnd(roundTrip) + ") IS NOT TRUE THEN " + strconv.Itoa(rlsRoundTrip) +
		" WHEN (" + perm + ") AND (" + joinAnd(restrictive) + ") THEN " + strconv.Itoa(rlsVisible) +
		" ELSE " + strconv.Itoa(rlsHidden) + " END"
	from := "pg_catalog.jsonb_populate_record(NULL::" + pgx.Identifier{info.name.schema, info.name.table}.Sanitize() + ", " + in + "." + val + ")"
	if cast := castRow(info, rows, types, in+"."+val); cast != "" {
		from = cast
	}
	p.head = ", e.o, e.s, NULL FROM (SELECT " + in + "." + ord + " AS o, " + status + " AS s FROM pg_catalog.jsonb_array_elements("
	p.tail = "::jsonb) WITH ORDINALITY AS " + in + "(" + val + ", " + ord + ") CROSS JOIN LATERAL " + from + " AS " + row +
		" OFFSET 0) e WHERE e.s <> " + strconv.Itoa(rlsHidden)
	return p
}

// castRow is the row of the columns rows read, cast from the JSON object
// v, as a subquery; "" when it must be made whole (see buildPolicy).
func castRow(info *tableInfo, rows []policyRow, types []string, v string) string {
	if types == nil {
		return ""
	}
	var cols []string
	for _, r := range rows {
		if r.wholeRow {
			return ""
		}
		for _, name := range r.cols {
			i := slices.IndexFunc(info.columns, func(c Column) bool { return c.Name == name })
			if i < 0 {
				return ""
			}
			switch info.columns[i].class {
			case classJSON, classJSONB, classArray, classComposite:
				return ""
			}
			col := fmt.Sprintf("(%s ->> %s)::%s AS %s", v, quoteLiteral(name), types[i], pgx.Identifier{name}.Sanitize())
			if !slices.Contains(cols, col) {
				cols = append(cols, col)
			}
		}
	}
	return "(SELECT " + strings.Join(cols, ", ") + ")"
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// rlsValues appends the JSON object of the values a policy reads from
// row (a change's Record or OldRecord): those it carries; a column it
// does not carry is left out, which the query reports as missing.
func (p *rlsPolicy) rlsValues(dst []byte, cols []Column, row []json.RawMessage) []byte {
	dst = append(dst, '{')
	n := 0
	for i, c := range cols {
		if i >= len(row) || row[i] == nil || !p.reads(c.Name) {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = appendJSONString(dst, []byte(c.Name))
		dst = append(dst, ':')
		dst = append(dst, row[i]...)
	}
	return append(dst, '}')
}

func (p *rlsPolicy) reads(col string) bool {
	for _, c := range p.cols {
		if c == col {
			return true
		}
	}
	return false
}

// joinAnd is the conjunction of conds, true when there is none.
func joinAnd(conds []string) string {
	if len(conds) == 0 {
		return "true"
	}
	return strings.Join(conds, " AND ")
}
