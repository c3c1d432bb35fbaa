package edge

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meshcast/meshcast/wire/phx"
)

// The rules of joining and of private channels, as pure decisions: each
// takes what the path learnt (the frame, the token's verification, the
// policy's answer, the connection's counts) and returns a plan or a
// refusal. Nothing here locks, reads a clock or does I/O; the paths in
// channel.go, token.go, broadcast.go, presence.go and rest.go carry the
// decisions out.

// action is what a path does with a refusal.
type action uint8

const (
	// replyError answers the push with status error and {"reason": text}
	// ({} when text is empty).
	replyError action = iota
	// closeSocket answers as replyError, then closes the socket with
	// closeReason once the reply is out.
	closeSocket
	// closeChannel ends a joined channel: a system error with text, then
	// phx_close (the client does not rejoin).
	closeChannel
	// dropSilently does nothing: the push goes unanswered (a sender that
	// asked for an ack sees it time out).
	dropSilently
	// answerHTTP answers a REST request with status and {"message": text}.
	answerHTTP
)

// refusal is a decided "no": what the client is told and what happens.
type refusal struct {
	action      action
	metric      string // meshcast_errors_total reason; "" counts nothing
	text        string // Supabase's text
	closeReason string // closeSocket: the close frame's reason
	status      int    // answerHTTP: the HTTP status
	// logCode, when set, logs the refusal under Supabase's error code
	// (RlsPolicyError, …) with its cause.
	logCode string
	cause   error
}

// grants are what a channel's identity may do. The zero value, a
// public channel's (or any channel's on a node without a JWT secret), may
// do everything and asks nothing. A checked one has what its policy
// answered: asked extensions are decided — for the channel's life, or
// until a new access_token — and the allowed ones are allowed.
type grants struct {
	checked           bool
	readAsked, read   Extensions
	writeAsked, write Extensions
}

var (
	allowAll = grants{}
	unasked  = grants{checked: true} // a private channel before its policy answered
)

func (g grants) canRead(x Extensions) bool  { return !g.checked || g.read.Has(x) }
func (g grants) canWrite(x Extensions) bool { return !g.checked || g.write.Has(x) }

// writesToAsk is what must be asked before x is written: nothing once
// decided; else both extensions, which Supabase decides together.
func (g grants) writesToAsk(x Extensions) Extensions {
	if !g.checked || g.writeAsked.Has(x) {
		return 0
	}
	return allExtensions
}

// readsToAsk is what must be asked before x is read: nothing once decided.
func (g grants) readsToAsk(x Extensions) Extensions {
	if !g.checked {
		return 0
	}
	return x &^ g.readAsked
}

// withWrites records the answer to a write check of asked. An error
// decides nothing (the next push asks again, as Supabase does).
func (g grants) withWrites(asked, allowed Extensions, err error) grants {
	if err == nil {
		g.writeAsked |= asked
		g.write = g.write&^asked | allowed&asked
	}
	return g
}

// withReads records the answer to a read check of asked (an error
// decides nothing).
func (g grants) withReads(asked, allowed Extensions, err error) grants {
	if err == nil {
		g.readAsked |= asked
		g.read = g.read&^asked | allowed&asked
	}
	return g
}

// joinPlan is a join that passed the checks of its frame and token: what
// the channel will be. The whole config is kept so that what later joins
// ask for (replay, recovery) is read from it here.
type joinPlan struct {
	topic  string // "realtime:" + name
	name   string
	key    topicKey
	config phx.JoinConfig
	claims *claims
	token  string
	// reads is what the policy must allow reading before the join; 0:
	// nothing is asked (a public channel, or a node without a secret).
	reads  Extensions
	grants grants
	replay *replayParams // broadcast.replay, nil when not asked
}

func joinRefusal(reason string) *refusal {
	return &refusal{action: replyError, metric: "join_refused", text: reason}
}

var refuseJoinRate = &refusal{action: closeSocket, metric: "join_refused",
	text: "ClientJoinRateLimitReached: Too many joins per second", closeReason: "Too many joins per second"}

// checkJoinTopic checks a join's topic and returns the channel's name.
func checkJoinTopic(topic string, maxTopicBytes int) (string, *refusal) {
	name, ok := strings.CutPrefix(topic, topicPrefix)
	switch {
	case !ok:
		return "", joinRefusal("unmatched topic")
	case name == "":
		return "", joinRefusal("TopicNameRequired: You must provide a topic name")
	case maxTopicBytes > 0 && len(topic) > maxTopicBytes:
		return "", joinRefusal(fmt.Sprintf("TopicNameTooLong: The topic must be at most %d bytes", maxTopicBytes))
	}
	return name, nil
}

// decodeJoin decodes a join's payload.
func decodeJoin(payload []byte) (phx.JoinPayload, *refusal) {
	p, err := phx.DecodeJoin(payload)
	if err != nil {
		return p, joinRefusal("Unknown Error on Channel: join payload must be a JSON object")
	}
	return p, nil
}

// planJoin decides a join from its payload and its token's verification
// (cl, or aerr) on a node that runs open or not. A private channel on a
// node with a secret must then be allowed to read (decideJoinRead):
// broadcast, and presence when the join enables it.
func planJoin(topic, name string, p *phx.JoinPayload, token string, cl *claims, aerr *authError, open bool) (joinPlan, *refusal) {
	if aerr != nil {
		return joinPlan{}, joinRefusal(aerr.joinReason())
	}
	private := bool(p.Config.Private)
	plan := joinPlan{topic: topic, name: name, key: topicKey{name: topic, private: private}, config: p.Config,
		claims: cl, token: token, grants: allowAll}
	if private && !open {
		plan.reads = ExtBroadcast
		if p.Config.Presence.Enabled {
			plan.reads |= ExtPresence
		}
		plan.grants = unasked
	}
	var r *refusal
	if plan.replay, r = decideReplay(p.Config.Broadcast.Replay, private); r != nil {
		return joinPlan{}, r
	}
	return plan, nil
}

