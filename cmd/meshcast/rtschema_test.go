//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshcast/meshcast/wal/pgtest"
	"github.com/meshcast/meshcast/wal/rtschema"
)

// `meshcast realtime-schema-sql` prints rtschema's script for the flags it
// is given (wal/rtschema's tests apply that script with psql).
func TestSchemaSQLCommand(t *testing.T) {
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		sub := subcommand(append([]string{"realtime-schema-sql"}, args...))
		if sub == nil {
			t.Fatal("no realtime-schema-sql subcommand")
		}
		err := sub(args, &out, io.Discard)
		return out.String(), err
	}
	got, err := run()
	if err != nil || got != rtschema.SQL(rtschema.Config{DaysAhead: 3, Retention: 72 * time.Hour}) {
		t.Errorf("default script differs from rtschema.SQL (err %v)", err)
	}
	got, err = run("--realtime-partitions-ahead", "7", "--realtime-retention", "-1s")
	if err != nil || !strings.Contains(got, "today + 7") || strings.Contains(got, "DROP TABLE") {
		t.Errorf("with 7 days ahead and no retention: err %v\n%s", err, got)
	}
	for _, bad := range [][]string{{"--realtime-retention", "0"}, {"--realtime-partitions-ahead", "0"}, {"extra"}} {
		if _, err := run(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if subcommand([]string{"--listen", ":0"}) != nil {
		t.Error("a node's flags taken for a subcommand")
	}
}

// plainNode is a meshcast process outside any cluster.
type plainNode struct {
	args []string
	log  *syncBuffer
}

// startPlainNode starts a meshcast process that is not in a cluster; it
// is killed when t ends.
func startPlainNode(t *testing.T, args ...string) *plainNode {
	t.Helper()
	n := &plainNode{args: append([]string{"--listen", "127.0.0.1:0", "--webtransport-listen", "off"}, args...), log: &syncBuffer{}}
	cmd := exec.Command(meshcastBin, n.args...)
	cmd.Stderr = n.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHCAST_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("--- log of %v ---\n%s", n.args, tail(n.log.String(), 30))
		}
	})
	return n
}

// waitServing waits until each node's log says it serves.
func waitServing(t *testing.T, nodes ...*plainNode) {
	t.Helper()
	for _, n := range nodes {
		if !waitFor(readyWait, func() bool { return strings.Contains(n.log.String(), `msg="meshcast serving"`) }) {
			t.Fatalf("%v not serving within %v:\n%s", n.args, readyWait, n.log.String())
		}
	}
}

// Nodes started at once on a fresh database: both serve, the schema is
// made once; a node told not to manage it leaves its database untouched
// and says what is missing.
func TestRealtimeSchemaAtStart(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec("CREATE DATABASE unmanaged")
	a := startPlainNode(t, "--database-url", pg.URL())
	b := startPlainNode(t, "--database-url", pg.URL())
	unmanagedURL := strings.Replace(pg.URL(), "/"+pg.Database()+"?", "/unmanaged?", 1)
	u := startPlainNode(t, "--database-url", unmanagedURL, "--manage-realtime-schema=false")
	waitServing(t, a, b, u)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, url := range []string{pg.URL(), unmanagedURL} {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		missing, err := rtschema.Missing(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		var partitions int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relname ~ '^messages_[0-9_]+$'").Scan(&partitions); err != nil {
			t.Fatal(err)
		}
		if url == pg.URL() && (len(missing) > 0 || partitions != 5) {
			t.Errorf("managed database: missing %v, %d partitions (want 5)", missing, partitions)
		}
		if url == unmanagedURL && (len(missing) != 7 || partitions != 0) {
			t.Errorf("unmanaged database: missing %v, %d partitions", missing, partitions)
		}
	}
	created := 0
	for _, n := range []*plainNode{a, b} {
		created += strings.Count(n.log.String(), "realtime schema: created what was missing")
	}
	if created != 1 {
		t.Errorf("%d nodes say they created the schema, want 1", created)
	}
	if log := u.log.String(); !strings.Contains(log, "not managed (--manage-realtime-schema=false) and incomplete") {
		t.Errorf("the unmanaged node does not say what is missing:\n%s", log)
	}
}
