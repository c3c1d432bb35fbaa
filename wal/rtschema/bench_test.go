package rtschema

import (
	"context"
	"testing"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// BenchmarkEnsureComplete is what a node's start costs on a database that
// has the schema: one lookup and one maintenance round with nothing to do.
func BenchmarkEnsureComplete(b *testing.B) {
	c := benchDB(b)
	k := keeper(nil, Config{})
	if err := k.Ensure(context.Background(), c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := k.Ensure(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnsureFresh creates the whole schema and five partitions.
func BenchmarkEnsureFresh(b *testing.B) {
	c := benchDB(b)
	k := keeper(nil, Config{})
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if _, err := c.Exec(context.Background(), "DROP SCHEMA IF EXISTS realtime CASCADE"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := k.Ensure(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDB(b *testing.B) *conn {
	b.Helper()
	c := connect(b, pgtest.Shared(b).URL())
	appRoles(b, c)
	return c
}
