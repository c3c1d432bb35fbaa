package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/meshcast/meshcast/edge"
	"github.com/meshcast/meshcast/wal/chanauth"
)

// policyFlags are the flags of private channels' policy checks.
type policyFlags struct {
	conns   int
	batch   int
	timeout time.Duration
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&p.conns, "channel-auth-conns", chanauth.DefaultConns, "private channels: connections to --database-url that check the app's policies on realtime.messages (round trips at once; checks waiting meanwhile go together in the next)")
	fs.IntVar(&p.batch, "channel-auth-batch", chanauth.DefaultMaxBatch, "private channels: most policy checks in one round trip")
	fs.DurationVar(&p.timeout, "channel-auth-timeout", chanauth.DefaultTimeout, "private channels: longest a policy check may take, waiting included; a join whose check takes longer is refused (UnableToConnectToProject)")
}

func (p *policyFlags) check() error {
	if p.conns < 1 || p.batch < 1 || p.timeout <= 0 {
		return errors.New("--channel-auth-conns and --channel-auth-batch must be at least 1, --channel-auth-timeout positive")
	}
	return nil
}

// dbPolicy is edge's ChannelPolicy backed by the app's policies on
// realtime.messages (wal/chanauth).
type dbPolicy struct {
	c   *chanauth.Checker
	set *metrics.Set
}

// newChannelPolicy returns what decides private channels: with
// --database-url and --jwt-secret the database's policies; otherwise nil,
// edge's claims rule (a node without a secret never asks).
func newChannelPolicy(o *options, log *slog.Logger) (*dbPolicy, error) {
	if o.databaseURL == "" || o.jwtSecret == "" {
		log.Info("private channels: any verified role but anon may read and write them (no --database-url or no --jwt-secret)")
		return nil, nil
	}
	set := metrics.NewSet()
	c, err := chanauth.New(chanauth.Config{URL: o.databaseURL, Conns: o.policy.conns, MaxBatch: o.policy.batch,
		Timeout: o.policy.timeout, Logger: log, Metrics: set})
	if err != nil {
		return nil, fmt.Errorf("--database-url: %w", err)
	}
	log.Info("private channels: decided by the database's policies on realtime.messages", "conns", o.policy.conns)
	return &dbPolicy{c: c, set: set}, nil
}

func (p *dbPolicy) close() { p.c.Close() }

func (p *dbPolicy) CanRead(ctx context.Context, id *edge.Identity, topic string, want edge.Extensions) (edge.Extensions, error) {
	return p.check(ctx, false, id, topic, want)
}

func (p *dbPolicy) CanWrite(ctx context.Context, id *edge.Identity, topic string, want edge.Extensions) (edge.Extensions, error) {
	return p.check(ctx, true, id, topic, want)
}

func (p *dbPolicy) check(ctx context.Context, write bool, id *edge.Identity, topic string, want edge.Extensions) (edge.Extensions, error) {
	var ext chanauth.Ext
	if want.Has(edge.ExtBroadcast) {
		ext |= chanauth.Broadcast
	}
	if want.Has(edge.ExtPresence) {
		ext |= chanauth.Presence
	}
	got, err := p.c.Check(ctx, chanauth.Request{Write: write, Ext: ext, Topic: topic, Role: id.Role, Sub: id.Sub,
		Claims: string(id.Claims), Headers: string(id.Headers)})
	switch {
	case errors.Is(err, chanauth.ErrUnavailable):
		err = fmt.Errorf("%w: %w", edge.ErrPolicyUnavailable, err)
	case errors.Is(err, chanauth.ErrMissingPartition):
		err = fmt.Errorf("%w: %w", edge.ErrMissingPartition, err)
	}
	var allowed edge.Extensions
	if got&chanauth.Broadcast != 0 {
		allowed |= edge.ExtBroadcast
	}
	if got&chanauth.Presence != 0 {
		allowed |= edge.ExtPresence
	}
	return allowed, err
}
