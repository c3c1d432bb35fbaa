package bench

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
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresStartTimeout bounds initdb and the wait for a new server to accept
// connections.
const postgresStartTimeout = 60 * time.Second

// DefaultPostgresBinDir is where Debian's postgresql-15 puts its binaries.
const DefaultPostgresBinDir = "/usr/lib/postgresql/15/bin"

// LocalPostgres is a throwaway Postgres for a benchmark run: initdb'd into a
// temporary directory, logical replication on, trust authentication on
// 127.0.0.1. As root it runs as the postgres user (Postgres refuses root).
type LocalPostgres struct {
	Dir  string
	Port int
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// PostgresConfig configures StartPostgres.
type PostgresConfig struct {
	BinDir string // default DefaultPostgresBinDir, else $PATH
	Port   int    // 0: a free port
	// Fsync keeps Postgres's durability (fsync, full_page_writes): commits
	// then wait for the disk. Off by default: the run measures the change
	// stream, not this machine's fsync.
	Fsync    bool
	Settings []string // more postgresql.conf lines
}

// StartPostgres initdb's and starts a server; Stop stops it and removes its
// directory.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*LocalPostgres, error) {
	bin := cfg.BinDir
	if bin == "" {
		bin = DefaultPostgresBinDir
		if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
			if p, err := exec.LookPath("initdb"); err == nil {
				bin = filepath.Dir(p)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		return nil, fmt.Errorf("bench: PostgreSQL binaries not found in %s (install postgresql-15 or pass the bin dir)", bin)
	}
	dir, err := os.MkdirTemp("", "meshbench-pg")
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("bench: running as root needs a postgres user to run Postgres as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	command := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		return c
	}
	p := &LocalPostgres{Dir: dir, Port: cfg.Port}
	fail := func(err error) (*LocalPostgres, error) {
		p.Stop()
		return nil, err
	}
	data := filepath.Join(dir, "data")
	ictx, cancel := context.WithTimeout(ctx, postgresStartTimeout)
	defer cancel()
	initdb := command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C")
	if out, err := runBounded(ictx, initdb); err != nil {
		return fail(fmt.Errorf("bench: initdb: %v: %s", err, out))
	}
	if p.Port == 0 {
		if p.Port, err = freeTCPPort(); err != nil {
			return fail(err)
		}
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(p.Port),
		"unix_socket_directories = '" + dir + "'",
		"wal_level = logical",
		"max_replication_slots = 10",
		"max_wal_senders = 10",
		"max_connections = 200",
		"shared_buffers = 256MB",
		"max_slot_wal_keep_size = '4GB'",
		"timezone = 'UTC'",
		"log_min_messages = warning",
	}
	if !cfg.Fsync {
		conf = append(conf, "fsync = off", "full_page_writes = off")
	}
	conf = append(conf, cfg.Settings...)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fail(err)
	}
	_, err = f.WriteString("\n# meshbench\n" + strings.Join(conf, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	if p.log, err = os.Create(filepath.Join(dir, "postgres.log")); err != nil {
		return fail(err)
	}
	p.cmd = command("postgres", "-D", data)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.cmd = nil
		return fail(fmt.Errorf("bench: start postgres: %w", err))
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	for {
		cctx, cancel := context.WithTimeout(ictx, 2*time.Second)
		conn, err := pgx.Connect(cctx, p.URL())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return p, nil
		}
		select {
		case <-p.done:
			return fail(fmt.Errorf("bench: postgres exited at start: %s", p.logTail()))
		case <-ictx.Done():
			return fail(fmt.Errorf("bench: postgres did not accept connections: %v: %s", err, p.logTail()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL is a superuser URL of the server's postgres database.
func (p *LocalPostgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
}

// PID is the postmaster's process id.
func (p *LocalPostgres) PID() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop shuts the server down (fast shutdown, then kill after 15 s) and
// removes its directory.
func (p *LocalPostgres) Stop() {
	if p.cmd != nil {
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		p.cmd = nil
	}
	if p.log != nil {
		p.log.Close()
	}
	os.RemoveAll(p.Dir)
}

func (p *LocalPostgres) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "postgres.log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func runBounded(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.Bytes(), err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return out.Bytes(), ctx.Err()
	}
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// ReadTreeCPUSeconds returns the CPU seconds of process pid and its live
// children (Postgres's backends and walsenders are children of the
// postmaster). Children that exited are not counted.
func ReadTreeCPUSeconds(pid int) (float64, error) {
	total, err := ReadCPUSeconds(pid)
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		b, err := os.ReadFile(procPath(child, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		if ppid, err := parseStatPPID(b); err != nil || ppid != pid {
			continue
		}
		if v, err := parseStatCPU(b); err == nil {
			total += v
		}
	}
	return total, nil
}

// parseStatPPID extracts field 4 (ppid) of /proc/<pid>/stat.
func parseStatPPID(stat []byte) (int, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bench: malformed /proc stat")
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, errors.New("bench: short /proc stat")
	}
	return strconv.Atoi(string(f[1]))
}
