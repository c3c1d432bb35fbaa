// Package interest is the cluster's interest table: which nodes have local
// subscribers of which topics. It is a pure type (no goroutines, no
// network); the mesh feeds it from InterestAdd/Remove/Snapshot frames and
// asks it where a broadcast must go.
package interest

import (
	"slices"
	"sort"
)

// Table maps topics to the nodes interested in them. The zero value is
// ready to use. It is not safe for concurrent use.
type Table struct {
	byTopic map[string][]string            // sorted node IDs; replaced, never mutated, so callers may keep them
	byNode  map[string]map[string]struct{} // node → topics
}

// Nodes returns the nodes interested in topic, sorted. The slice is shared:
// callers must not modify it.
func (t *Table) Nodes(topic string) []string { return t.byTopic[topic] }

// Has reports whether node is interested in topic.
func (t *Table) Has(node, topic string) bool {
	_, ok := t.byNode[node][topic]
	return ok
}

// Topics returns the topics node is interested in, sorted.
func (t *Table) Topics(node string) []string {
	out := make([]string, 0, len(t.byNode[node]))
	for topic := range t.byNode[node] {
		out = append(out, topic)
	}
	sort.Strings(out)
	return out
}

// Add records node's interest in topic and reports whether it is new.
func (t *Table) Add(node, topic string) bool {
	if t.Has(node, topic) {
		return false
	}
	if t.byNode == nil {
		t.byNode = make(map[string]map[string]struct{})
		t.byTopic = make(map[string][]string)
	}
	if t.byNode[node] == nil {
		t.byNode[node] = make(map[string]struct{})
	}
	t.byNode[node][topic] = struct{}{}
	cur := t.byTopic[topic]
	i, _ := slices.BinarySearch(cur, node)
	next := make([]string, 0, len(cur)+1)
	next = append(next, cur[:i]...)
	next = append(next, node)
	t.byTopic[topic] = append(next, cur[i:]...)
	return true
}

// Remove drops node's interest in topic and reports whether it was there.
func (t *Table) Remove(node, topic string) bool {
	if !t.Has(node, topic) {
		return false
	}
	delete(t.byNode[node], topic)
	if len(t.byNode[node]) == 0 {
		delete(t.byNode, node)
	}
	cur := t.byTopic[topic]
	if len(cur) == 1 {
		delete(t.byTopic, topic)
		return true
	}
	i, _ := slices.BinarySearch(cur, node)
	next := make([]string, 0, len(cur)-1)
	next = append(next, cur[:i]...)
	t.byTopic[topic] = append(next, cur[i+1:]...)
	return true
}

// Replace sets node's interests to exactly topics (a snapshot) and returns
// what was added and removed.
func (t *Table) Replace(node string, topics []string) (added, removed []string) {
	want := make(map[string]struct{}, len(topics))
	for _, topic := range topics {
		want[topic] = struct{}{}
	}
	for _, topic := range t.Topics(node) {
		if _, ok := want[topic]; !ok {
			t.Remove(node, topic)
			removed = append(removed, topic)
		}
	}
	for _, topic := range topics {
		if t.Add(node, topic) {
			added = append(added, topic)
		}
	}
	return added, removed
}

// RemoveNode drops every interest of node (it died or left) and returns
// the topics it had.
func (t *Table) RemoveNode(node string) []string {
	topics := t.Topics(node)
	for _, topic := range topics {
		t.Remove(node, topic)
	}
	return topics
}
