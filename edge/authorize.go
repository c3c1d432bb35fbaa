package edge

import (
	"context"
	"sync"

	"github.com/gobwas/ws"

	"github.com/meshcast/meshcast/wire/phx"
)

// The paths' side of private channels: asking the server's ChannelPolicy
// and carrying out the refusals the rules (rules.go) decide.

// check asks the policy whether id may read (or write) want on the
// private channel name, and counts the answer.
func (s *Server) check(ctx context.Context, write bool, id *Identity, name string, want Extensions) (Extensions, error) {
	var allowed Extensions
	var err error
	op := "read"
	if write {
		op = "write"
		allowed, err = s.policy.CanWrite(ctx, id, name, want)
	} else {
		allowed, err = s.policy.CanRead(ctx, id, name, want)
	}
	allowed &= want
	result := "allowed"
	switch {
	case err != nil:
		allowed, result = 0, "error"
	case allowed != want:
		result = "denied"
	}
	s.metrics.set.GetOrCreateCounter(`meshcast_channel_auth_checks_total{op="` + op + `",result="` + result + `"}`).Inc()
	return allowed, err
}

// ask asks the policy about a private channel of this connection for cl.
// Called with c.mu held; a policy that may block is asked with c.mu let
// go, bounded by Shutdown's deadline, so that timers and Shutdown go on;
// the caller must then check that the channel is still joined.
func (c *conn) ask(write bool, cl *claims, name string, want Extensions) (Extensions, error) {
	s := c.srv
	id := identity(cl, c.headers)
	if !s.policyBlocks {
		return s.check(context.Background(), write, id, name, want)
	}
	c.unlockToWait()
	defer c.mu.Lock()
	return s.check(s.life, write, id, name, want)
}

// askPair asks reads and writes (either may be empty) at once, so that a
// policy that batches answers both in one round trip.
func (c *conn) askPair(cl *claims, name string, reads, writes Extensions) (r, w Extensions, rerr, werr error) {
	if reads == 0 || writes == 0 || !c.srv.policyBlocks {
		if reads != 0 {
			r, rerr = c.ask(false, cl, name, reads)
		}
		if writes != 0 {
			w, werr = c.ask(true, cl, name, writes)
		}
		return r, w, rerr, werr
	}
	s := c.srv
	id := identity(cl, c.headers)
	c.unlockToWait()
	defer c.mu.Lock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r, rerr = s.check(s.life, false, id, name, reads) }()
	w, werr = s.check(s.life, true, id, name, writes)
	wg.Wait()
	return r, w, rerr, werr
}

// joined reports whether ch is still one of the connection's channels
// (after c.mu was let go). Called with c.mu held.
func (c *conn) joined(ch *channel) bool { return !c.gone && c.channels[ch.key.name] == ch }

// setGrants changes a joined channel's grants. Called with c.mu held.
func (c *conn) setGrants(ch *channel, g grants) {
	t := ch.t
	t.mu.Lock()
	ch.grants = g
	t.mu.Unlock()
}

// writeRefusal decides whether ch may write x (broadcast or presence),
// asking the policy the first time, as Supabase does: the writes of both
// extensions, and for presence the read of presence if the join did not
// ask it. Called with c.mu held (let go while a policy blocks).
func (c *conn) writeRefusal(ch *channel, x Extensions) *refusal {
	var reads Extensions
	if x == ExtPresence {
		reads = ch.grants.readsToAsk(ExtPresence)
	}
	writes := ch.grants.writesToAsk(x)
	var err error
	if reads|writes != 0 {
		rAllowed, wAllowed, rerr, werr := c.askPair(ch.claims, ch.name, reads, writes)
		if !c.joined(ch) {
			return &refusal{action: dropSilently}
		}
		c.setGrants(ch, ch.grants.withReads(reads, rAllowed, rerr).withWrites(writes, wAllowed, werr))
		if err = rerr; err == nil {
			err = werr
		}
	}
	if x == ExtBroadcast {
		return decideSend(ch.grants, err)
	}
	return decideTrack(ch.grants, err)
}

// carryOut does what a refusal of the push m says; ch is its channel (nil
// for a join). It reports false when the connection must stop reading.
// Called with c.mu held.
func (c *conn) carryOut(r *refusal, m *phx.Message, ch *channel) bool {
	s := c.srv
	if r.metric != "" {
		s.metrics.errorReason(r.metric)
	}
	if r.logCode != "" {
		s.logLimited.Warn("channel policy failed", "code", r.logCode, "topic", m.Topic, "remote", c.remote, "err", r.cause)
	}
	joinRef := m.JoinRef
	if ch != nil {
		joinRef = ch.joinRef
	}
	switch r.action {
	case replyError, closeSocket:
		resp := emptyObject
		if r.text != "" {
			resp = phx.ReasonPayload(r.text)
		}
		c.reply(joinRef, m.Ref, m.Topic, "error", resp)
		if r.action == closeSocket {
			c.closeAfterFlush(ws.StatusPolicyViolation, r.closeReason)
			return false
		}
	case closeChannel:
		c.closeChannel(ch, r.text)
	}
	return true
}
