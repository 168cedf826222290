package auth

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// This file checks the ACL against a reference written the naive way:
// placeholders substituted into a new string by strings.Replacer, topics
// split with strings.Split, matching by refMatch and the subset and
// overlap relations by brute-force enumeration (topic_test.go). The ACL
// itself compares levels in place without allocating; the two must agree
// on every decision.

// refValidFilter is validateFilter's rule, written over a split filter.
func refValidFilter(s string) bool {
	if s == "" || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return false
	}
	ls := strings.Split(s, "/")
	for i, l := range ls {
		if l == "#" && i != len(ls)-1 {
			return false
		}
		if l != "#" && l != "+" && strings.ContainsAny(l, "+#") {
			return false
		}
	}
	return true
}

// refExpand substitutes %u and %c in pattern, or reports false when the
// rule cannot apply to id (see the package documentation).
func refExpand(pattern string, id Identity) (string, bool) {
	hasU, hasC := strings.Contains(pattern, "%u"), strings.Contains(pattern, "%c")
	if !hasU && !hasC {
		return pattern, true
	}
	unsafe := func(v string) bool { return v == "" || strings.ContainsAny(v, "+#/\x00") }
	if hasU && unsafe(id.Username) || hasC && unsafe(id.ClientID) {
		return "", false
	}
	out := strings.NewReplacer("%u", id.Username, "%c", id.ClientID).Replace(pattern)
	if !strings.HasPrefix(pattern, "$") && strings.HasPrefix(out, "$") {
		return "", false
	}
	return out, true
}

func refApplies(r Rule, id Identity) bool {
	switch {
	case r.User != "":
		return !id.Anonymous && id.Username == r.User
	case r.Role != "":
		return !id.Anonymous && slices.Contains(id.Roles, r.Role)
	case r.Anonymous:
		return id.Anonymous
	}
	return true
}

// refSmall reports whether brute force is affordable for filter f.
func refSmall(f string) bool { return len(f) <= 40 && strings.Count(f, "/") <= 3 }

// refRelations is (subset, overlap) of pattern p and filter f; ok is false
// when f has wildcards and the pair is too big to enumerate.
func refRelations(p, f string) (sub, over, ok bool) {
	pl, fl := splitLevels(p), splitLevels(f)
	if !strings.ContainsAny(f, "+#") {
		m := refMatch(pl, fl) // a concrete topic: both are "p matches f"
		return m, m, true
	}
	if !refSmall(p) || !refSmall(f) {
		return false, false, false
	}
	sub, over = bruteRelations(pl, fl)
	return sub, over, true
}

// refScope is tokenAllows.
func refScope(scope []string, id Identity, f string) (allowed, ok bool) {
	if scope == nil {
		return true, true
	}
	for _, s := range scope {
		if !refValidFilter(s) {
			continue
		}
		p, usable := refExpand(s, id)
		if !usable {
			continue
		}
		sub, _, ok := refRelations(p, f)
		if !ok {
			return false, false
		}
		if sub {
			return true, true
		}
	}
	return false, true
}

func refCanPublish(rules []Rule, id Identity, topic string) bool {
	if topic == "" || !utf8.ValidString(topic) || strings.ContainsAny(topic, "+#\x00") {
		return false
	}
	if ok, _ := refScope(id.TokenPublish, id, topic); !ok {
		return false
	}
	if len(rules) == 0 {
		return true
	}
	for _, r := range rules {
		if isShareRule(r.Topic) || r.Action&ActionPublish == 0 || !refApplies(r, id) {
			continue
		}
		if p, ok := refExpand(r.Topic, id); ok && refMatch(splitLevels(p), splitLevels(topic)) {
			return r.Allow
		}
	}
	return false
}

// refDecide is the first-match subscribe evaluation over the ordinary or
// the $share rules; ok is false when it needs a brute force too big.
func refDecide(rules []Rule, id Identity, f string, share bool) (allowed, ok bool) {
	for _, r := range rules {
		if isShareRule(r.Topic) != share || r.Action&ActionSubscribe == 0 || !refApplies(r, id) {
			continue
		}
		p, usable := refExpand(r.Topic, id)
		if !usable {
			continue
		}
		sub, over, ok := refRelations(p, f)
		if !ok {
			return false, false
		}
		if r.Allow && sub {
			return true, true
		}
		if !r.Allow && over {
			return false, true
		}
	}
	return false, true
}

func refCanSubscribe(rules []Rule, id Identity, filter string) (allowed, ok bool) {
	inner, share := strings.CutPrefix(filter, "$share/")
	if share {
		parts := strings.SplitN(filter, "/", 3)
		if len(parts) != 3 {
			return false, true
		}
		group := parts[1]
		inner = parts[2]
		if group == "" || strings.ContainsAny(group, "+#") || !refValidFilter(group) {
			return false, true
		}
	}
	if !refValidFilter(inner) {
		return false, true
	}
	if allowed, ok := refScope(id.TokenSubscribe, id, inner); !ok || !allowed {
		return false, ok
	}
	if len(rules) == 0 {
		return true, true
	}
	allowed, ok = refDecide(rules, id, inner, false)
	if !ok || !allowed || !share || !slices.ContainsFunc(rules, func(r Rule) bool { return isShareRule(r.Topic) }) {
		return allowed, ok
	}
	return refDecide(rules, id, filter, true)
}

