// Package pglocal runs throwaway local PostgreSQL servers, for the tests
// (through wal/pgtest) and the benchmarks (meshbench wal) of Postgres
// changes.
//
// A server is initdb'd into a temporary directory (UTF8, the C locale,
// trust authentication) and runs with wal_level=logical, listening on
// 127.0.0.1 with its unix socket in the same directory, in UTC. Postgres
// refuses to run as root: when the caller is root, the server runs as the
// "postgres" user and its directory belongs to that user. The postmaster is
// a child process killed with its parent (PR_SET_PDEATHSIG), so no server
// outlives a test binary or a benchmark that crashed.
package pglocal

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
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultBinDir is where Debian's postgresql-15 package puts its binaries.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// startTimeout bounds initdb and the wait for a server to accept
// connections, unless the context ends first.
const startTimeout = 60 * time.Second

// Config configures Start.
type Config struct {
	// BinDir holds initdb and postgres. Empty: DefaultBinDir, else the
	// directory of initdb on $PATH.
	BinDir string
	// Port is the TCP port; 0 picks a free one (and another if it is taken
	// before the server binds it).
	Port int
	// Settings are postgresql.conf lines ("fsync = off"), after the base
	// settings; later lines win.
	Settings []string
}

// Server is a throwaway Postgres: running, or stopped and able to start
// again on the same port and data.
type Server struct {
	Dir  string // the temporary directory: data, unix socket, postgres.log
	Port int

	bin  string
	data string
	cred *syscall.Credential // non-nil when running as root

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *os.File
}

// Start initdb's a server and starts it. Remove stops it and deletes its
// directory.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin, err := findBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	// A short path: the unix socket's path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "pglocal")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Port: cfg.Port, bin: bin, data: filepath.Join(dir, "data")}
	fail := func(err error) (*Server, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresCredential(); err == nil {
			err = os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid))
		}
		if err != nil {
			return fail(err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := s.initdb(ctx, cfg.Settings); err != nil {
		return fail(err)
	}
	for attempt := 0; ; attempt++ {
		if cfg.Port == 0 {
			s.Port, err = freePort()
		}
		if err == nil {
			err = s.start(ctx)
		}
		if err == nil {
			return s, nil
		}
		if cfg.Port != 0 || attempt == 4 || ctx.Err() != nil {
			return fail(err)
		}
	}
}

func findBinDir(dir string) (string, error) {
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
			return "", fmt.Errorf("PostgreSQL binaries (initdb, postgres) not found in %s: install the postgresql-15 package (apt-get install postgresql-15)", dir)
		}
		return dir, nil
	}
	if _, err := os.Stat(filepath.Join(DefaultBinDir, "postgres")); err == nil {
		return DefaultBinDir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL binaries (initdb, postgres) not found in %s or $PATH: "+
		"install the postgresql-15 package (apt-get install postgresql-15)", DefaultBinDir)
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

// URL is a superuser connection URL for database db.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// PID is the postmaster's process id, 0 while stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (s *Server) initdb(ctx context.Context, settings []string) error {
	cmd := s.command("initdb", "-D", s.data, "-U", "postgres", "--auth=trust",
		"--no-sync", "--encoding=UTF8", "--locale=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := runCtx(ctx, cmd); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out.Bytes())
	}
	conf := append([]string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + s.Dir + "'",
		"wal_level = logical",
		"timezone = 'UTC'",
		"log_min_messages = warning",
	}, settings...)
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# pglocal\n" + strings.Join(conf, "\n") + "\n")
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

// Start starts a stopped server again, on the same port and data.
func (s *Server) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	return s.start(ctx)
}

// start runs the postmaster in the foreground of a child process, so that
// stopping it is a signal and a wait, no pg_ctl needed, and waits until it
// accepts connections.
func (s *Server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("server already running")
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := s.command("postgres", "-D", s.data, "-p", strconv.Itoa(s.Port))
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
	s.cmd, s.done, s.log = cmd, done, logf

	url := s.URL("postgres") + "&connect_timeout=5"
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			logf.Close()
			return fmt.Errorf("postgres exited at start: %s", s.LogTail())
		case <-ctx.Done():
			s.stopLocked()
			return fmt.Errorf("postgres did not accept connections: %v: %s", err, s.LogTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the server as a crash would (SIGQUIT, Postgres's immediate
// shutdown; SIGKILL after 30 s) and waits until its port is free:
// committed transactions survive, recovery runs at the next Start.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.log.Close()
	s.cmd, s.done, s.log = nil, nil, nil
	// An immediate shutdown reaps the children before the postmaster
	// exits; still, make sure the port is free before a Start reuses it.
	for range 500 {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)))
		if err == nil {
			ln.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Remove stops the server and deletes its directory.
func (s *Server) Remove() {
	s.Stop()
	os.RemoveAll(s.Dir)
}

// LogTail is the end of the server's log, for error messages.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