func unauthorizedText(name string) string {
	return "You do not have permissions to read from this Channel topic: " + name
}

// decideJoinRead decides a private join from the policy's answer to
// plan.reads: it joins when broadcast or presence may be read.
func decideJoinRead(plan *joinPlan, allowed Extensions, err error) (grants, *refusal) {
	if err != nil {
		r := policyFailure(err)
		if r.text == "" {
			r.text = "Unauthorized: " + unauthorizedText(plan.name)
		}
		r.action, r.metric = replyError, "join_refused"
		return unasked, r
	}
	g := unasked.withReads(plan.reads, allowed, nil)
	if g.read == 0 {
		return g, joinRefusal("Unauthorized: " + unauthorizedText(plan.name))
	}
	return g, nil
}

// policyFailure is how a policy error is told: a database that could not
// be asked, or a missing partition, with Supabase's join texts; any other
// error (a policy's SQL failing) with no text, for the caller's
// "unauthorized", logged as Supabase logs it.
func policyFailure(err error) *refusal {
	switch {
	case errors.Is(err, ErrPolicyUnavailable):
		return &refusal{text: "UnableToConnectToProject: Realtime was unable to connect to the project database",
			logCode: "UnableToConnectToProject", cause: err}
	case errors.Is(err, ErrMissingPartition):
		return &refusal{text: "MissingPartition: Realtime was unable to find the expected messages partition",
			logCode: "MissingPartition", cause: err}
	}
	return &refusal{logCode: "RlsPolicyError", cause: err}
}

// channelRoom decides whether a connection with joined channels may join
// one more.
func channelRoom(joined, max int) *refusal {
	if max > 0 && joined >= max {
		return joinRefusal("ChannelRateLimitReached: Too many channels")
	}
	return nil
}

// refreshReads is what a new access_token re-asks of a private channel:
// what was asked before, and presence once it is on.
func refreshReads(g grants, presenceEnabled bool) Extensions {
	asked := g.readAsked | ExtBroadcast
	if presenceEnabled {
		asked |= ExtPresence
	}
	return asked
}

// decideRefreshRead decides a private channel's new access_token from the
// policy's answer to asked: a read allowed before and denied now closes
// the channel, as does no read at all; otherwise the channel keeps the new
// reads and its writes are asked again at the next push.
func decideRefreshRead(name string, prev grants, asked, allowed Extensions, err error) (grants, *refusal) {
	if err != nil {
		r := policyFailure(err)
		if r.logCode == "RlsPolicyError" {
			r.text = unauthorizedText(name)
		} else {
			r.text = "Realtime was unable to connect to the project database"
		}
		r.action, r.metric = closeChannel, "token_refresh"
		return prev, r
	}
	g := unasked.withReads(asked, allowed, nil)
	if prev.read&asked&^g.read != 0 || g.read == 0 {
		return prev, &refusal{action: closeChannel, metric: "read_revoked",
			text: "You no longer have permission to read from this Channel topic: " + name}
	}
	return g, nil
}

// decideSend decides a broadcast on a channel whose write check answered
// (err, when it failed): a broadcast the channel may not write is dropped
// without a word, as Supabase drops it.
func decideSend(g grants, err error) *refusal {
	if err != nil {
		r := policyFailure(err)
		r.action, r.metric, r.text = dropSilently, "write_denied", ""
		return r
	}
	if !g.canWrite(ExtBroadcast) {
		return &refusal{action: dropSilently, metric: "write_denied"}
	}
	return nil
}

// decideTrack decides a presence track likewise: refused with an error
// reply (and {}), the channel stays.
func decideTrack(g grants, err error) *refusal {
	if err != nil {
		r := policyFailure(err)
		r.action, r.metric, r.text = replyError, "write_denied", ""
		return r
	}
	if !g.canWrite(ExtPresence) {
		return &refusal{action: replyError, metric: "write_denied"}
	}
	return nil
}

// decideRESTWrite decides a private REST broadcast from the policy's
// answer for its topic, as Supabase's two endpoints do: the single one
// answers 403 (or 422 when the policy failed), a batch drops the topic's
// messages and is accepted.
func decideRESTWrite(allowed Extensions, err error, single bool) *refusal {
	if err == nil && allowed.Has(ExtBroadcast) {
		return nil
	}
	var r *refusal
	if err != nil {
		r = policyFailure(err)
	} else {
		r = &refusal{}
	}
	r.metric = "write_denied"
	if !single {
		r.action, r.text = dropSilently, ""
		return r
	}
	r.action, r.status, r.text = answerHTTP, http.StatusUnprocessableEntity, restPolicyText(err)
	if err == nil {
		r.status, r.text = http.StatusForbidden, "Unauthorized"
	}
	return r
}

// restPolicyText is Supabase's REST text for a failed policy.
func restPolicyText(err error) string {
	switch {
	case errors.Is(err, ErrPolicyUnavailable):
		return "Tenant database unavailable"
	case errors.Is(err, ErrMissingPartition):
		return "Missing messages partition"
	}
	return "RLS policy error"
}
