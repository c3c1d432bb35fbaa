package wal

import "github.com/meshcast/meshcast/wal/owner"

// Member is a cluster member as the change stream's ownership sees it.
type Member = owner.Member

// OwnerOf returns the member that runs db's reader, or "" when none can
// (see owner.Of).
func OwnerOf(db string, regions []string, members []Member) string {
	return owner.Of(db, regions, members)
}
