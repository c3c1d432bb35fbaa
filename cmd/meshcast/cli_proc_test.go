//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// The binary as a newcomer meets it: where an open node listens, --version
// and /version, --help, bad environment values, --allowed-origins on the
// WebSocket upgrade.

// startSingle starts one node with args and env (the test's own MESHCAST_*
// variables are not passed) and waits until it serves /healthz at addr.
// It returns nil when the node could not bind addr because another process
// holds it.
func startSingle(t *testing.T, addr string, env []string, args ...string) *node {
	t.Helper()
	n := &node{nodeSpec: nodeSpec{name: "single", httpAddr: addr}, log: &syncBuffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(meshcastBin, append([]string{"--shutdown-timeout", "2s"}, args...)...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.cmd.Env = append(withoutMeshcastEnv(), env...)
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			t.Logf("--- log of the node ---\n%s", tail(n.log.String(), 40))
		}
	})
	if !waitFor(readyWait, func() bool {
		select {
		case <-n.done:
			return true
		default:
		}
		return httpStatus(n, "/healthz") == http.StatusOK
	}) {
		t.Fatalf("node not ready at %s within %v\n%s", addr, readyWait, n.log.String())
	}
	select {
	case <-n.done:
		if strings.Contains(n.log.String(), "address already in use") {
			return nil
		}
		t.Fatalf("node exited: %v\n%s", n.err, n.log.String())
	default:
	}
	return n
}

// withoutMeshcastEnv is the test's environment without MESHCAST_*.
func withoutMeshcastEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHCAST_") {
			env = append(env, kv)
		}
	}
	return env
}

// reachable reports whether a TCP connection to addr opens.
func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// Without --jwt-secret and --listen the node serves 127.0.0.1:4000 only,
// and says so; an explicit --listen or MESHCAST_LISTEN is honoured.
// 127.0.0.2 is a loopback address too, which a wildcard listener answers
// on and a 127.0.0.1 one does not.
func TestOpenNodeListensOnLoopback(t *testing.T) {
	if !reachableAny("127.0.0.2") {
		t.Skip("127.0.0.2 is not routable here")
	}
	ports := freePorts(t, 2)
	flagAddr, envAddr := ":"+strconv.Itoa(ports[0]), ":"+strconv.Itoa(ports[1])
	startSingle(t, "127.0.0.1"+flagAddr, nil, "--listen", flagAddr, "--webtransport-listen", "off")
	startSingle(t, "127.0.0.1"+envAddr, []string{"MESHCAST_LISTEN=" + envAddr, "MESHCAST_WEBTRANSPORT_LISTEN=off"})
	for _, a := range []string{flagAddr, envAddr} {
		if !reachable("127.0.0.2" + a) {
			t.Errorf("--listen %s given: not reachable on 127.0.0.2", a)
		}
	}

	n := startSingle(t, openListen, nil, "--webtransport-listen", "off")
	if n == nil {
		t.Skipf("%s is taken by another process here: the default address is not checked", openListen)
	}
	if reachable("127.0.0.2" + defaultListen) {
		t.Errorf("an open node without --listen is reachable beyond 127.0.0.1")
	}
	if !strings.Contains(n.log.String(), "open mode serves this machine only: listening on loopback") {
		t.Errorf("the startup log does not say the open node listens on loopback only:\n%s", n.log.String())
	}
}

// reachableAny reports whether host accepts or refuses a TCP connection
// (as opposed to the dial failing for want of a route).
func reachableAny(host string) bool {
	_, err := net.DialTimeout("tcp", host+":1", time.Second)
	return err == nil || errors.Is(err, syscall.ECONNREFUSED)
}

var versionLineRE = regexp.MustCompile(`^meshcast (\S+) \(go[0-9.]+\S*, [a-z0-9]+/[a-z0-9]+\)\n$`)

// --version prints the version; the node tells the same at /version and
// in its startup log.
func TestVersionAndHelp(t *testing.T) {
	out, err := exec.Command(meshcastBin, "--version").Output()
	m := versionLineRE.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("--version: %q %v", out, err)
	}
	v := string(m[1])

	help, err := exec.Command(meshcastBin, "--help").Output()
	if err != nil || !bytes.Contains(help, []byte("--queue-bytes int")) || !bytes.Contains(help, []byte("in effect 10485770 = 10 MiB")) {
		t.Errorf("--help (on stdout, exit 0): %v\n%s", err, help)
	}

	cmd := exec.Command(meshcastBin)
	cmd.Env = append(withoutMeshcastEnv(), "MESHCAST_QUEUE_BYTES=4MiB")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), `MESHCAST_QUEUE_BYTES="4MiB": --queue-bytes wants an integer number of bytes`) {
		t.Errorf("MESHCAST_QUEUE_BYTES=4MiB: %v, stderr %q; want exit 2 naming the variable and what it wants", err, stderr.String())
	}

	addr := "127.0.0.1:" + strconv.Itoa(freePorts(t, 1)[0])
	n := startSingle(t, addr, nil, "--listen", addr, "--webtransport-listen", "off", "--allowed-origins", "https://app.example.com")
	resp, err := httpClient.Get("http://" + addr + "/version")
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Version, Go string }
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || body.Version != v || !strings.HasPrefix(body.Go, "go") {
		t.Errorf("/version: %+v %v, want version %q", body, err, v)
	}
	if !strings.Contains(n.log.String(), `msg="meshcast serving" version=`+v+" ") {
		t.Errorf("the startup log does not carry version %s:\n%s", v, n.log.String())
	}
	checkOriginFlag(t, n)
}

// checkOriginFlag: a node with --allowed-origins refuses a WebSocket
// upgrade from a page of another origin (403, counted), and lets in the
// allowed origin and clients without Origin (not browsers).
func checkOriginFlag(t *testing.T, n *node) {
	t.Helper()
	dial := func(origin string) (int, string) {
		var status int
		var body string
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := ws.Dialer{Timeout: msgWait, Header: ws.HandshakeHeaderHTTP(h), OnStatusError: func(st int, _ []byte, r io.Reader) {
			status = st
			if resp, err := http.ReadResponse(bufio.NewReader(r), nil); err == nil {
				b, _ := io.ReadAll(resp.Body)
				body = string(b)
			}
		}}
		nc, _, _, err := d.Dial(context.Background(), "ws://"+n.httpAddr+"/realtime/v1/websocket?apikey=test&vsn=2.0.0")
		if err == nil {
			nc.Close()
			return http.StatusSwitchingProtocols, ""
		}
		return status, body
	}
	if st, body := dial("https://evil.example.com"); st != http.StatusForbidden || !jsonEqual([]byte(body), `{"error":"Origin not allowed: https://evil.example.com"}`) {
		t.Errorf("WebSocket from another origin: %d %s, want 403 Origin not allowed", st, body)
	}
	for _, origin := range []string{"https://app.example.com", ""} {
		if st, body := dial(origin); st != http.StatusSwitchingProtocols {
			t.Errorf("WebSocket with Origin %q: %d %s, want the upgrade", origin, st, body)
		}
	}
	if m := mustScrape(t, n); m[`meshcast_errors_total{reason="origin"}`] != 1 {
		t.Errorf(`errors_total{reason="origin"} = %v, want 1`, m[`meshcast_errors_total{reason="origin"}`])
	}
}
