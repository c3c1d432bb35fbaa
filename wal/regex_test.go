package wal

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/wal/pgtest"
)

// A subscription with costly regular expressions (as costly as edge's
// default bound lets a join ask for) on a column that gets 100 KB values
// does not hold back another subscriber's rows: the owner scans at most
// RegexValueBytes of a value per regex filter, and a longer value does not
// match it (counted). Unbounded, the 5 patterns cost some 0.1–0.3 s per row
// each on this column, seconds for the rows below.
func TestServiceRegexCostIsBounded(t *testing.T) {
	pg := pgtest.Shared(t)
	pg.Exec(`CREATE TABLE docs (id int PRIMARY KEY, title text)`)
	d := newDeliveries()
	set := metrics.NewSet()
	s := NewService(ServiceConfig{DB: "db", Self: "n1", Reader: testReaderFor(pg.URL(), "svc_regex"), Deliver: d.deliver,
		Metrics: set, Logger: slog.New(slog.DiscardHandler)})
	runService(t, s)
	const pattern = `(a|b|c)*(a|b|d)*(a|e)*(b|f)*(a|b)*z$`
	if n := regexInsts(Filter{Op: OpMatch, Value: pattern}); n > 64 {
		t.Fatalf("the pattern compiles to %d instructions, over edge's default bound", n)
	}
	plain := &Subscription{ID: s.NewID(), Schema: "public", Table: "docs"}
	subs := []*Subscription{plain}
	for range 5 {
		subs = append(subs, &Subscription{ID: s.NewID(), Schema: "public", Table: "docs", Filters: mustFilter(t, "title=match."+pattern)})
	}
	if err := s.Subscribe(context.Background(), subs); err != nil {
		t.Fatal(err)
	}
	const rows = 20
	long := strings.Repeat("ab", 50<<10) // 100 KB, no z: every thread of the NFA stays alive to the end
	for i := 1; i < rows; i++ {
		pg.Exec(`INSERT INTO docs VALUES ($1, $2)`, i, long)
	}
	pg.Exec(`INSERT INTO docs VALUES ($1, 'abz')`, rows) // short: the patterns still match it
	d.waitRows(t, plain.ID, rows, 5*time.Second)
	for _, sub := range subs[1:] {
		eventually(t, "the short row for a regex subscription", func() bool { return len(d.rows(sub.ID)) == 1 })
		if got := d.rows(sub.ID); got[0] != rows {
			t.Errorf("regex subscription got rows %v, want only %d", got, rows)
		}
	}
	if got := set.GetOrCreateCounter("meshcast_wal_regex_skipped_total").Get(); got < 5*(rows-1) {
		t.Errorf("meshcast_wal_regex_skipped_total = %d, want at least %d", got, 5*(rows-1))
	}
}
