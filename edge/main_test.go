package edge

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server is shut down and every client closed in t.Cleanup, so whatever is
// left is a connection goroutine the server lost track of. Tests of
// postgres_changes share one throwaway Postgres (pgtest.Shared).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Main(m))
}
