package edge

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// Table tests of the join and private-channel rules (rules.go): pure
// decisions, checked without a connection, a server or a database.

var errPolicySQL = errors.New(`ERROR: relation "rooms_members" does not exist (SQLSTATE 42P01)`)

// sameRefusal compares the parts of a refusal a client or an operator sees.
func sameRefusal(got, want *refusal) bool {
	if got == nil || want == nil {
		return got == want
	}
	return got.action == want.action && got.metric == want.metric && got.text == want.text &&
		got.closeReason == want.closeReason && got.status == want.status && got.logCode == want.logCode
}

func showRefusal(r *refusal) string {
	if r == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{action %d metric %q text %q close %q status %d log %q}", r.action, r.metric, r.text, r.closeReason, r.status, r.logCode)
}

func TestCheckJoinTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		max   int
		name  string
		want  *refusal
	}{
		{"realtime:room1", 255, "room1", nil},
		{"realtime:room1", 0, "room1", nil},
		{"room1", 255, "", joinRefusal("unmatched topic")},
		{"realtime:", 255, "", joinRefusal("TopicNameRequired: You must provide a topic name")},
		{"realtime:abcdef", 14, "", joinRefusal("TopicNameTooLong: The topic must be at most 14 bytes")},
		{"realtime:abcde", 14, "abcde", nil},
	} {
		name, r := checkJoinTopic(tc.topic, tc.max)
		if name != tc.name || !sameRefusal(r, tc.want) {
			t.Errorf("checkJoinTopic(%q, %d) = %q, %s; want %q, %s", tc.topic, tc.max, name, showRefusal(r), tc.name, showRefusal(tc.want))
		}
	}
}

func TestDecodeJoinRefusesANonObject(t *testing.T) {
	for payload, ok := range map[string]bool{`{}`: true, `null`: true, ``: true, `[1]`: false, `"x"`: false} {
		_, r := decodeJoin([]byte(payload))
		want := (*refusal)(nil)
		if !ok {
			want = joinRefusal("Unknown Error on Channel: join payload must be a JSON object")
		}
		if !sameRefusal(r, want) {
			t.Errorf("decodeJoin(%q) = %s, want %s", payload, showRefusal(r), showRefusal(want))
		}
	}
}

func TestPlanJoin(t *testing.T) {
	user := &claims{Role: "authenticated", Sub: "u1"}
	expired := &authError{"InvalidJWTToken", "Token has expired 5 seconds ago"}
	for _, tc := range []struct {
		name    string
		config  string
		cl      *claims
		aerr    *authError
		open    bool
		refused *refusal
		private bool
		reads   Extensions
		grants  grants
	}{
		{"public", `{}`, user, nil, false, nil, false, 0, allowAll},
		{"public, open", `{}`, openClaims, nil, true, nil, false, 0, allowAll},
		{"a bad token", `{"private":true}`, nil, expired, false, joinRefusal("InvalidJWTToken: Token has expired 5 seconds ago"), false, 0, unasked},
		{"private, open: nothing is asked", `{"private":true}`, openClaims, nil, true, nil, true, 0, allowAll},
		{"private: broadcast is asked", `{"private":true}`, user, nil, false, nil, true, ExtBroadcast, unasked},
		{"private with presence: both", `{"private":true,"presence":{"enabled":true}}`, user, nil, false, nil, true, ExtBroadcast | ExtPresence, unasked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, r := decodeJoin([]byte(`{"config":` + tc.config + `}`))
			if r != nil {
				t.Fatal(showRefusal(r))
			}
			plan, r := planJoin("realtime:x", "x", &p, "tok", tc.cl, tc.aerr, tc.open)
			if !sameRefusal(r, tc.refused) {
				t.Fatalf("refusal %s, want %s", showRefusal(r), showRefusal(tc.refused))
			}
			if r != nil {
				return
			}
			want := topicKey{name: "realtime:x", private: tc.private}
			if plan.key != want || plan.name != "x" || plan.reads != tc.reads || plan.grants != tc.grants || plan.claims != tc.cl || plan.token != "tok" {
				t.Errorf("plan %+v, want key %+v, reads %v, grants %+v", plan, want, tc.reads, tc.grants)
			}
		})
	}
}

