package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/edge/outq"
	"github.com/meshcast/meshcast/wal"
)

// ChangeStream is what the edge needs of the Postgres changes pipeline
// (wal.Service provides it): subscription IDs, registration with the
// database's owner, and removal.
//
// Head and Recover serve recovery (issue 18 §4): Head is a position such
// that every change after it that this node's subscriptions match is still
// to reach DeliverChange (it moves forward before DeliverChange is called
// with a change, so a channel attached under changeSubs.mu after reading
// it misses nothing after it, and may get the change at it once). Recover
// returns the changes after `after` that subs match and may see, in commit
// order, complete through RecoverResult.Through (at least Head as it was
// when called); its *wal.RecoveryError says why it cannot.
type ChangeStream interface {
	NewID() uint64
	Subscribe(ctx context.Context, subs []*wal.Subscription) error
	Unsubscribe(ids []uint64)
	Head() wal.Pos
	Recover(ctx context.Context, subs []*wal.Subscription, after wal.Pos) (wal.RecoverResult, error)
}

// ChangeValidator checks a binding when a channel joins, and again when
// its token changes, as Supabase does when it inserts a subscription
// (wal.Authorizer is one): the tables exist in the publication, the
// filter's columns exist and its values cast to their types, and the role
// may read what it asks for. Check returns the subscription to register,
// or an error whose text is what Supabase tells the client. ForgetRole
// drops what was learnt of a role's privileges, so that the next Check of
// it sees them as they are now. Recheck sets Err on the subscriptions
// whose role may no longer read what they bound (after a REVOKE, or their
// table left the publication), with the text Check would give.
type ChangeValidator interface {
	Check(ctx context.Context, b wal.Binding, role, claims string) (*wal.Subscription, error)
	ForgetRole(role string)
	Recheck(ctx context.Context, rs []wal.Recheck)
}

// binding is one postgres_changes binding of a channel, as the client sent
// it.
type binding struct {
	raw json.RawMessage // echoed in the join reply, plus its id
	// id is the binding's id in the join reply, which the client's
	// listeners know it by: the ID of the subscription it first shared,
	// kept when a token refresh moves it to another one.
	id     uint64
	sub    *wal.Subscription
	shared *sharedSub // the subscription it gets changes from; guarded by changeSubs.mu once joined
}

// sharedSub is one subscription registered with the database's owner,
// shared by every channel of this node with the same binding and claims:
// the owner matches it once per change, and the node fans the change out
// to its channels.
type sharedSub struct {
	key      string
	raw      json.RawMessage // the binding it was made of, for RecheckChanges
	sub      *wal.Subscription
	shape    string // shapeKey of sub.Columns
	refs     int
	channels map[*channel]struct{}
	done     chan struct{} // closed once the owner answered (or gave up)
	err      error         // set before done closes
}

// changeSubs indexes this node's shared subscriptions.
type changeSubs struct {
	mu    sync.Mutex
	byKey map[string]*sharedSub
	byID  map[uint64]*sharedSub
	peak  int // the most subscriptions since the maps were made

	m seamMetrics // set by SetChanges
}

func newChangeSubs() *changeSubs {
	return &changeSubs{byKey: map[string]*sharedSub{}, byID: map[uint64]*sharedSub{}}
}

// SetChanges connects the server to the Postgres changes pipeline (before
// Serve); v, if set, checks bindings at join.
func (s *Server) SetChanges(cs ChangeStream, v ChangeValidator) {
	s.changes, s.validator = cs, v
	s.changeSubs.m = newSeamMetrics(s.metrics.set)
}

