package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Identity is who a client is, once authenticated.
type Identity struct {
	Username  string // "" for anonymous
	ClientID  string
	Roles     []string
	Anonymous bool
	// Token-scoped ACL from a JWT (nil = none given): topic filters the
	// token allows. A non-nil empty slice allows nothing.
	TokenPublish, TokenSubscribe []string
	Expires                      time.Time // zero = never (JWT exp)
}

// Action is a set of operations a Rule applies to.
type Action uint8

// The actions a rule can grant or deny.
const (
	ActionPublish Action = 1 << iota
	ActionSubscribe
	ActionAll = ActionPublish | ActionSubscribe
)

// ParseAction parses an action as written in an ACL file: "pub" or
// "publish", "sub" or "subscribe", "all" or "pubsub" (case-insensitive).
func ParseAction(s string) (Action, error) {
	switch strings.ToLower(s) {
	case "pub", "publish":
		return ActionPublish, nil
	case "sub", "subscribe":
		return ActionSubscribe, nil
	case "all", "pubsub":
		return ActionAll, nil
	}
	return 0, fmt.Errorf("unknown action %q: use pub, sub or all", s)
}

// String returns the ACL-file spelling of a: "pub", "sub" or "all".
func (a Action) String() string {
	switch a {
	case ActionPublish:
		return "pub"
	case ActionSubscribe:
		return "sub"
	case ActionAll:
		return "all"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Rule is one ACL entry. Rules are evaluated in order and the first rule
// that matches decides; once any rule exists, a request no rule matches is
// denied. See the package documentation for the exact semantics.
type Rule struct {
	Allow     bool   // allow or deny
	User      string // exact username, or ""
	Role      string // or a role name
	Anonymous bool   // or anonymous clients; all three empty/false = any client
	Action    Action
	// Topic is an MQTT topic filter. It may contain %u (username) and %c
	// (client id), as whole levels or inside a level. A topic starting with
	// "$share/" makes this a shared-subscription group rule.
	Topic string
}

// String renders r in ACL-file syntax, e.g. "allow user alice pub a/%u/#".
func (r Rule) String() string {
	var b strings.Builder
	if r.Allow {
		b.WriteString("allow ")
	} else {
		b.WriteString("deny ")
	}
	switch {
	case r.User != "":
		b.WriteString("user " + r.User + " ")
	case r.Role != "":
		b.WriteString("role " + r.Role + " ")
	case r.Anonymous:
		b.WriteString("anonymous ")
	default:
		b.WriteString("any ")
	}
	b.WriteString(r.Action.String() + " " + r.Topic)
	return b.String()
}

// isShareRule reports whether topic is a shared-subscription group pattern.
func isShareRule(topic string) bool {
	return topic == sharePrefix || strings.HasPrefix(topic, sharePrefix+levelSep)
}

// validate checks r and returns an error that says what is wrong and how to
// fix it (without position information; callers add "acl rule N" or
// "file:line").
func (r Rule) validate() error {
	n := 0
	for _, set := range []bool{r.User != "", r.Role != "", r.Anonymous} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("a rule may name only one of user, role or anonymous; split it into several rules")
	}
	if r.Action == 0 || r.Action&^ActionAll != 0 {
		return fmt.Errorf("invalid action %d: use ActionPublish, ActionSubscribe or ActionAll (pub, sub or all)", r.Action)
	}
	if err := validateFilter(r.Topic); err != nil {
		return fmt.Errorf("topic %q: %w", r.Topic, err)
	}
	if isShareRule(r.Topic) {
		levels := splitLevels(r.Topic)
		if len(levels) < 3 && !(len(levels) == 2 && levels[1] == wildMulti) {
			return fmt.Errorf("topic %q: a shared-subscription rule needs a group and a filter: \"$share/GROUP/FILTER\" (GROUP may be '+' or %%u; \"$share/#\" means every group)", r.Topic)
		}
		if r.Action == ActionPublish {
			return fmt.Errorf("topic %q: $share rules control shared-subscription groups and only apply to subscribe; use sub", r.Topic)
		}
	}
	return nil
}

// compiledRule is a validated Rule with what its checks need to know.
type compiledRule struct {
	Rule
	hasU, hasC bool // topic contains %u / %c
	share      bool // a $share group rule
}

// ACL is an immutable, ordered list of rules. It is safe for concurrent use.
// The zero value and nil allow everything (see Empty).
type ACL struct {
	rules    []compiledRule
	hasShare bool
}

// NewACL validates rules and compiles them into an ACL. Errors name the
// 1-based rule index, e.g.
//
//	acl rule 3: topic "a/#/b": '#' must be the last level (...)
func NewACL(rules []Rule) (*ACL, error) {
	a := &ACL{rules: make([]compiledRule, 0, len(rules))}
	for i, r := range rules {
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("acl rule %d: %w", i+1, err)
		}
		cr := compiledRule{
			Rule:  r,
			hasU:  strings.Contains(r.Topic, "%u"),
			hasC:  strings.Contains(r.Topic, "%c"),
			share: isShareRule(r.Topic),
		}
		a.hasShare = a.hasShare || cr.share
		a.rules = append(a.rules, cr)
	}
	return a, nil
}

// Empty reports whether the ACL has no rules, in which case every valid
// publish and subscribe is allowed (an open broker; token scopes still apply).
func (a *ACL) Empty() bool { return a == nil || len(a.rules) == 0 }

// Len returns the number of rules.
func (a *ACL) Len() int {
	if a == nil {
		return 0
	}
	return len(a.rules)
}