func TestDecideJoinRead(t *testing.T) {
	unauthorized := joinRefusal("Unauthorized: You do not have permissions to read from this Channel topic: room")
	both := ExtBroadcast | ExtPresence
	for _, tc := range []struct {
		name    string
		reads   Extensions
		allowed Extensions
		err     error
		want    *refusal
		read    Extensions
	}{
		{"broadcast read", ExtBroadcast, ExtBroadcast, nil, nil, ExtBroadcast},
		{"broadcast denied", ExtBroadcast, 0, nil, unauthorized, 0},
		{"both read", both, both, nil, nil, both},
		{"presence only is enough", both, ExtPresence, nil, nil, ExtPresence},
		{"broadcast only is enough", both, ExtBroadcast, nil, nil, ExtBroadcast},
		{"neither", both, 0, nil, unauthorized, 0},
		{"what was not asked is not granted", ExtBroadcast, both, nil, nil, ExtBroadcast},
		{"a policy error is unauthorized, logged", both, 0, errPolicySQL,
			&refusal{action: replyError, metric: "join_refused", text: unauthorized.text, logCode: "RlsPolicyError"}, 0},
		{"an unreachable database", both, 0, fmt.Errorf("dial: %w", ErrPolicyUnavailable),
			&refusal{action: replyError, metric: "join_refused", text: "UnableToConnectToProject: Realtime was unable to connect to the project database", logCode: "UnableToConnectToProject"}, 0},
		{"no partition for today", both, 0, ErrMissingPartition,
			&refusal{action: replyError, metric: "join_refused", text: "MissingPartition: Realtime was unable to find the expected messages partition", logCode: "MissingPartition"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := joinPlan{name: "room", reads: tc.reads}
			g, r := decideJoinRead(&plan, tc.allowed, tc.err)
			if !sameRefusal(r, tc.want) {
				t.Fatalf("refusal %s, want %s", showRefusal(r), showRefusal(tc.want))
			}
			if r == nil && (g.read != tc.read || g.readAsked != tc.reads || g.writeAsked != 0) {
				t.Errorf("grants %+v, want read %v of asked %v, writes unasked", g, tc.read, tc.reads)
			}
		})
	}
}

func TestChannelRoom(t *testing.T) {
	full := joinRefusal("ChannelRateLimitReached: Too many channels")
	for _, tc := range []struct {
		joined, max int
		want        *refusal
	}{{0, 1, nil}, {99, 100, nil}, {100, 100, full}, {101, 100, full}, {1000, 0, nil}} {
		if r := channelRoom(tc.joined, tc.max); !sameRefusal(r, tc.want) {
			t.Errorf("channelRoom(%d, %d) = %s, want %s", tc.joined, tc.max, showRefusal(r), showRefusal(tc.want))
		}
	}
}

func TestDecideRefreshRead(t *testing.T) {
	both := ExtBroadcast | ExtPresence
	revoked := &refusal{action: closeChannel, metric: "read_revoked", text: "You no longer have permission to read from this Channel topic: room"}
	joined := grants{checked: true, readAsked: both, read: both, writeAsked: both, write: ExtBroadcast}
	for _, tc := range []struct {
		name     string
		prev     grants
		presence bool
		allowed  Extensions
		err      error
		want     *refusal
		read     Extensions
	}{
		{"still allowed: the writes are asked again", joined, true, both, nil, nil, both},
		{"broadcast revoked, presence kept", joined, true, ExtPresence, nil, revoked, 0},
		{"everything revoked", joined, true, 0, nil, revoked, 0},
		{"a read that was denied stays denied", grants{checked: true, readAsked: both, read: ExtBroadcast}, true, ExtBroadcast, nil, nil, ExtBroadcast},
		{"a read that was denied is allowed now", grants{checked: true, readAsked: both, read: ExtBroadcast}, true, both, nil, nil, both},
		{"presence turned on since the join is asked too", grants{checked: true, readAsked: ExtBroadcast, read: ExtBroadcast}, true, both, nil, nil, both},
		{"a policy error closes, logged", joined, true, 0, errPolicySQL,
			&refusal{action: closeChannel, metric: "token_refresh", text: "You do not have permissions to read from this Channel topic: room", logCode: "RlsPolicyError"}, 0},
		{"an unreachable database closes", joined, true, 0, ErrPolicyUnavailable,
			&refusal{action: closeChannel, metric: "token_refresh", text: "Realtime was unable to connect to the project database", logCode: "UnableToConnectToProject"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked := refreshReads(tc.prev, tc.presence)
			g, r := decideRefreshRead("room", tc.prev, asked, tc.allowed, tc.err)
			if !sameRefusal(r, tc.want) {
				t.Fatalf("refusal %s, want %s", showRefusal(r), showRefusal(tc.want))
			}
			if r == nil && (g.read != tc.read || g.writeAsked != 0 || g.write != 0) {
				t.Errorf("grants %+v, want read %v and the writes unasked", g, tc.read)
			}
		})
	}
	if got := refreshReads(grants{checked: true, readAsked: ExtBroadcast}, false); got != ExtBroadcast {
		t.Errorf("refreshReads without presence = %v", got)
	}
}