// compareWithReference fails t when a decides any of the checks below
// differently from the reference.
func compareWithReference(t *testing.T, rules []Rule, id Identity, topics []string) {
	t.Helper()
	a, err := NewACL(rules)
	if err != nil {
		return
	}
	for _, s := range topics {
		if got, want := a.CanPublish(id, s), refCanPublish(rules, id, s); got != want {
			t.Fatalf("CanPublish(%+v, %q) = %v, reference %v; rules:\n%s", id, s, got, want, rulesText(rules))
		}
		if want, ok := refCanSubscribe(rules, id, s); ok {
			if got := a.CanSubscribe(id, s); got != want {
				t.Fatalf("CanSubscribe(%+v, %q) = %v, reference %v; rules:\n%s", id, s, got, want, rulesText(rules))
			}
		}
	}
}

func rulesText(rules []Rule) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}

// fuzzRule builds a rule from a topic and a byte choosing allow or deny,
// the action and the subject.
func fuzzRule(topic string, bits byte) Rule {
	r := Rule{Allow: bits&1 == 0, Action: []Action{ActionAll, ActionPublish, ActionSubscribe, ActionAll}[bits>>1&3], Topic: topic}
	switch bits >> 3 & 3 {
	case 1:
		r.User = "bob"
	case 2:
		r.Role = "ops"
	case 3:
		r.Anonymous = true
	}
	return r
}

// fuzzIdentity builds an identity; scope, when not "-", is its token's
// publish and subscribe scope, split at ','.
func fuzzIdentity(user, client, scope string) Identity {
	id := Identity{Username: user, ClientID: client, Roles: []string{"ops"}, Anonymous: user == ""}
	if scope != "-" {
		id.TokenPublish = strings.Split(scope, ",")
		id.TokenSubscribe = id.TokenPublish
	}
	return id
}

// fuzzTopics derives the topics and filters checked for one input.
func fuzzTopics(user, client, topic, filter string) []string {
	out := []string{topic, filter, "$share/g/" + filter, "$share/" + user + "/" + filter}
	for _, s := range []string{topic, filter} {
		out = append(out,
			strings.ReplaceAll(strings.ReplaceAll(s, "%u", user), "%c", client),
			"$"+s)
	}
	return out
}

// FuzzACLReference compares the ACL's decisions with the reference on three
// fuzzed rules, an identity (username, client id, token scope) and topics.
func FuzzACLReference(f *testing.F) {
	f.Add("devices/%u/#", byte(0), "devices/+/secret/#", byte(1), "#", byte(3<<3), "bob", "bob-1", "-", "devices/bob/x", "devices/bob/+")
	f.Add("logs/%c-out", byte(2), "x/%u-%c/y", byte(0), "$share/%u/jobs/#", byte(4), "a%cb", "c", "-", "logs/c-out", "x/a%cb-c/y")
	f.Add("%u/#", byte(0), "$SYS/#", byte(1<<3), "+/#", byte(1), "$SYS", "c", "-", "$SYS/x", "#")
	f.Add("%c/%u", byte(0), "#", byte(1), "a/#", byte(0), "u", "$c", "%u/#,a/+", "$c/u", "a/b")
	f.Add("$share/+/#", byte(4), "jobs/#", byte(4), "$share/bob/#", byte(5), "bob", "c", "jobs/%c", "jobs/c", "jobs/+")
	f.Add("a/%%u/b", byte(0), "a/+/b", byte(1), "%u%c/x", byte(0), "%", "u", "-", "a/%%/b", "%u/x")
	f.Fuzz(func(t *testing.T, r1 string, b1 byte, r2 string, b2 byte, r3 string, b3 byte, user, client, scope, topic, filter string) {
		rules := []Rule{fuzzRule(r1, b1), fuzzRule(r2, b2), fuzzRule(r3, b3)}
		compareWithReference(t, rules, fuzzIdentity(user, client, scope), fuzzTopics(user, client, topic, filter))
	})
}

// TestACLMatchesReference runs the comparison on random rules and topics
// built from levels that exercise wildcards, placeholders (whole, inside a
// level, next to a literal '%'), $-topics and empty levels, and identities
// with unsafe or tricky values.
func TestACLMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	levels := []string{"a", "b", "+", "#", "", "$SYS", "%u", "%c", "x-%c", "%u%c", "%%u", "bob", "c1"}
	gen := func(n int, wild bool) string {
		parts := make([]string, 1+rng.IntN(n))
		for i := range parts {
			l := levels[rng.IntN(len(levels))]
			for !wild && strings.ContainsAny(l, "+#%") {
				l = levels[rng.IntN(len(levels))]
			}
			parts[i] = l
		}
		return strings.Join(parts, "/")
	}
	users := []string{"bob", "", "$SYS", "a%cb", "+", "c1"}
	clients := []string{"c1", "x-c1", "$c", "a/b", "%u"}
	scopes := []string{"-", "-", "-", "a/#,%u/#", "", "x-%c/+"}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for i := range n {
		var rules []Rule
		for want := rng.IntN(5); len(rules) < want; {
			topic := gen(3, true)
			if rng.IntN(6) == 0 {
				topic = "$share/" + []string{"+", "%u", "g"}[rng.IntN(3)] + "/" + gen(2, true)
			}
			r := fuzzRule(topic, byte(rng.IntN(32)))
			if r.validate() == nil {
				rules = append(rules, r)
			}
		}
		user, client := users[rng.IntN(len(users))], clients[rng.IntN(len(clients))]
		id := fuzzIdentity(user, client, scopes[rng.IntN(len(scopes))])
		if rng.IntN(4) == 0 {
			id.Anonymous = true
		}
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			compareWithReference(t, rules, id, fuzzTopics(user, client, gen(4, false), gen(3, true)))
		})
	}
}
