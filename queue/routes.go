package queue

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	topics "github.com/motemq/mote/internal/topic"
)

// routes answers, for every publish, which queues take the message: the
// groups with a member subscription ($share/{group}/{filter}) matching the
// topic, then the declared queues whose filter matches it.
//
// It holds only those filters, so its cost follows the shared
// subscriptions and declared queues, not mochi's whole subscription index
// (walking that, with every ordinary subscription gathered, took about 18 %
// of the broker's CPU under load), and with neither it is one atomic load.
//
// A member subscription stays here exactly while mochi's index holds it:
// added on SUBSCRIBE and at restore, removed by UNSUBSCRIBE and by
// mochi's UnsubscribeClient (a session that ends at disconnect or is taken
// over with clean start, and an expired one: the guard hook unsubscribes
// it), all of which run OnUnsubscribed. So, as before, a group whose
// members are offline persistent sessions keeps receiving messages, which
// wait for them. Inline clients are never members (mochi's inline
// subscriptions are not shared ones), as in OnSubscribed.
//
// Matching reproduces what the queue manager used to compute per publish: mochi's trie walk
// (TopicsIndex.scanSubscribers, including that "a/+/#" does not match
// "a/b" while "a/x/#" matches "a/x") narrowed by topics.Match, whose
// [MQTT-4.7.2-1] rule keeps $-topics from filters starting with a
// wildcard. routes_test.go checks it against mochi's own index.
type routes struct {
	n        atomic.Int64 // member subscriptions + declared queues: 0 skips the lock
	mu       sync.RWMutex
	root     routeNode
	declared []declaredQueue
}

type declaredQueue struct{ group, filter string }

// routeNode is a filter level. groups maps each group with a member
// filter ending here to the ids of the clients subscribed with it.
type routeNode struct {
	kids   map[string]*routeNode
	groups map[string]map[string]struct{}
}

// add records client's subscription $share/{group}/{filter}.
func (r *routes) add(group, filter, client string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	for level, rest, more := strings.Cut(filter, "/"); ; level, rest, more = strings.Cut(rest, "/") {
		k := n.kids[level]
		if k == nil {
			if n.kids == nil {
				n.kids = map[string]*routeNode{}
			}
			k = &routeNode{}
			n.kids[level] = k
		}
		n = k
		if !more {
			break
		}
	}
	if n.groups == nil {
		n.groups = map[string]map[string]struct{}{}
	}
	ids := n.groups[group]
	if ids == nil {
		ids = map[string]struct{}{}
		n.groups[group] = ids
	}
	if _, ok := ids[client]; !ok {
		ids[client] = struct{}{}
		r.n.Add(1)
	}
}

// remove forgets client's subscription $share/{group}/{filter} (nothing
// if it has none) and the levels left empty.
func (r *routes) remove(group, filter, client string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type step struct {
		parent *routeNode
		key    string
	}
	var path []step
	n := &r.root
	for level, rest, more := strings.Cut(filter, "/"); ; level, rest, more = strings.Cut(rest, "/") {
		k := n.kids[level]
		if k == nil {
			return
		}
		path = append(path, step{n, level})
		n = k
		if !more {
			break
		}
	}
	ids := n.groups[group]
	if _, ok := ids[client]; !ok {
		return
	}
	delete(ids, client)
	r.n.Add(-1)
	if len(ids) == 0 {
		delete(n.groups, group)
	}
	for i := len(path) - 1; i >= 0; i-- {
		k := path[i].parent.kids[path[i].key]
		if len(k.kids) > 0 || len(k.groups) > 0 {
			break
		}
		delete(path[i].parent.kids, path[i].key)
	}
}

// declare adds a declared queue: it takes every message matching filter
// (topics.Match) whether it has members or not.
func (r *routes) declare(group, filter string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.Contains(r.declared, declaredQueue{group, filter}) {
		return
	}
	r.declared = append(r.declared, declaredQueue{group, filter})
	r.n.Add(1)
}

// match returns the groups whose queue takes a message on topic, each
// once: those with a matching member filter, then the matching declared
// queues.
func (r *routes) match(topic string) []string {
	if r.n.Load() == 0 {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	if topic != "" {
		out = r.root.collect(topic, strings.HasPrefix(topic, "$"), out)
	}
	for _, d := range r.declared {
		if topics.Match(d.filter, topic) {
			out = appendGroup(out, d.group)
		}
	}
	return out
}

// collect appends the groups of the member filters under n that match
// topic (the levels left to match). It follows mochi's scanSubscribers:
// at each level the literal child and "+" are tried, "#" matches the
// rest; at the last level a literal child's "#" matches too (filter/#
// matches filter), "+"'s does not. dollar is set at the root for a topic
// starting with '$', whose first level no wildcard matches [MQTT-4.7.2-1].
func (n *routeNode) collect(topic string, dollar bool, out []string) []string {
	level, rest, more := strings.Cut(topic, "/")
	for i, key := range [2]string{level, "+"} {
		if i == 1 && (dollar || level == "+") {
			break // "+" was the literal key, or wildcards do not apply
		}
		k := n.kids[key]
		if k == nil {
			continue
		}
		if more {
			out = k.collect(rest, false, out)
			continue
		}
		out = k.addGroups(out)
		if key != "+" {
			if h := k.kids["#"]; h != nil {
				out = h.addGroups(out)
			}
		}
	}
	if !dollar {
		if h := n.kids["#"]; h != nil {
			out = h.addGroups(out)
		}
	}
	return out
}

func (n *routeNode) addGroups(out []string) []string {
	for g := range n.groups {
		out = appendGroup(out, g)
	}
	return out
}

// appendGroup appends g unless out has it; the first one allocates room
// for the usual few.
func appendGroup(out []string, g string) []string {
	if slices.Contains(out, g) {
		return out
	}
	if out == nil {
		out = make([]string, 0, 4)
	}
	return append(out, g)
}
