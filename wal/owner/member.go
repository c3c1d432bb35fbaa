package owner

import (
	"slices"

	"github.com/meshcast/meshcast/mesh/ring"
)

// Member is a cluster member as the change stream's ownership sees it.
type Member struct {
	ID       string
	Name     string // the node's name: a new incarnation has a new ID, the same name
	Region   string
	DB       string // the database whose changes it takes part in ("" for none)
	Reader   bool   // it can read the database itself: a candidate owner
	Draining bool
}

// Of returns the member that runs db's reader, or "" when none can:
// among the members that can read db and are not draining, those of the
// first region of regions that has any (every candidate when none of
// regions has one, or regions is empty), and of those the owner of db on
// the ring. Every member computes the same owner from the same member
// list, and a change of membership moves the reader only when its owner
// left or a node of a preferred region appeared.
func Of(db string, regions []string, members []Member) string {
	if db == "" {
		return ""
	}
	var all []string
	byRegion := map[string][]string{}
	for _, m := range members {
		if m.DB != db || !m.Reader || m.Draining {
			continue
		}
		all = append(all, m.ID)
		byRegion[m.Region] = append(byRegion[m.Region], m.ID)
	}
	candidates := all
	for _, r := range regions {
		if ids := byRegion[r]; len(ids) > 0 {
			candidates = ids
			break
		}
	}
	if len(candidates) == 0 {
		return ""
	}
	slices.Sort(candidates)
	owner, _ := ring.New(candidates, 0).Owner(db)
	return owner
}