// The write rules: the first send or track asks both writes once; a
// failed check is asked again; denied broadcasts are dropped silently,
// denied tracks answered with an error.
func TestWriteRules(t *testing.T) {
	both := ExtBroadcast | ExtPresence
	g := grants{checked: true, readAsked: ExtBroadcast, read: ExtBroadcast}
	if ask := g.writesToAsk(ExtBroadcast); ask != both {
		t.Fatalf("first send asks %v, want both", ask)
	}
	if ask := g.readsToAsk(ExtPresence); ask != ExtPresence {
		t.Fatalf("first track on a join without presence asks to read %v, want presence", ask)
	}
	failed := g.withWrites(both, both, errPolicySQL)
	if failed != g || failed.writesToAsk(ExtBroadcast) != both {
		t.Fatalf("a failed check decided something: %+v", failed)
	}
	if r := decideSend(failed, errPolicySQL); !sameRefusal(r, &refusal{action: dropSilently, metric: "write_denied", logCode: "RlsPolicyError"}) {
		t.Errorf("send after a policy error: %s", showRefusal(r))
	}
	if r := decideTrack(failed, ErrPolicyUnavailable); !sameRefusal(r, &refusal{action: replyError, metric: "write_denied", logCode: "UnableToConnectToProject"}) {
		t.Errorf("track after an unreachable database: %s", showRefusal(r))
	}
	bcastOnly := g.withWrites(both, ExtBroadcast, nil)
	if bcastOnly.writesToAsk(ExtBroadcast) != 0 || bcastOnly.writesToAsk(ExtPresence) != 0 {
		t.Errorf("a decided write is asked again: %+v", bcastOnly)
	}
	if r := decideSend(bcastOnly, nil); r != nil {
		t.Errorf("allowed send refused: %s", showRefusal(r))
	}
	if r := decideTrack(bcastOnly, nil); !sameRefusal(r, &refusal{action: replyError, metric: "write_denied"}) {
		t.Errorf("denied track: %s", showRefusal(r))
	}
	if r := decideSend(g.withWrites(both, ExtPresence, nil), nil); !sameRefusal(r, &refusal{action: dropSilently, metric: "write_denied"}) {
		t.Errorf("denied send: %s", showRefusal(r))
	}
	if r := decideSend(allowAll, nil); r != nil || allowAll.writesToAsk(ExtBroadcast) != 0 || allowAll.readsToAsk(ExtPresence) != 0 {
		t.Errorf("a public channel asks or refuses: %s", showRefusal(r))
	}
	if got := g.withReads(ExtPresence, ExtPresence, nil); got.read != both || got.readAsked != both {
		t.Errorf("presence read recorded as %+v", got)
	}
}

func TestDecideRESTWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed Extensions
		err     error
		single  bool
		want    *refusal
	}{
		{"allowed, single", ExtBroadcast, nil, true, nil},
		{"allowed, batch", ExtBroadcast | ExtPresence, nil, false, nil},
		{"denied, single: 403", 0, nil, true, &refusal{action: answerHTTP, metric: "write_denied", status: http.StatusForbidden, text: "Unauthorized"}},
		{"denied, batch: dropped", ExtPresence, nil, false, &refusal{action: dropSilently, metric: "write_denied"}},
		{"policy error, single: 422", 0, errPolicySQL, true, &refusal{action: answerHTTP, metric: "write_denied", status: 422, text: "RLS policy error", logCode: "RlsPolicyError"}},
		{"unreachable, single: 422", 0, ErrPolicyUnavailable, true, &refusal{action: answerHTTP, metric: "write_denied", status: 422, text: "Tenant database unavailable", logCode: "UnableToConnectToProject"}},
		{"no partition, single: 422", 0, ErrMissingPartition, true, &refusal{action: answerHTTP, metric: "write_denied", status: 422, text: "Missing messages partition", logCode: "MissingPartition"}},
		{"policy error, batch: dropped, logged", 0, errPolicySQL, false, &refusal{action: dropSilently, metric: "write_denied", logCode: "RlsPolicyError"}},
	} {
		if r := decideRESTWrite(tc.allowed, tc.err, tc.single); !sameRefusal(r, tc.want) {
			t.Errorf("%s: %s, want %s", tc.name, showRefusal(r), showRefusal(tc.want))
		}
	}
}

func TestClaimsRule(t *testing.T) {
	for role, want := range map[string]Extensions{"authenticated": allExtensions, "service_role": allExtensions, "anon": 0, "": 0} {
		id := identity(&claims{Role: role}, nil)
		r, _ := claimsRule{}.CanRead(t.Context(), id, "x", allExtensions)
		w, _ := claimsRule{}.CanWrite(t.Context(), id, "x", ExtBroadcast)
		if r != want || w != want&ExtBroadcast {
			t.Errorf("role %q: read %v write %v, want %v", role, r, w, want)
		}
	}
}

func TestHeadersJSON(t *testing.T) {
	h := http.Header{"X-Client-Info": {"a", "b"}, "Authorization": {"Bearer t"}, "X-Empty": {}}
	if got := string(headersJSON(h, "x-")); got != `{"x-client-info":"b"}` {
		t.Errorf("x- headers: %s", got)
	}
	if got := string(headersJSON(h, "")); got != `{"authorization":"Bearer t","x-client-info":"b"}` {
		t.Errorf("all headers: %s", got)
	}
	if got := headersJSON(http.Header{"Origin": {"o"}}, "x-"); got != nil {
		t.Errorf("no x- headers: %s", got)
	}
	if got := string(identity(nil, nil).Headers); got != "{}" {
		t.Errorf("an identity without headers has %s", got)
	}
}
