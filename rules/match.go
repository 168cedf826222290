package rules

import (
	"slices"
	"strings"
)

// trie matches a topic against every rule's filters in one walk over the
// topic's levels, without allocating: the cost depends on the topic's depth
// and the filters that share its levels, not on the number of rules.
type trie struct {
	children map[string]*trie
	plus     *trie
	hash     []int32 // rules with a filter ending in '#' here
	here     []int32 // rules with a filter ending here
}

func (t *trie) insert(filter string, rule int32) {
	n := t
	for level := range strings.SplitSeq(filter, "/") {
		switch level {
		case "#":
			n.hash = append(n.hash, rule)
			return
		case "+":
			if n.plus == nil {
				n.plus = &trie{}
			}
			n = n.plus
		default:
			if n.children == nil {
				n.children = map[string]*trie{}
			}
			c := n.children[level]
			if c == nil {
				c = &trie{}
				n.children[level] = c
			}
			n = c
		}
	}
	n.here = append(n.here, rule)
}

// match appends to out the rules whose filters match topic, in rule order
// and without duplicates.
func (t *trie) match(topic string, out []int32) []int32 {
	dollar := strings.HasPrefix(topic, "$")
	out = t.walk(topic, 0, false, true, dollar, out)
	if len(out) > 1 {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}

// walk matches the levels of topic from byte i (end: none left). Wildcards
// at the first level do not match $ topics [MQTT-4.7.2-1].
func (t *trie) walk(topic string, i int, end, first, dollar bool, out []int32) []int32 {
	wild := !(first && dollar)
	if wild {
		out = append(out, t.hash...) // '#' also matches the parent level
	}
	if end {
		return append(out, t.here...)
	}
	j := strings.IndexByte(topic[i:], '/')
	level, next, last := topic[i:], len(topic), true
	if j >= 0 {
		level, next, last = topic[i:i+j], i+j+1, false
	}
	if c := t.children[level]; c != nil {
		out = c.walk(topic, next, last, false, dollar, out)
	}
	if t.plus != nil && wild {
		out = t.plus.walk(topic, next, last, false, dollar, out)
	}
	return out
}
