package bench

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/bench/client"
	"github.com/meshcast/meshcast/bench/cluster"
	"github.com/meshcast/meshcast/wal/pgtest"
	"github.com/meshcast/meshcast/wire/phx"
)

func TestParseWALChange(t *testing.T) {
	frame := []byte(`[null,null,"realtime:x","postgres_changes",{"ids":[12],"data":{"columns":[{"name":"id","type":"int8"},` +
		`{"name":"writer","type":"int4"},{"name":"seq","type":"int8"},{"name":"team","type":"int4"},{"name":"sent_ns","type":"int8"},` +
		`{"name":"pad","type":"text"}],"commit_timestamp":"2026-01-01T00:00:00.000Z","errors":null,"old_record":{"id":7},` +
		`"record":{"id":7,"writer":3,"seq":41,"team":2,"sent_ns":1767225600123456789,"pad":"xxxx"},"schema":"public","table":"t","type":"UPDATE"}}]`)
	c, err := parseWALChange(frame)
	if err != nil {
		t.Fatal(err)
	}
	if want := (walChange{writer: 3, team: 2, seq: 41, sentNs: 1767225600123456789}); c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
	bad := strings.Replace(string(frame), `"errors":null`, `"errors":["Error 413: Payload Too Large"]`, 1)
	if c, err := parseWALChange([]byte(bad)); err != nil || !c.errors {
		t.Errorf("errors not seen: %+v %v", c, err)
	}
	for _, f := range []string{`[null,null,"realtime:x","postgres_changes",{"ids":[1],"data":{"record":{"id":1}}}]`, `[]`} {
		if _, err := parseWALChange([]byte(f)); err == nil {
			t.Errorf("%s parsed", f)
		}
	}
}

func TestWALJoinFrame(t *testing.T) {
	cfg, err := WALConfig{Shape: ShapeFiltered, Subs: 10, Keys: 4, URL: "ws://x/", DatabaseURL: "postgres://x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	b := phx.AppendPush(nil, client.JoinRef, 1, "realtime:meshbench-wal-0", "phx_join", client.Join{Changes: []string{binding(&cfg, 5)}, Token: "tok"}.Payload())
	var frame []json.RawMessage
	if err := json.Unmarshal(b, &frame); err != nil || len(frame) != 5 {
		t.Fatalf("%s: %v", b, err)
	}
	var p struct {
		Config struct {
			PostgresChanges []map[string]string `json:"postgres_changes"`
		} `json:"config"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(frame[4], &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"event": "UPDATE", "schema": "public", "table": "meshbench_wal_filtered", "filter": "id=eq.2"}
	if len(p.Config.PostgresChanges) != 1 || !mapsEqual(p.Config.PostgresChanges[0], want) || p.AccessToken != "tok" {
		t.Errorf("join payload %s", frame[4])
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestWALSmoke runs each shape of meshbench wal for about a second against
// three real meshcast processes and a real Postgres, and checks that every
// row reached every subscriber it should and no other.
func TestWALSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres and three meshcast processes")
	}
	bin := buildMeshcast(t)
	pg := pgtest.Start(t)
	const secret = "smoke-secret"
	cl, err := cluster.Start(context.Background(), cluster.Config{Bin: bin, BasePort: freeBasePort(t, 3), LogDir: t.TempDir(),
		DatabaseURL: pg.URL(), Flags: []string{"--jwt-secret", secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	urls := strings.Join(cl.URLs("x"), ",")
	for _, shape := range []Shape{ShapeFanout, ShapeFiltered, ShapeRLS} {
		t.Run(string(shape), func(t *testing.T) {
			cfg := WALConfig{Shape: shape, URL: urls, DatabaseURL: pg.URL(), JWTSecret: secret,
				Subs: 20, Keys: 10, Teams: 4, Rate: 200, Writers: 2, RowsPerTx: 2,
				Warmup: 200 * time.Millisecond, Duration: time.Second, Drain: 5 * time.Second}
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Budget())
			defer cancel()
			res, err := RunWAL(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			if res.Connected != cfg.Subs || res.Rows < 100 || res.Lost != 0 || res.Repeated != 0 || res.Wrong != 0 ||
				res.Unexpected != 0 || res.ChangeErrors != 0 || res.CommitErrors != 0 || !res.Drained || res.Disconnects != 0 {
				t.Errorf("run went wrong:\n%s", res)
			}
			// Every subscriber got its share: all rows, its key's, its team's.
			want := map[Shape]uint64{ShapeFanout: res.Rows * 20, ShapeFiltered: res.Rows * 2, ShapeRLS: res.Rows * 5}[shape]
			if res.Received != want || res.Expected != want {
				t.Errorf("received %d, expected %d, want %d", res.Received, res.Expected, want)
			}
			if res.Owner == "" || res.ServerCPU <= 0 || res.ChangesOut == 0 || res.WALChanges == 0 {
				t.Errorf("node metrics missing: %s", res)
			}
			if res.SlotLagStart < 0 || res.SlotLagEnd < 0 {
				t.Errorf("slot lag not read: %s", res)
			}
		})
	}
}

// buildMeshcast builds the server into the test's directory.
func buildMeshcast(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshcast")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/meshcast")
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build meshcast: %v\n%s", err, out)
	}
	return bin
}

// freeBasePort finds a cluster.Config.BasePort whose ports for n nodes were
// free a moment ago (HTTP and pprof TCP, gossip TCP and UDP, mesh UDP).
func freeBasePort(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(30000)
		ok := true
		var closers []func()
		try := func(network string, port int) {
			addr := "127.0.0.1:" + strconv.Itoa(port)
			if network == "udp" {
				c, err := net.ListenPacket("udp", addr)
				if err != nil {
					ok = false
					return
				}
				closers = append(closers, func() { c.Close() })
				return
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				ok = false
				return
			}
			closers = append(closers, func() { l.Close() })
		}
		for i := 1; i <= n && ok; i++ {
			try("tcp", base+i)
			try("tcp", base+50+i)
			try("tcp", base+100+10*i)
			try("udp", base+100+10*i)
			try("udp", base+100+10*i+1)
		}
		for _, c := range closers {
			c()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free base port")
	return 0
}
