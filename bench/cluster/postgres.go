package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/meshcast/meshcast/wal/pglocal"
)

// PostgresStartTimeout is how long pglocal lets a new server take to
// initdb and accept connections.
const PostgresStartTimeout = 60 * time.Second

// DefaultPostgresBinDir is where Debian's postgresql-15 puts its binaries.
const DefaultPostgresBinDir = pglocal.DefaultBinDir

// Postgres is a throwaway Postgres for a benchmark run (wal/pglocal):
// initdb'd into a temporary directory, logical replication on, trust
// authentication on 127.0.0.1. As root it runs as the postgres user
// (Postgres refuses root).
type Postgres struct{ *pglocal.Server }

// PostgresConfig configures StartPostgres.
type PostgresConfig struct {
	BinDir string // if empty, DefaultPostgresBinDir, else $PATH
	Port   int    // if zero, a free port
	// Fsync keeps Postgres's durability (fsync, full_page_writes): commits
	// then wait for the disk. Off by default: the runs measure the change
	// stream, not this machine's fsync.
	Fsync    bool
	Settings []string // more postgresql.conf lines
}

// StartPostgres initdb's and starts a server; Stop stops it and removes its
// directory.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	conf := []string{"max_replication_slots = 10", "max_wal_senders = 10", "max_connections = 200",
		"shared_buffers = 256MB", "max_slot_wal_keep_size = '4GB'"}
	if !cfg.Fsync {
		conf = append(conf, "fsync = off", "full_page_writes = off")
	}
	s, err := pglocal.Start(ctx, pglocal.Config{BinDir: cfg.BinDir, Port: cfg.Port, Settings: append(conf, cfg.Settings...)})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return &Postgres{s}, nil
}

// URL is a superuser URL of the server's postgres database.
func (p *Postgres) URL() string { return p.Server.URL("postgres") }

// Stop stops the server and removes its directory.
func (p *Postgres) Stop() { p.Server.Remove() }
