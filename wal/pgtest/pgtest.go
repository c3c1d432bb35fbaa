// Package pgtest starts throwaway PostgreSQL servers for tests, so that code
// which talks to Postgres is tested against a real one rather than a mock.
//
// A server is initdb'd into a temporary directory and runs with
// wal_level=logical, room for replication slots, trust authentication on
// 127.0.0.1 at a free port, its unix socket in the same directory, and
// durability turned off (fsync, full_page_writes) because tests throw it
// away. The database uses UTF8 and the C locale, so text sorts by bytes.
//
// Start gives a test its own server, which it may Stop, Start again and
// Restart. Shared gives a test its own database on a server shared by the
// whole test binary, which is much cheaper; it needs TestMain to wrap the
// run with Main so the server is stopped at the end:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m).Run()) }
//
// Postgres must not run as root: when the tests do, the server runs as the
// "postgres" user and its directory belongs to that user. The binaries are
// looked up in $PGTEST_BINDIR, /usr/lib/postgresql/15/bin and $PATH; when
// none has them, the test fails (it does not skip) naming the package to
// install.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultBinDir is where Debian's postgresql-15 package puts its binaries.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// startTimeout bounds initdb and the wait for a server to accept
// connections.
const startTimeout = 60 * time.Second

// Option changes how Start configures a server.
type Option func(*config)

type config struct {
	settings [][2]string
}

// WithSetting adds a postgresql.conf setting, e.g.
// WithSetting("max_slot_wal_keep_size", "64MB"). Later settings win.
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// Server is a running (or stopped) test Postgres, seen through one
// database. Its methods fail the test that made it.
type Server struct {
	t    testing.TB
	inst *instance
	db   string
	// shared handles may not stop or restart the server others use.
	shared bool
}

// instance is one postmaster and its data directory.
type instance struct {
	dir, data, bin string
	port           int
	cred           *syscall.Credential // non-nil when running as root

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *os.File
}

// Start initdb's a new server, starts it and stops it and removes its
// directory when t ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	inst, err := newInstance(c)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(inst.destroy)
	return &Server{t: t, inst: inst, db: "postgres"}
}

// URL is a superuser connection URL for the server's database.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.inst.port, s.db)
}

// Database is the name of the database URL points at.
func (s *Server) Database() string { return s.db }

// Exec runs sql (one statement when args are given, any number otherwise)
// on a new connection and fails the test on error.
func (s *Server) Exec(sql string, args ...any) {
	s.t.Helper()
	if err := s.exec(sql, args...); err != nil {
		s.t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

func (s *Server) exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// Stop kills the server as a crash would (immediate shutdown): committed
// transactions survive, recovery runs at the next start.
func (s *Server) Stop() {
	s.t.Helper()
	s.own("Stop")
	s.inst.stop()
}

// Start starts a stopped server again on the same port and data.
func (s *Server) Start() {
	s.t.Helper()
	s.own("Start")
	if err := s.inst.start(); err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
}

// Restart is Stop then Start.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

func (s *Server) own(what string) {
	if s.shared {
		s.t.Fatalf("pgtest: %s on a shared server; use pgtest.Start for a server of your own", what)
	}
}

func newInstance(c config) (*instance, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	// A short path: the unix socket's path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "pgtest")
	if err != nil {
		return nil, err
	}
	inst := &instance{dir: dir, data: filepath.Join(dir, "data"), bin: bin}
	if os.Geteuid() == 0 {
		inst.cred, err = postgresCredential()
		if err == nil {
			err = os.Chown(dir, int(inst.cred.Uid), int(inst.cred.Gid))
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := inst.initdb(c); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The port is free when chosen but could be taken before postgres
	// binds it; another one is tried then.
	for attempt := 0; ; attempt++ {
		inst.port, err = freePort()
		if err == nil {
			err = inst.start()
		}
		if err == nil {
			return inst, nil
		}
		if attempt == 4 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func findBinDir() (string, error) {
	var dirs []string
	if d := os.Getenv("PGTEST_BINDIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, DefaultBinDir)
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL binaries (initdb, postgres) not found in $PGTEST_BINDIR, %s or $PATH: "+
		"install the postgresql-15 package (apt-get install postgresql-15) or set PGTEST_BINDIR", DefaultBinDir)
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user to run the server as: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has uid %q gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (inst *instance) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(inst.bin, name), args...)
	cmd.Dir = inst.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	// Kill the server with the test binary should the binary die before
	// its cleanup runs, so no postgres outlives a crashed test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: inst.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (inst *instance) initdb(c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := inst.command("initdb", "-D", inst.data, "-U", "postgres", "--auth=trust",
		"--no-sync", "--encoding=UTF8", "--locale=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := runCtx(ctx, cmd); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out.Bytes())
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + inst.dir + "'",
		"wal_level = logical",
		"max_replication_slots = 20",
		"max_wal_senders = 20",
		"max_connections = 60",
		"shared_buffers = 16MB",
		"fsync = off",
		"full_page_writes = off",
		"timezone = 'UTC'",
		"log_min_messages = warning",
		"log_min_error_statement = panic",
	}
	for _, kv := range c.settings {
		conf = append(conf, kv[0]+" = '"+strings.ReplaceAll(kv[1], "'", "''")+"'")
	}
	f, err := os.OpenFile(filepath.Join(inst.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# pgtest\n" + strings.Join(conf, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func runCtx(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}

// start runs the postmaster in the foreground of a child process, which
// pgtest owns: stopping it is a signal and a wait, no pg_ctl needed.
func (inst *instance) start() error {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.cmd != nil {
		return errors.New("server already running")
	}
	logf, err := os.OpenFile(filepath.Join(inst.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := inst.command("postgres", "-D", inst.data, "-p", strconv.Itoa(inst.port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	inst.cmd, inst.done, inst.log = cmd, done, logf

	deadline := time.Now().Add(startTimeout)
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", inst.port)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-done:
			inst.cmd, inst.done = nil, nil
			logf.Close()
			return fmt.Errorf("postgres exited at start: %s", inst.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			inst.stopLocked()
			return fmt.Errorf("postgres did not accept connections within %v: %v: %s", startTimeout, err, inst.logTail())
		}
	}
}

// stop sends SIGQUIT, Postgres's immediate shutdown, and waits.
func (inst *instance) stop() {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	inst.stopLocked()
}

func (inst *instance) stopLocked() {
	if inst.cmd == nil {
		return
	}
	inst.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-inst.done:
	case <-time.After(30 * time.Second):
		inst.cmd.Process.Kill()
		<-inst.done
	}
	inst.log.Close()
	inst.cmd, inst.done, inst.log = nil, nil, nil
	// An immediate shutdown reaps the children before the postmaster
	// exits; still, make sure the port is free before a Start reuses it.
	for range 500 {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(inst.port)))
		if err == nil {
			ln.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (inst *instance) destroy() {
	inst.stop()
	os.RemoveAll(inst.dir)
}

func (inst *instance) logTail() string {
	b, _ := os.ReadFile(filepath.Join(inst.dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
