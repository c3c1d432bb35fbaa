package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestScaleSmoke runs the scale scenario small: 3 nodes, 2 worker
// processes from two source addresses, 300 connections on 5 channels.
// Every connection is held and counted on its node, and every broadcast
// reaches every subscriber of its channel once, in order.
func TestScaleSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts meshcast and meshbench processes")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	mc := buildMeshcast(t)
	mb := filepath.Join(t.TempDir(), "meshbench")
	if out, err := exec.Command("go", "build", "-o", mb, "../cmd/meshbench").CombinedOutput(); err != nil {
		t.Fatalf("go build meshbench: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunScale(ctx, ScaleConfig{MeshcastBin: mc, MeshbenchBin: mb, BasePort: freeBasePort(t, 3), LogDir: t.TempDir(),
		Conns: 300, Channels: 5, Workers: 2, ConnectRate: 1000, Hold: 200 * time.Millisecond, Rate: 5,
		Duration: time.Second, Warmup: 200 * time.Millisecond, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Connected != 300 || res.Disconnects != 0 || len(res.Held) != 3 {
		t.Fatalf("connections: %+v", res)
	}
	for _, n := range res.Held {
		if n.Connections != 100 || n.KiBPerConn <= 0 {
			t.Fatalf("node %s holds %.0f connections (%.1f KiB each), want 100", n.Name, n.Connections, n.KiBPerConn)
		}
	}
	if res.Expected == 0 || res.Received != res.Expected || res.Lost != 0 || res.Gaps != 0 || res.OutOfOrder != 0 || res.Unexpected != 0 {
		t.Fatalf("deliveries: %+v", res)
	}
	if res.Delivered == 0 || res.P99 <= 0 {
		t.Fatalf("nothing measured: %+v", res)
	}
}
