package rtschema

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/wal/pgtest"
)

func TestPlan(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.DateTime, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	days := func(ds []time.Time) []string {
		var s []string
		for _, d := range ds {
			s = append(s, partitionName(d))
		}
		return s
	}
	week := []string{"messages_2026_08_04", "messages_2026_08_05", "messages_2026_08_06", "messages_2026_08_07",
		"messages_2026_08_08", "messages_2026_08_09", "messages_2026_08_10"}
	for _, tc := range []struct {
		name      string
		now       string
		existing  []string
		ahead     int
		retention time.Duration
		create    []string
		drop      []string
	}{
		{"empty", "2026-08-10 12:00:00", nil, 3, 72 * time.Hour,
			[]string{"messages_2026_08_09", "messages_2026_08_10", "messages_2026_08_11", "messages_2026_08_12", "messages_2026_08_13"}, nil},
		// 72 h before 12:00 on the 10th is 12:00 on the 7th: the 6th ended
		// before it, the 7th did not.
		{"a week", "2026-08-10 12:00:00", week, 1, 72 * time.Hour,
			[]string{"messages_2026_08_11"}, []string{"messages_2026_08_04", "messages_2026_08_05", "messages_2026_08_06"}},
		// Just past midnight the day before yesterday goes once its end is
		// past the retention.
		{"midnight", "2026-08-10 00:00:00", week, 0, 48 * time.Hour,
			nil, []string{"messages_2026_08_04", "messages_2026_08_05", "messages_2026_08_06", "messages_2026_08_07"}},
		// Yesterday and today stay whatever the retention.
		{"tiny retention", "2026-08-10 23:59:59", week, 0, time.Nanosecond,
			nil, []string{"messages_2026_08_04", "messages_2026_08_05", "messages_2026_08_06", "messages_2026_08_07", "messages_2026_08_08"}},
		{"keep all", "2026-08-10 12:00:00", week, 0, -1, nil, nil},
		// Other names are not ours to drop.
		{"strangers", "2026-08-10 12:00:00", []string{"messages_old", "messages_2026_02_30", "messages_2026_8_01", "messages_2020_01_01_x", "messages_2020_01_01"}, 0, time.Hour,
			[]string{"messages_2026_08_09", "messages_2026_08_10"}, []string{"messages_2020_01_01"}},
		// The new year, in UTC whatever the clock's zone.
		{"new year", "2026-12-31 23:30:00", nil, 1, 72 * time.Hour,
			[]string{"messages_2026_12_30", "messages_2026_12_31", "messages_2027_01_01"}, nil},
	} {
		now := at(tc.now).In(time.FixedZone("far east", 14*3600))
		create, drop := plan(now, tc.existing, tc.ahead, tc.retention)
		if !slices.Equal(days(create), tc.create) || !slices.Equal(drop, tc.drop) {
			t.Errorf("%s: create %v drop %v, want %v and %v", tc.name, days(create), drop, tc.create, tc.drop)
		}
	}
}

