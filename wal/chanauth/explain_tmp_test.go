package chanauth

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestExplainTmp(t *testing.T) {
	pg := setup(t)
	pg.Exec(`INSERT INTO members SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'room', '{broadcast}', '{}'
		FROM generate_series(1, 2000) i`)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	run := func(sql string, args ...any) {
		start := time.Now()
		rows, err := conn.Query(ctx, sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			v, _ := rows.Values()
			if len(sql) > 7 && sql[:7] == "EXPLAIN" {
				t.Log(v[0])
			}
		}
		if rows.Err() != nil {
			t.Fatal(sql, rows.Err())
		}
		t.Logf("%v %.60s", time.Since(start), sql)
	}
	for i := 0; i < 3; i++ {
		run("BEGIN")
		run(sqlSave)
		run(sqlProbes, "room", "{11111111-1111-4111-8111-111111111111}", "{broadcast}")
		run(sqlSettings, "authenticated", "room", `{"sub":"00000000-0000-0000-0000-000000000005"}`, "00000000-0000-0000-0000-000000000005", "{}")
		run(sqlVisible, "{11111111-1111-4111-8111-111111111111}")
		run("EXPLAIN (ANALYZE, BUFFERS) "+sqlVisible, "{11111111-1111-4111-8111-111111111111}")
		run(sqlRestore)
		run("ROLLBACK")
	}
}