// parseBinding reads one postgres_changes binding: event, schema, table,
// filter, and select as a comma list or an array of columns.
func parseBinding(raw json.RawMessage) (wal.Binding, error) {
	var b struct {
		Event  json.RawMessage `json:"event"`
		Schema string          `json:"schema"`
		Table  string          `json:"table"`
		Filter string          `json:"filter"`
		Select json.RawMessage `json:"select"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		//lint:ignore ST1005 the client is sent Supabase's text
		return wal.Binding{}, errors.New("Unable to subscribe to changes with given parameters: a binding must be an object of strings")
	}
	out := wal.Binding{Schema: b.Schema, Table: b.Table, Filter: b.Filter}
	json.Unmarshal(b.Event, &out.Event) // not a string: every event
	if len(b.Select) > 0 && string(b.Select) != "null" {
		var list string
		switch {
		case json.Unmarshal(b.Select, &out.Select) == nil:
		case json.Unmarshal(b.Select, &list) == nil:
			for _, c := range strings.Split(list, ",") {
				if c = strings.TrimSpace(c); c != "" && c != "*" {
					out.Select = append(out.Select, c)
				}
			}
		default:
			//lint:ignore ST1005 the client is sent Supabase's text
			return wal.Binding{}, errors.New("Unable to subscribe to changes with given parameters: select must be a list of columns")
		}
	}
	return out, nil
}

// subscriptionOf makes the subscription of a binding without asking the
// database (no validator): the owner's matcher compiles it against the
// table, and a binding that does not fit matches nothing.
func subscriptionOf(b wal.Binding, role, claims string) (*wal.Subscription, error) {
	sub := &wal.Subscription{Schema: b.Schema, Table: b.Table, Event: wal.ParseEvent(b.Event), Columns: b.Select, Role: role, Claims: claims}
	if sub.Schema == "" {
		sub.Schema = "public"
	}
	fs, err := wal.ParseFilter(b.Filter)
	if err != nil {
		return nil, err
	}
	sub.Filters = fs
	return sub, nil
}

// subKey identifies a subscription for sharing: same binding, same claims.
func subKey(sub *wal.Subscription) string {
	var b strings.Builder
	b.WriteString(sub.Schema)
	b.WriteByte(0)
	b.WriteString(sub.Table)
	b.WriteByte(0)
	b.WriteString(sub.Event.String())
	for _, f := range sub.Filters {
		b.WriteByte(0)
		b.WriteString(f.Column)
		b.WriteByte(byte(f.Op))
		if f.Negate {
			b.WriteByte('!')
		}
		b.WriteString(f.Value)
	}
	b.WriteByte(1)
	b.WriteString(strings.Join(sub.Columns, ","))
	b.WriteByte(1)
	b.WriteString(sub.Role)
	b.WriteByte(1)
	b.WriteString(sub.Claims)
	return b.String()
}

// joinChanges sets up a joining channel's bindings; the connection holds
// held subscribed bindings in its other channels. It returns the bindings
// and the system message that follows the join reply ("Subscribed to
// PostgreSQL", or the error). It waits (bounded) for the owner to hold the
// subscriptions, so that a change committed after the join reply reaches
// the client; the caller must not hold c.mu.
func (s *Server) joinChanges(ch *channel, raws []json.RawMessage, cl *claims, held int) ([]binding, []byte) {
	bindings := make([]binding, len(raws))
	var role, claims string
	if cl != nil && !s.auth.open() {
		role, claims = cl.Role, string(cl.Raw)
	}
	for i, raw := range raws {
		bindings[i].raw = raw
	}
	var problem error
	switch max, perConn := s.cfg.MaxBindingsPerJoin, s.cfg.MaxBindingsPerConn; {
	case s.changes == nil:
		//lint:ignore ST1005 the client is sent Supabase's text
		problem = errors.New("Unable to subscribe to changes with given parameters: this node has no database (start it with --database-url)")
	case max > 0 && len(raws) > max:
		problem = fmt.Errorf("PostgresChangesLimitReached: Too many postgres_changes bindings in one join (%d, at most %d)", len(raws), max)
	case perConn > 0 && held+len(raws) > perConn:
		problem = fmt.Errorf("PostgresChangesLimitReached: Too many postgres_changes bindings on this connection (%d with this join, at most %d)", held+len(raws), perConn)
	default:
		problem = s.checkBindings(bindings, role, claims)
	}
	if problem != nil {
		s.metrics.errorReason("changes_refused")
		return bindings, systemPayload("postgres_changes", "error", problem.Error(), ch.name)
	}
	if err := s.shareBindings(bindings); err != nil {
		s.metrics.errorReason("changes_not_confirmed")
		return bindings, systemPayload("postgres_changes", "error", "Unable to subscribe to changes: "+err.Error(), ch.name)
	}
	return bindings, systemPayload("postgres_changes", "ok", "Subscribed to PostgreSQL", ch.name)
}

// checkBindings makes the subscriptions of bindings for role and claims,
// checked by the validator if there is one; on error none is set.
func (s *Server) checkBindings(bindings []binding, role, claims string) error {
	limits := wal.Limits{FilterBytes: s.cfg.MaxFilterBytes, PatternBytes: s.cfg.MaxPatternBytes, RegexInsts: s.cfg.MaxRegexInsts}
	for i := range bindings {
		b, err := parseBinding(bindings[i].raw)
		var sub *wal.Subscription
		if err == nil {
			err = limits.Check(b)
		}
		if err == nil {
			if s.validator != nil {
				sub, err = s.validator.Check(context.Background(), b, role, claims)
			} else {
				sub, err = subscriptionOf(b, role, claims)
			}
		}
		if err != nil {
			for i := range bindings {
				bindings[i].sub = nil
			}
			return err
		}
		bindings[i].sub = sub
	}
	return nil
}

// shareBindings gives each binding the shared subscription of its key,
// registering with the owner those that are new, and waits (bounded)
// until the owner holds all of them. A binding without an id takes its
// subscription's. The caller must not hold a conn's mu.
func (s *Server) shareBindings(bindings []binding) error {
	cs := s.changeSubs
	var fresh []*wal.Subscription
	var mine []*sharedSub
	cs.mu.Lock()
	for i := range bindings {
		b := &bindings[i]
		key := subKey(b.sub)
		sh := cs.byKey[key]
		if sh == nil {
			b.sub.ID = s.changes.NewID()
			sh = &sharedSub{key: key, raw: b.raw, sub: b.sub, shape: shapeKey(b.sub.Columns), channels: map[*channel]struct{}{}, done: make(chan struct{})}
			cs.byKey[key], cs.byID[b.sub.ID] = sh, sh
			cs.peak = max(cs.peak, len(cs.byID))
			fresh = append(fresh, b.sub)
			mine = append(mine, sh)
		}
		sh.refs++
		b.shared = sh
		if b.id == 0 {
			b.id = sh.sub.ID
		}
	}
	cs.mu.Unlock()
	if len(fresh) > 0 {
		err := s.changes.Subscribe(context.Background(), fresh)
		for _, sh := range mine {
			sh.err = err
			close(sh.done)
		}
	}
	var err error
	for _, b := range bindings {
		select {
		case <-b.shared.done:
			if b.shared.err != nil {
				err = b.shared.err
			}
		case <-s.stopping:
			err = errors.New("server shutting down")
		}
	}
	return err
}

// releaseLocked drops one reference to each binding's subscription and
// returns the IDs of those no channel uses any more, for Unsubscribe.
// Called with changeSubs.mu held.
func (cs *changeSubs) releaseLocked(ch *channel, bindings []binding) []uint64 {
	var gone []uint64
	for _, b := range bindings {
		sh := b.shared
		if sh == nil {
			continue
		}
		delete(sh.channels, ch)
		if sh.refs--; sh.refs == 0 {
			delete(cs.byKey, sh.key)
			delete(cs.byID, sh.sub.ID)
			gone = append(gone, sh.sub.ID)
		}
	}
	if cs.peak >= 64 && len(cs.byID) < cs.peak/4 {
		// Go's maps keep what they grew to (maps.Clone too): copy them
		// into small ones.
		byKey, byID := make(map[string]*sharedSub, len(cs.byKey)), make(map[uint64]*sharedSub, len(cs.byID))
		for k, sh := range cs.byKey {
			byKey[k], byID[sh.sub.ID] = sh, sh
		}
		cs.byKey, cs.byID, cs.peak = byKey, byID, len(byID)
	}
	return gone
}

// heldBindings is the number of subscribed bindings of c's channels, for
// MaxBindingsPerConn. Called with c.mu held.
func (c *conn) heldBindings() int {
	n := 0
	for _, ch := range c.channels {
		for _, b := range ch.bindings {
			if b.sub != nil {
				n++
			}
		}
	}
	return n
}

// leaveChanges drops a leaving channel from its subscriptions, and the
// subscriptions no channel uses any more from the owner.
func (s *Server) leaveChanges(ch *channel) {
	if len(ch.bindings) == 0 {
		return
	}
	cs := s.changeSubs
	cs.mu.Lock()
	gone := cs.releaseLocked(ch, ch.bindings)
	cs.mu.Unlock()
	if len(gone) > 0 && s.changes != nil {
		s.changes.Unsubscribe(gone)
	}
}

// changeMessage is a postgres_changes payload: {"ids":[…],"data":…} and
// tail (changeTail).
func changeMessage(ids []uint64, data, tail []byte) []byte {
	p := make([]byte, 0, len(data)+len(tail)+16+8*len(ids))
	p = append(p, `{"ids":[`...)
	p = append(p, idList(ids)...)
	p = append(p, `],"data":`...)
	p = append(p, data...)
	return append(p, tail...)
}

// changeTail ends a change's payloads: its position, when recovery is on
// (`,"pos":"0/16B3748:3"}`), else the closing brace.
func (s *Server) changeTail(c *wal.Change) []byte {
	if s.rec == nil {
		return []byte{'}'}
	}
	t := append([]byte(`,"pos":"`), c.Pos().String()...)
	return append(t, `"}`...)
}

// joinReplyChanges is the join reply's response: the bindings echoed in
// order, each with its id (0 for a binding that could not subscribe).
func joinReplyChanges(bindings []binding) []byte {
	p := []byte(`{"postgres_changes":[`)
	for i, b := range bindings {
		if i > 0 {
			p = append(p, ',')
		}
		p = appendWithID(p, b.raw, b.id)
	}
	return append(p, "]}"...)
}

// appendWithID appends the JSON object obj with an "id" member added.
func appendWithID(dst []byte, obj json.RawMessage, id uint64) []byte {
	obj = compactJSON(bytes.TrimSpace(obj))
	if len(obj) < 2 || obj[0] != '{' {
		obj = []byte("{}")
	}
	dst = append(dst, obj[:len(obj)-1]...)
	if len(obj) > 2 {
		dst = append(dst, ',')
	}
	dst = append(dst, `"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, '}')
}

// DeliverChange hands a change from the database's owner to this node's
// channels whose subscriptions are ids, as Supabase's postgres_changes
// message: {"ids":[…],"data":{…}}. Each binding gets its own columns (its
// select, and what its role may read): a channel whose matching bindings
// differ in columns gets one message per column set, each with the ids of
// its bindings. The data object is encoded once per column set, and one
// frame is built per group of channels that get the same ids and columns
// on the same topic, so the common case — many subscribers of one binding
// — is one frame shared by all of them.
//
// Changes are paced, never dropped for a subscriber that reads: a
// connection whose queue holds its share of changes makes DeliverChange
// wait until its writer takes them (the wal Service then acknowledges
// later, and the owner stops reading the slot). Only a connection whose
// writer took nothing for the stall time (Config.WriteTimeout) stopped
// reading: it is closed as a slow consumer. DeliverChange returns once
// every connection has the change or is gone, so it blocks for at most
// about that long.
func (s *Server) DeliverChange(c *wal.Change, ids []uint64) {
	datas := map[string][]byte{}
	var waits []changeWait
	n := 0
	tail := s.changeTail(c) // the same for every group
	for _, g := range s.changeGroups(c, ids) {
		ck := shapeKey(g.cols)
		data := datas[ck]
		if data == nil {
			data = c.AppendData(nil, g.cols)
			datas[ck] = data
		}
		payload := changeMessage(g.ids, data, tail)
		var frames [numFormats][]byte
		for _, ch := range g.chans {
			ff := ch.conn.format
			if frames[ff] == nil {
				frames[ff] = textFrame(ff, "", "", g.topic, "postgres_changes", payload)
			}
			switch ch.conn.pushChange(frames[ff]) {
			case outq.Queued, outq.Start:
				n++
			case outq.Full:
				waits = append(waits, changeWait{ch, frames[ff]})
			}
		}
	}
	// The others have the change already; each full connection gets it
	// before the next change, so its order holds.
	for _, w := range waits {
		if w.ch.conn.awaitChange(w.ch, w.frame) {
			n++
		}
	}
	s.metrics.messagesOut.Add(n)
	s.metrics.changesOut.Add(n)
}

// changeGroup is the channels that get one change with the same ids on
// the same topic, and the columns they see.
type changeGroup struct {
	topic string
	ids   []uint64
	cols  []string
	chans []*channel
}

// changeGroups groups the channels whose subscriptions are ids. It runs
// once per change and visits every subscribed channel of the node, so it
// builds no string and no slice per channel in the common case, a channel
// with one matching binding (meshbench wal -pprof: the per-channel maps,
// keys and slices were a fifth of a node's CPU at 200 000 deliveries/s).
//
// A channel with a seam (joining, or just joined) gets only the changes
// after it, and holds them while its join is answered.
func (s *Server) changeGroups(c *wal.Change, ids []uint64) []*changeGroup {
	cs := s.changeSubs
	g := groupSet{groups: map[groupKey]*changeGroup{}}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(ids) == 1 {
		if sh := cs.byID[ids[0]]; sh != nil {
			for ch := range sh.channels {
				if ch.pgSeam == nil || cs.pass(ch, c, ids, s.cfg.queueLimit()) {
					g.add(ch, ids)
				}
			}
		}
		return g.order
	}
	perChannel := map[*channel][]uint64{}
	for _, id := range ids {
		sh := cs.byID[id]
		if sh == nil {
			continue
		}
		for ch := range sh.channels {
			perChannel[ch] = append(perChannel[ch], id)
		}
	}
	for ch, chIDs := range perChannel {
		if ch.pgSeam == nil || cs.pass(ch, c, chIDs, s.cfg.queueLimit()) {
			g.add(ch, chIDs)
		}
	}
	return g.order
}

// groupKey identifies a change group: topic, column set, and the ids of
// its bindings (the first, and the others as a list).
type groupKey struct {
	topic, shape string
	first        uint64
	rest         string
}

// groupSet is the groups of one change, in the order they were made.
type groupSet struct {
	groups  map[groupKey]*changeGroup
	order   []*changeGroup
	lastKey groupKey // the last group joined, which most channels share
	last    *changeGroup
}

// add puts ch in the group of each column set its bindings subscribed to
// chIDs get: one message per shape, each with the ids of its bindings, in
// the channel's binding order.
func (g *groupSet) add(ch *channel, chIDs []uint64) {
	var one *binding
	matching := 0
	for i := range ch.bindings {
		if b := &ch.bindings[i]; b.shared != nil && slices.Contains(chIDs, b.shared.sub.ID) {
			one = b
			matching++
		}
	}
	if matching == 1 {
		g.join(groupKey{topic: ch.key.name, shape: one.shared.shape, first: one.id}, ch, func() ([]uint64, []string) {
			return []uint64{one.id}, one.shared.sub.Columns
		})
		return
	}
	var shapes []shape
	for _, b := range ch.bindings {
		if b.shared == nil || !slices.Contains(chIDs, b.shared.sub.ID) {
			continue
		}
		k := b.shared.shape
		i := slices.IndexFunc(shapes, func(s shape) bool { return s.key == k })
		if i < 0 {
			i = len(shapes)
			shapes = append(shapes, shape{key: k, cols: b.shared.sub.Columns})
		}
		shapes[i].ids = append(shapes[i].ids, b.id)
	}
	for _, sh := range shapes {
		g.join(groupKey{topic: ch.key.name, shape: sh.key, first: sh.ids[0], rest: idList(sh.ids[1:])}, ch, func() ([]uint64, []string) {
			return sh.ids, sh.cols
		})
	}
}

// join adds ch to the group of k, made with newGroup's ids and columns if new.
func (g *groupSet) join(k groupKey, ch *channel, newGroup func() ([]uint64, []string)) {
	grp := g.last
	if grp == nil || k != g.lastKey {
		grp = g.groups[k]
		g.last, g.lastKey = grp, k
	}
	if grp == nil {
		grp = &changeGroup{topic: k.topic}
		grp.ids, grp.cols = newGroup()
		g.groups[k], g.last = grp, grp
		g.order = append(g.order, grp)
	}
	grp.chans = append(grp.chans, ch)
}

// changeWait is a change frame a channel's connection had no room for
// yet.
type changeWait struct {
	ch    *channel
	frame []byte
}

// receivesChanges reports whether ch still gets changes: it may have left
// while its delivery waited.
func (s *Server) receivesChanges(ch *channel) bool {
	cs := s.changeSubs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, b := range ch.bindings {
		if b.shared != nil {
			if _, ok := b.shared.channels[ch]; ok {
				return true
			}
		}
	}
	return false
}

// pushChange queues a change frame without waiting: Full when the
// connection's queue holds its share of changes (see awaitChange).
func (c *conn) pushChange(f []byte) outq.Result {
	r, start := c.q.PushChange(f)
	if start {
		c.startWriter()
	}
	if r == outq.Stalled {
		c.stalled()
	}
	return r
}

// awaitChange waits until the connection's queue has room for the change
// frame f of channel ch and queues it. It gives up when the connection
// closes, ch leaves, the server stops, or the connection's writer took
// nothing for the stall time (the connection is then closed as a slow
// consumer), and reports whether f was queued.
func (c *conn) awaitChange(ch *channel, f []byte) bool {
	m := c.srv.metrics
	m.changeWaits.Inc()
	start := time.Now()
	defer func() { m.changeWaitSeconds.Add(time.Since(start).Seconds()) }()
	for {
		room, stallIn := c.q.Room(len(f))
		var stall *time.Timer
		var stallC <-chan time.Time
		if stallIn > 0 {
			stall = time.NewTimer(time.Duration(stallIn))
			stallC = stall.C
		}
		select {
		case <-room:
		case <-stallC:
		case <-c.srv.stopping:
		}
		if stall != nil {
			stall.Stop()
		}
		if !c.srv.receivesChanges(ch) {
			return false
		}
		switch c.pushChange(f) {
		case outq.Queued, outq.Start:
			return true
		case outq.Full:
			select {
			case <-c.srv.stopping:
				return false
			default:
			}
		default:
			return false
		}
	}
}

// stalled cuts a connection whose writer has been stuck in one write for
// the stall time while changes waited: it stopped reading. Its queue is
// closing already; the write in progress may otherwise block until the
// write timeout, or forever without one.
func (c *conn) stalled() {
	m := c.srv.metrics
	m.slowClose.Inc()
	m.errorReason("slow_consumer")
	c.srv.logLimited.Warn("closing a subscriber that stopped reading its changes", "remote", c.remote,
		"stalled_for", c.srv.cfg.changeStall())
	c.tr.kill()
}

// shape is the columns some of a channel's bindings get, and their ids.
type shape struct {
	key  string
	cols []string
	ids  []uint64
}

// shapeKey identifies a column set; nil (every column) is not the empty
// list.
func shapeKey(cols []string) string {
	if cols == nil {
		return "*"
	}
	return "=" + strings.Join(cols, ",")
}

func idList(ids []uint64) string {
	var b []byte
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, id, 10)
	}
	return string(b)
}

// rekeyChanges follows a token refresh with the channel's bindings. Their
// subscriptions are keyed by role and claims, which the owner filters
// row-level security by, so new claims move the channel to subscriptions
// of the new claims: checked again (privileges as they are now),
// registered with the owner, and confirmed before the channel leaves the
// old ones, which go when no channel uses them. The client keeps the
// binding ids of its join reply. A binding the new role may not read
// closes the channel with Supabase's text. It reports whether the channel
// is still joined. Called with c.mu held, which it lets go while the
// owner confirms, as a join does.
func (c *conn) rekeyChanges(ch *channel, cl *claims) bool {
	s := c.srv
	if s.changes == nil || s.auth.open() {
		return true
	}
	role, claims := cl.Role, string(cl.Raw)
	stale := false
	for _, b := range ch.bindings { // only this goroutine writes ch.bindings
		if b.shared != nil && (b.shared.sub.Role != role || b.shared.sub.Claims != claims) {
			stale = true
		}
	}
	if !stale {
		return true
	}
	next := make([]binding, len(ch.bindings))
	for i, b := range ch.bindings {
		next[i] = binding{raw: b.raw, id: b.id}
	}
	if s.validator != nil {
		s.validator.ForgetRole(role)
	}
	c.unlockToWait()
	refused := s.checkBindings(next, role, claims)
	var unconfirmed error
	if refused == nil {
		unconfirmed = s.shareBindings(next)
	}
	c.mu.Lock()
	joined := !c.gone && c.channels[ch.key.name] == ch
	cs := s.changeSubs
	var gone []uint64
	if refused == nil {
		cs.mu.Lock()
		if joined {
			// Release first: a subscription both sets share keeps its
			// reference from next.
			gone = cs.releaseLocked(ch, ch.bindings)
			for _, b := range next {
				b.shared.channels[ch] = struct{}{}
			}
			if sm := ch.pgSeam; sm != nil && sm.holding {
				sm.remap(ch.bindings, next) // its join's changes are still being sent
			}
			ch.bindings = next
		} else {
			gone = cs.releaseLocked(ch, next)
		}
		cs.mu.Unlock()
	}
	if len(gone) > 0 {
		s.changes.Unsubscribe(gone)
	}
	switch {
	case !joined:
		return false
	case refused != nil:
		s.metrics.errorReason("token_refresh")
		c.closeChannel(ch, refused.Error())
		return false
	case unconfirmed != nil:
		s.metrics.errorReason("changes_not_confirmed")
		c.send(ch.joinRef, "", ch.key.name, "system",
			systemPayload("postgres_changes", "error", "Unable to subscribe to changes: "+unconfirmed.Error(), ch.name))
	default:
		// As Supabase does after resubscribing with a new token: changes
		// committed from now on are matched and filtered with the new
		// claims.
		c.send(ch.joinRef, "", ch.key.name, "system", systemPayload("postgres_changes", "ok", "Subscribed to PostgreSQL", ch.name))
	}
	return true
}

// RecheckChanges checks this node's postgres_changes subscriptions again
// against the database as it is now, and closes, with a system error
// carrying the join-time text, the channels whose role lost access to a
// table they bound (a REVOKE, the table left the publication), as a token
// refresh that loses access does. The database's owner has already stopped
// sending them what was committed after the change (wal.Authorizer's
// Authorize, in WAL order); this tells the client why, and a join again is
// checked anew. The validator's catalog watch calls it after a change.
func (s *Server) RecheckChanges(ctx context.Context) {
	if s.validator == nil {
		return
	}
	cs := s.changeSubs
	cs.mu.Lock()
	var shs []*sharedSub
	var rs []wal.Recheck
	for _, sh := range cs.byID {
		b, err := parseBinding(sh.raw)
		if err != nil {
			continue
		}
		shs = append(shs, sh)
		rs = append(rs, wal.Recheck{Binding: b, Sub: sh.sub})
	}
	cs.mu.Unlock()
	s.validator.Recheck(ctx, rs)
	type closing struct {
		ch  *channel
		sh  *sharedSub
		msg string
	}
	var closes []closing
	cs.mu.Lock()
	for i, r := range rs {
		if r.Err != nil {
			for ch := range shs[i].channels {
				closes = append(closes, closing{ch, shs[i], r.Err.Error()})
			}
		}
	}
	cs.mu.Unlock()
	for _, x := range closes {
		c := x.ch.conn
		c.mu.Lock()
		if !c.gone && c.channels[x.ch.key.name] == x.ch && slices.ContainsFunc(x.ch.bindings, func(b binding) bool { return b.shared == x.sh }) {
			s.metrics.errorReason("access_revoked")
			c.closeChannel(x.ch, x.msg)
		}
		c.mu.Unlock()
	}
}