// Maintenance rounds on a database, at days chosen by the test's clock:
// partitions appear ahead, old ones go past the retention with their rows,
// today's never.
func TestMaintainOnce(t *testing.T) {
	now := testNow
	k := keeper(&now, Config{DaysAhead: 2, Retention: 48 * time.Hour})
	_, c := ensuredAt(t, &now, k)
	if got := partitionsOf(t, c); !slices.Equal(got, []string{"messages_2026_08_09", "messages_2026_08_10", "messages_2026_08_11", "messages_2026_08_12"}) {
		t.Fatalf("after Ensure: %v", got)
	}
	c.exec(t, `INSERT INTO realtime.messages (topic, extension, inserted_at) VALUES ('a', 'broadcast', '2026-08-09 23:59:59.999999'),
		('a', 'broadcast', '2026-08-10 00:00:00'), ('a', 'broadcast', '2026-08-12 10:00:00')`)
	c.exec(t, "CREATE TABLE realtime.messages_archive PARTITION OF realtime.messages FOR VALUES FROM ('2000-01-01') TO ('2001-01-01')")

	now = time.Date(2026, 8, 12, 0, 30, 0, 0, time.UTC)
	r, err := k.MaintainOnce(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	// 48 h before is 00:30 on the 10th: the 9th ended before it.
	if !slices.Equal(r.Created, []string{"messages_2026_08_13", "messages_2026_08_14"}) || !slices.Equal(r.Dropped, []string{"messages_2026_08_09"}) {
		t.Errorf("round: %+v", r)
	}
	if got := c.value(t, "SELECT string_agg(inserted_at::text, ' ' ORDER BY inserted_at) FROM realtime.messages"); got != "2026-08-10 00:00:00 2026-08-12 10:00:00" {
		t.Errorf("rows left: %s", got)
	}
	if got := k.m.ahead.Get(); got != 2 {
		t.Errorf("days ahead: %v", got)
	}

	// With the shortest retention, yesterday's and today's stay.
	k.cfg.Retention = time.Nanosecond
	r, err = k.MaintainOnce(context.Background(), c)
	if err != nil || len(r.Created) > 0 || !slices.Equal(r.Dropped, []string{"messages_2026_08_10"}) {
		t.Errorf("round with a tiny retention: %+v, %v", r, err)
	}
	if got := partitionsOf(t, c); !slices.Equal(got, []string{"messages_2026_08_11", "messages_2026_08_12", "messages_2026_08_13", "messages_2026_08_14", "messages_archive"}) {
		t.Errorf("partitions: %v", got)
	}
	if got := [2]uint64{k.m.created.Get(), k.m.dropped.Get()}; got != [2]uint64{6, 2} {
		t.Errorf("created, dropped counters: %v", got)
	}
}

// A round cannot create a partition whose range another partition holds:
// it creates the others, counts and returns the error.
func TestMaintainOnceConflict(t *testing.T) {
	now := testNow
	k := keeper(&now, Config{DaysAhead: 1})
	_, c := ensuredAt(t, &now, k)
	c.exec(t, "CREATE TABLE realtime.messages_squatter PARTITION OF realtime.messages FOR VALUES FROM ('2026-08-13 06:00') TO ('2026-08-13 07:00')")
	now = now.AddDate(0, 0, 2)
	r, err := k.MaintainOnce(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "realtime.messages_2026_08_13") || !strings.Contains(err.Error(), "overlap") {
		t.Errorf("error %v, want the overlap of messages_2026_08_13", err)
	}
	if !slices.Equal(r.Created, []string{"messages_2026_08_12"}) {
		t.Errorf("created %v", r.Created)
	}
	if got := partitionsOf(t, c); !slices.Contains(got, "messages_2026_08_12") {
		t.Errorf("partitions: %v", got)
	}
}

// A round waits no longer than LockTimeout behind a transaction that
// holds realtime.messages, and leaves the table usable.
func TestMaintainOnceLockTimeout(t *testing.T) {
	now := testNow
	k := keeper(&now, Config{LockTimeout: 100 * time.Millisecond})
	pg, c := ensuredAt(t, &now, k)
	other := connect(t, pg.URL())
	other.exec(t, "BEGIN")
	other.exec(t, "LOCK TABLE realtime.messages IN ACCESS SHARE MODE")
	now = now.AddDate(0, 0, 1)
	start := time.Now()
	_, err := k.MaintainOnce(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "lock timeout") {
		t.Errorf("round behind a lock: %v, want a lock timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("round took %v", d)
	}
	other.exec(t, "COMMIT")
	if r, err := k.MaintainOnce(context.Background(), c); err != nil || len(r.Created) != 1 {
		t.Errorf("round after: %+v, %v", r, err)
	}
}

func TestMaintainOnceWithoutTable(t *testing.T) {
	c := connect(t, pgtest.Shared(t).URL())
	_, err := keeper(nil, Config{}).MaintainOnce(context.Background(), c)
	if !errors.Is(err, errNoTable) {
		t.Errorf("round without realtime.messages: %v", err)
	}
}

// Maintain runs rounds every Interval until its context ends.
func TestMaintainLoop(t *testing.T) {
	now := testNow
	k := keeper(&now, Config{Interval: 20 * time.Millisecond})
	pg, _ := ensuredAt(t, &now, k)
	c := connect(t, pg.URL())
	k.cfg.Now = func() time.Time { return testNow.AddDate(0, 0, 10) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	loop := connect(t, pg.URL())
	go func() { defer close(done); k.Maintain(ctx, loop) }()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(partitionsOf(t, c), "messages_2026_08_23") {
		if time.Now().After(deadline) {
			t.Fatalf("no round within 10s: %v", partitionsOf(t, c))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Maintain did not return on cancel")
	}
}

// A node whose user may not create the schema yet keeps trying: once the
// DBA grants what it needs, Maintain completes it without a restart.
func TestMaintainCompletesTheSchemaLater(t *testing.T) {
	pg := pgtest.Shared(t)
	admin := connect(t, pg.URL())
	appRoles(t, admin)
	admin.exec(t, `DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rtschema_user') THEN CREATE ROLE rtschema_user LOGIN; END IF;
		END $$`)
	admin.exec(t, "CREATE SCHEMA realtime; GRANT USAGE ON SCHEMA realtime TO rtschema_user")
	c := connect(t, strings.Replace(pg.URL(), "//postgres@", "//rtschema_user@", 1))
	k := keeper(nil, Config{})
	err := k.Ensure(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "permission denied for schema realtime") {
		t.Fatalf("Ensure without CREATE on the schema: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.Maintain(ctx, c) }()
	defer func() { cancel(); <-done }()
	admin.exec(t, "GRANT CREATE ON SCHEMA realtime TO rtschema_user")
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing, err := Missing(context.Background(), admin)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 0 && len(partitionsOf(t, admin)) == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still missing after 10s: %v, partitions %v", missing, partitionsOf(t, admin))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
