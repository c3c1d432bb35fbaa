package dbcast

import (
	"context"

	"github.com/meshcast/meshcast/wal"
)

// role marks the subscription through which a node receives the rows of
// realtime.messages. It is no role a JWT can join as: a join runs its
// checks as the JWT's role, and Postgres has no role of this name (nor
// may one be created with the colon unquoted), and the subscription has no
// claims, which a client's always has.
const role = "meshcast:dbcast"

// Subscription is the subscription a node registers (wal.Service.Subscribe)
// to receive every broadcast row inserted into realtime.messages, once per
// node. id is one of the node's subscription IDs (wal.Service.NewID).
func Subscription(id uint64) *wal.Subscription {
	return &wal.Subscription{ID: id, Schema: Schema, Table: Table, Event: wal.Insert, Role: role}
}

// isOurs reports whether s is a node's broadcast subscription.
func isOurs(s *wal.Subscription) bool { return s.Role == role && s.Claims == "" }

// AuthorizeFunc is wal.ServiceConfig.Authorize.
type AuthorizeFunc func(ctx context.Context, changes []*wal.Change, hits [][]*wal.Subscription) error

// Authorize wraps the owner's row-level security check of postgres_changes
// (inner; nil when the node runs open) for the rows of realtime.messages:
//
//   - the nodes' broadcast subscriptions skip it: a row reaches every node,
//     and each node gives it only to the channels of its topic whose
//     members may read broadcasts (decided at join, as Supabase does);
//   - postgres_changes bindings that name every table (schema "*", or
//     table "*") never get them: realtime.messages is streamed for its
//     broadcasts, and Supabase does not publish it for postgres_changes;
//   - a binding that names realtime.messages itself gets its rows as any
//     table's, through inner, when the app's publication holds the table
//     (the join checks that).
func Authorize(inner AuthorizeFunc) AuthorizeFunc {
	return func(ctx context.Context, changes []*wal.Change, hits [][]*wal.Subscription) error {
		var ours [][]*wal.Subscription // by change, of the changes of realtime.messages
		for i, c := range changes {
			if !IsMessages(c) || len(hits[i]) == 0 {
				continue
			}
			if ours == nil {
				ours = make([][]*wal.Subscription, len(changes))
			}
			ours[i] = hits[i]
			rest := make([]*wal.Subscription, 0, len(hits[i]))
			for _, s := range hits[i] {
				if !isOurs(s) && !wildcard(s) {
					rest = append(rest, s)
				}
			}
			hits[i] = rest
		}
		var err error
		if inner != nil {
			err = inner(ctx, changes, hits)
		}
		for i, all := range ours {
			if all != nil {
				hits[i] = merge(all, hits[i])
			}
		}
		return err
	}
}

func wildcard(s *wal.Subscription) bool { return s.Schema == "*" || s.Table == "" || s.Table == "*" }

// merge returns the subscriptions of all that are ours or that inner kept
// (kept is a subsequence of all, in its order), in all's order: the owner
// sends a change's hits to each node in one frame, grouped by node as the
// matcher ordered them.
func merge(all, kept []*wal.Subscription) []*wal.Subscription {
	out := all[:0]
	k := 0
	for _, s := range all {
		switch {
		case k < len(kept) && kept[k] == s:
			out = append(out, s)
			k++
		case isOurs(s):
			out = append(out, s)
		}
	}
	return out
}

// Publication is the publication of realtime.messages a node streams
// beside the app's (wal.Reader.Broadcasts).
const Publication = "meshcast_realtime_messages"
