package bench

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
)

// WALTable is the table a shape writes: meshbench_wal_fanout,
// meshbench_wal_filtered, meshbench_wal_rls. Each shape has its own, so
// that switching shapes against long-running nodes never meets what they
// cached of another shape's table (row level security on or off). Its
// columns:
//
//	id      bigint PRIMARY KEY  the row (filtered: the key a subscriber filters on)
//	writer  int                 the writer connection that committed it
//	seq     bigint              that writer's row counter: rows of one writer commit in seq order
//	team    int                 the row's class: rls the owning team, filtered the key, fanout 0
//	sent_ns bigint              the writer's clock (unix ns) right before it sent the statement
//	pad     text                filler
//
// The RLS shape adds WALMembersTable and a policy in Supabase's style:
// auth.uid() reads the sub of request.jwt.claims, the JWT role is
// "authenticated", and a user sees the rows of its own team:
//
//	CREATE POLICY team_rows ON meshbench_wal_rls FOR SELECT TO authenticated
//	  USING (team IN (SELECT team FROM meshbench_wal_members WHERE user_id = (SELECT auth.uid())))
func WALTable(s Shape) string { return "meshbench_wal_" + string(s) }

// WALMembersTable maps the RLS shape's users to their teams.
const WALMembersTable = "meshbench_wal_members"

func walSchemaSQL(table string) string {
	return `DROP TABLE IF EXISTS ` + table + `;
CREATE TABLE ` + table + ` (id bigint PRIMARY KEY, writer int NOT NULL, seq bigint NOT NULL,
	team int NOT NULL, sent_ns bigint NOT NULL, pad text NOT NULL);`
}

// walRolesSQL makes the roles of the tokens a run signs when the nodes
// have a JWT secret, and lets them read table.
func walRolesSQL(table string) string {
	return `
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT USAGE ON SCHEMA public TO authenticated, anon;
GRANT SELECT ON ` + table + ` TO authenticated;`
}

func walRLSSQL(table string) string {
	return `
CREATE SCHEMA IF NOT EXISTS auth;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
	SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
		(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $$;
GRANT USAGE ON SCHEMA auth TO authenticated, anon;
DROP TABLE IF EXISTS ` + WALMembersTable + `;
CREATE TABLE ` + WALMembersTable + ` (user_id uuid PRIMARY KEY, team int NOT NULL);
GRANT SELECT ON ` + WALMembersTable + ` TO authenticated;
ALTER TABLE ` + table + ` ENABLE ROW LEVEL SECURITY;
CREATE POLICY team_rows ON ` + table + ` FOR SELECT TO authenticated
	USING (team IN (SELECT team FROM ` + WALMembersTable + ` WHERE user_id = (SELECT auth.uid())));`
}

// setupSchema (re)creates the shape's tables and puts WALTable in the
// publication.
func setupSchema(ctx context.Context, conn *pgx.Conn, cfg *WALConfig) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	exec := func(sql string, args ...any) error {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("bench: set up the schema: %w (%.80s…)", err, sql)
		}
		return nil
	}
	table := WALTable(cfg.Shape)
	if err := exec(walSchemaSQL(table)); err != nil {
		return err
	}
	if cfg.JWTSecret != "" {
		if err := exec(walRolesSQL(table)); err != nil {
			return err
		}
	}
	if cfg.Shape == ShapeRLS {
		if err := exec(walRLSSQL(table)); err != nil {
			return err
		}
		if err := exec(`INSERT INTO `+WALMembersTable+` SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, i % $2
			FROM generate_series(0, $1 - 1) i`, cfg.Subs, cfg.Teams); err != nil {
			return err
		}
	}
	if cfg.Shape == ShapeFiltered {
		if err := exec(`INSERT INTO `+table+` SELECT i, 0, 0, i, 0, '' FROM generate_series(1, $1) i`, cfg.Keys); err != nil {
			return err
		}
	}
	var all, exists bool
	err := conn.QueryRow(ctx, `SELECT puballtables FROM pg_publication WHERE pubname = $1`, cfg.Publication).Scan(&all)
	switch {
	case err == pgx.ErrNoRows:
	case err != nil:
		return fmt.Errorf("bench: read the publication: %w", err)
	default:
		exists = true
	}
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	switch {
	case !exists:
		return exec(`CREATE PUBLICATION ` + pub + ` FOR TABLE ` + table)
	case !all:
		return exec(`ALTER PUBLICATION ` + pub + ` ADD TABLE ` + table)
	}
	return nil
}

// userID is the uuid (JWT sub) of the RLS shape's user i; its team is
// i mod Teams.
func userID(i int) string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
}

// signJWT signs claims with secret (HS256), valid for validFor.
func signJWT(secret string, claims jwt.MapClaims, validFor time.Duration) (string, error) {
	now := time.Now()
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(validFor).Unix()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// userToken is the access token of subscriber i: role authenticated, sub
// its user id.
func userToken(secret string, i int, validFor time.Duration) (string, error) {
	return signJWT(secret, jwt.MapClaims{"role": "authenticated", "sub": userID(i), "aud": "authenticated"}, validFor)
}

// WithAPIKey returns the WebSocket URL u with its apikey replaced by an
// anon JWT signed with secret (a node started with --jwt-secret refuses
// any other), valid for validFor.
func WithAPIKey(u, secret string, validFor time.Duration) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	key, err := anonKey(secret, validFor)
	if err != nil {
		return "", err
	}
	q := p.Query()
	q.Set("apikey", key)
	p.RawQuery = q.Encode()
	return p.String(), nil
}

// anonKey is an apikey for sockets: role anon.
func anonKey(secret string, validFor time.Duration) (string, error) {
	return signJWT(secret, jwt.MapClaims{"role": "anon", "iss": "meshbench"}, validFor)
}

// rowTeam is the team (class) of the writer's n-th row in the fanout and
// rls shapes.
func rowTeam(cfg *WALConfig, n uint64) int {
	switch cfg.Shape {
	case ShapeRLS:
		return int(n % uint64(cfg.Teams))
	case ShapeDBCast:
		return int(n % uint64(cfg.Topics))
	}
	return 0
}

// subClass is the class of rows subscriber i must receive: its team (rls),
// its key (filtered) or 0 (fanout).
func subClass(cfg *WALConfig, i int) int {
	switch cfg.Shape {
	case ShapeRLS:
		return i % cfg.Teams
	case ShapeFiltered:
		return i%cfg.Keys + 1
	case ShapeDBCast:
		return i % cfg.Topics
	}
	return 0
}

// binding is subscriber i's postgres_changes binding.
func binding(cfg *WALConfig, i int) string {
	switch cfg.Shape {
	case ShapeFiltered:
		return `{"event":"UPDATE","schema":"public","table":"` + WALTable(cfg.Shape) + `","filter":"id=eq.` + strconv.Itoa(subClass(cfg, i)) + `"}`
	default:
		return `{"event":"INSERT","schema":"public","table":"` + WALTable(cfg.Shape) + `"}`
	}
}

// dbcastTopicPrefix names the dbcast shape's topics (without "realtime:"),
// as the subscribers' topics are named.
const dbcastTopicPrefix = "meshbench-wal-"