// appliesTo reports whether the rule's subject (user, role, anonymous or
// any) covers id.
func (r *compiledRule) appliesTo(id *Identity) bool {
	switch {
	case r.User != "":
		return !id.Anonymous && id.Username == r.User
	case r.Role != "":
		return !id.Anonymous && slices.Contains(id.Roles, r.Role)
	case r.Anonymous:
		return id.Anonymous
	default:
		return true
	}
}

// safeIdentityValue reports whether v may be substituted for %u or %c.
// Empty values and values containing '+', '#', '/' or NUL would widen or
// reshape the pattern (CVE-2017-7650), so a rule using such a placeholder
// simply does not match.
func safeIdentityValue(v string) bool {
	return v != "" && !strings.ContainsAny(v, "+#/\x00")
}

// placeholdersOK reports whether pattern's %u and %c (hasU, hasC: present)
// may be substituted from id; the checks then compare the pattern's levels
// with the values in place (levelIs). It is false when a placeholder's
// value is unsafe, or when substitution would make the first level start
// with '$' although the pattern's does not (so a user called "$SYS" cannot
// turn "%u/#" into "$SYS/#"). Substitution is a single pass: a username
// containing "%c" is not expanded again.
func placeholdersOK(pattern string, hasU, hasC bool, id *Identity) bool {
	if !hasU && !hasC {
		return true
	}
	if (hasU && !safeIdentityValue(id.Username)) || (hasC && !safeIdentityValue(id.ClientID)) {
		return false
	}
	first, _, _ := strings.Cut(pattern, levelSep)
	return isDollar(first) || !levelIsDollar(first, id)
}

func (r *compiledRule) usable(id *Identity) bool {
	return placeholdersOK(r.Topic, r.hasU, r.hasC, id)
}

// tokenAllows reports whether a JWT scope list allows f: some filter in the
// list must cover f entirely (subset; for a concrete topic that is a plain
// match). A nil list means the token sets no scope. Invalid filters in the
// list and placeholders with unsafe values never match.
func tokenAllows(scope []string, id *Identity, f string) bool {
	if scope == nil {
		return true
	}
	for _, s := range scope {
		if validateFilter(s) != nil {
			continue
		}
		if placeholdersOK(s, strings.Contains(s, "%u"), strings.Contains(s, "%c"), id) && subset(s, f, id) {
			return true
		}
	}
	return false
}

// CanPublish reports whether id may publish to the concrete topic. Topics
// that are not valid topic names (empty, wildcards, NUL, invalid UTF-8) are
// always refused. $share rules are ignored.
func (a *ACL) CanPublish(id Identity, topic string) bool {
	if validateTopicName(topic) != nil {
		return false
	}
	if !tokenAllows(id.TokenPublish, &id, topic) {
		return false
	}
	if a.Empty() {
		return true
	}
	for i := range a.rules {
		r := &a.rules[i]
		if r.share || r.Action&ActionPublish == 0 || !r.appliesTo(&id) {
			continue
		}
		if r.usable(&id) && subset(r.Topic, topic, &id) {
			return r.Allow
		}
	}
	return false
}

// CanSubscribe reports whether id may subscribe to filter.
//
// A filter is allowed only if every topic it can match is readable: the first
// applicable rule that either fully covers the filter (allow) or overlaps it
// at all (deny) decides. A shared subscription "$share/GROUP/FILTER" needs
// FILTER to pass that check and, if the ACL has any $share rules, the whole
// "$share/GROUP/FILTER" to pass the same check against the $share rules.
func (a *ACL) CanSubscribe(id Identity, filter string) bool {
	if strings.HasPrefix(filter, sharePrefix+levelSep) {
		return a.canSubscribeShared(id, filter)
	}
	if validateFilter(filter) != nil {
		return false
	}
	if !tokenAllows(id.TokenSubscribe, &id, filter) {
		return false
	}
	return a.Empty() || a.decideSubscribe(&id, filter, false)
}

func (a *ACL) canSubscribeShared(id Identity, filter string) bool {
	group, inner, ok := strings.Cut(filter[len(sharePrefix+levelSep):], levelSep)
	if !ok {
		return false // "$share/GROUP" without a filter
	}
	// The group is a single level (no '/'); it must be non-empty, valid
	// UTF-8 without NUL and contain no wildcard [MQTT-4.8.2-2].
	if group == "" || strings.ContainsAny(group, wildOne+wildMulti) ||
		validateFilter(group) != nil || validateFilter(inner) != nil {
		return false
	}
	if !tokenAllows(id.TokenSubscribe, &id, inner) {
		return false
	}
	if a.Empty() {
		return true
	}
	if !a.decideSubscribe(&id, inner, false) {
		return false
	}
	return !a.hasShare || a.decideSubscribe(&id, filter, true)
}

// decideSubscribe runs the first-match subscribe evaluation over either the
// ordinary rules (share=false) or the $share group rules (share=true).
func (a *ACL) decideSubscribe(id *Identity, f string, share bool) bool {
	for i := range a.rules {
		r := &a.rules[i]
		if r.share != share || r.Action&ActionSubscribe == 0 || !r.appliesTo(id) || !r.usable(id) {
			continue
		}
		if r.Allow {
			if subset(r.Topic, f, id) {
				return true
			}
			// A partial cover does not decide; later rules may still
			// cover the whole filter or refuse part of it.
		} else if overlap(r.Topic, f, id) {
			return false
		}
	}
	return false
}
