package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshcast/meshcast/wire/phx"
)

// refreshToken handles the access_token event: no reply; a bad token
// closes the channel with a system error, a private channel's reads are
// decided again for the new claims (a revoked read closes it), and new
// claims move its postgres_changes bindings to subscriptions of those
// claims. Called with c.mu held (which it may let go meanwhile).
func (c *conn) refreshToken(ch *channel, m *phx.Message) {
	var p phx.AccessTokenPayload
	if json.Unmarshal(m.Payload, &p) != nil || p.AccessToken == nil {
		return
	}
	tok := *p.AccessToken
	if tok == "" || len(tok) > 2 && tok[:3] == "sb_" {
		return
	}
	if c.srv.auth.open() {
		return
	}
	cl, aerr := c.srv.auth.verify(tok)
	if aerr != nil {
		c.srv.metrics.errorReason("token_refresh")
		c.closeChannel(ch, aerr.Msg)
		return
	}
	if ch.key.private {
		// The reads are asked again for the new claims; the writes at the
		// next push.
		asked := refreshReads(ch.grants, ch.presenceEnabled)
		allowed, err := c.ask(false, cl, ch.name, asked)
		if !c.joined(ch) {
			return
		}
		g, r := decideRefreshRead(ch.name, ch.grants, asked, allowed, err)
		if r != nil {
			c.carryOut(r, m, ch)
			return
		}
		c.setGrants(ch, g)
	}
	if !c.rekeyChanges(ch, cl) {
		return
	}
	ch.claims = cl
	c.armExpiry(ch)
}

// armExpiry (re)starts the timer that closes a channel when its token
// expires. Called with c.mu held.
func (c *conn) armExpiry(ch *channel) {
	if ch.expiry != nil {
		ch.expiry.Stop()
		ch.expiry = nil
	}
	if ch.claims == nil || ch.claims.Exp.IsZero() {
		return
	}
	exp := ch.claims.Exp
	ch.expiry = time.AfterFunc(time.Until(exp), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.gone || c.channels[ch.key.name] != ch || ch.claims.Exp != exp {
			return
		}
		ago := int(time.Since(exp).Seconds())
		c.srv.metrics.errorReason("token_expired")
		c.closeChannel(ch, fmt.Sprintf("Token has expired %d seconds ago", ago))
	})
}

// compactJSON returns raw without insignificant white space.
func compactJSON(raw []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
