package auth

import (
	"strings"
	"testing"
)

func mustACL(t testing.TB, text string) *ACL {
	t.Helper()
	rules, err := ParseACL(strings.NewReader(text), "test.acl")
	if err != nil {
		t.Fatalf("ParseACL: %v", err)
	}
	a, err := NewACL(rules)
	if err != nil {
		t.Fatalf("NewACL: %v", err)
	}
	return a
}

var (
	alice = Identity{Username: "alice", ClientID: "alice-1", Roles: []string{"ops"}}
	bob   = Identity{Username: "bob", ClientID: "bob-1"}
	anon  = Identity{ClientID: "anon-1", Anonymous: true}
)

// check is one ACL expectation: publish (pub=true) or subscribe.
type check struct {
	id     Identity
	pub    bool
	topic  string
	want   bool
	reason string
}

func runChecks(t *testing.T, a *ACL, checks []check) {
	t.Helper()
	for _, c := range checks {
		var got bool
		op := "sub"
		if c.pub {
			op = "pub"
			got = a.CanPublish(c.id, c.topic)
		} else {
			got = a.CanSubscribe(c.id, c.topic)
		}
		if got != c.want {
			t.Errorf("%s %s(user=%q client=%q) %q = %v, want %v (%s)", t.Name(), op, c.id.Username, c.id.ClientID, c.topic, got, c.want, c.reason)
		}
	}
}

func TestParseAction(t *testing.T) {
	for in, want := range map[string]Action{
		"pub": ActionPublish, "publish": ActionPublish, "PUB": ActionPublish,
		"sub": ActionSubscribe, "subscribe": ActionSubscribe,
		"all": ActionAll, "pubsub": ActionAll,
	} {
		got, err := ParseAction(in)
		if err != nil || got != want {
			t.Errorf("ParseAction(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseAction("read"); err == nil || !strings.Contains(err.Error(), "use pub, sub or all") {
		t.Errorf("ParseAction(read) error = %v", err)
	}
}

func TestEmptyACLAllowsAll(t *testing.T) {
	for _, a := range []*ACL{nil, {}, mustACL(t, "# only a comment\n\n")} {
		if !a.Empty() {
			t.Fatal("Empty() = false")
		}
		runChecks(t, a, []check{
			{anon, true, "a/b", true, "open broker"},
			{anon, false, "#", true, "open broker"},
			{anon, false, "$SYS/#", true, "no ACL = open broker, $SYS included"},
			{anon, false, "$share/g/a/#", true, "open broker, any group"},
			{anon, true, "a/+", false, "wildcard in a topic name is never valid"},
			{anon, true, "", false, "empty topic is invalid"},
			{anon, false, "a/#/b", false, "invalid filter"},
		})
	}
}

func TestACLSubjects(t *testing.T) {
	a := mustACL(t, `
allow user alice pub u/alice
allow role ops   pub r/ops
allow anonymous  pub anon
allow any        pub everyone
`)
	runChecks(t, a, []check{
		{alice, true, "u/alice", true, "user rule"},
		{bob, true, "u/alice", false, "other user"},
		{Identity{Username: "alice", Anonymous: true}, true, "u/alice", false, "anonymous never matches a user rule"},
		{alice, true, "r/ops", true, "role rule"},
		{bob, true, "r/ops", false, "missing role"},
		{Identity{Roles: []string{"ops"}, Anonymous: true}, true, "r/ops", false, "anonymous never matches a role rule"},
		{anon, true, "anon", true, "anonymous rule"},
		{alice, true, "anon", false, "authenticated client is not anonymous"},
		{anon, true, "everyone", true, "any rule"},
		{bob, true, "everyone", true, "any rule"},
		{bob, true, "unlisted", false, "no match = deny"},
	})
}

func TestACLFirstMatchWins(t *testing.T) {
	a := mustACL(t, `
deny  any all a/secret
allow any all a/#
allow any all b/#
deny  any all b/secret
`)
	runChecks(t, a, []check{
		{bob, true, "a/secret", false, "deny listed first"},
		{bob, true, "a/public", true, "allow"},
		{bob, true, "b/secret", true, "allow listed first wins"},
		{bob, false, "a/#", false, "deny overlaps the filter: refused, not narrowed"},
		{bob, false, "a/+", false, "deny overlaps a/+"},
		{bob, false, "a/public/#", true, "no overlap with a/secret"},
		{bob, false, "a/secret/x", true, "a/secret does not match a/secret/x"},
		{bob, false, "b/#", true, "allow b/# decides before the deny"},
	})
}

func TestACLActions(t *testing.T) {
	a := mustACL(t, `
allow any pub in/#
allow any sub out/#
allow any all both/#
`)
	runChecks(t, a, []check{
		{bob, true, "in/x", true, "pub rule"},
		{bob, false, "in/x", false, "pub rule does not grant sub"},
		{bob, false, "out/x", true, "sub rule"},
		{bob, true, "out/x", false, "sub rule does not grant pub"},
		{bob, true, "both/x", true, "all"},
		{bob, false, "both/#", true, "all"},
	})
}

func TestACLSubsetSemantics(t *testing.T) {
	a := mustACL(t, `allow any all devices/%u/#`)
	runChecks(t, a, []check{
		{bob, false, "devices/bob/+/temp", true, "inside the pattern"},
		{bob, false, "devices/bob/#", true, "equal"},
		{bob, false, "devices/bob", true, "'#' includes the parent"},
		{bob, false, "devices/#", false, "wider than the pattern"},
		{bob, false, "devices/+/temp", false, "'+' may match other users"},
		{bob, false, "#", false, "everything"},
		{bob, false, "+/bob/#", false, "first level wildcard is wider"},
		{alice, false, "devices/bob/#", false, "other user's tree"},
		{bob, true, "devices/bob/x/y", true, "publish inside"},
		{bob, true, "devices/bobby/x", false, "level must be exact"},
	})
}

func TestACLMQTTSemantics(t *testing.T) {
	a := mustACL(t, `
allow any all a/+
allow any all b/#
allow any all #
`)
	runChecks(t, a, []check{
		{bob, true, "a/b", true, "+ matches one level"},
		{bob, false, "a/b", true, "+ matches one level"},
		{bob, true, "a/", true, "+ matches an empty level"},
		{bob, true, "$SYS/x", false, "# does not match $ topics"},
		{bob, false, "$SYS/#", false, "$SYS must be granted explicitly"},
		{bob, false, "$SYS/broker/uptime", false, "$SYS must be granted explicitly"},
		{bob, true, "$foo", false, "$ topics need explicit rules"},
	})
	// '+' must not span levels (mochi's ledger bug): only a/+ is granted.
	b := mustACL(t, `allow any all a/+`)
	runChecks(t, b, []check{
		{bob, true, "a/b/c", false, "a/+ must not match a/b/c"},
		{bob, false, "a/b/c", false, "a/+ must not match a/b/c"},
		{bob, false, "a/+/c", false, "deeper than the pattern"},
		{bob, true, "a", false, "a/+ does not match a"},
	})
	c := mustACL(t, `allow any all a/#`)
	runChecks(t, c, []check{
		{bob, true, "a", true, "a/# matches a"},
		{bob, true, "a/b/c", true, "a/# matches deeper"},
		{bob, false, "a", true, "a/# covers a"},
	})
	sys := mustACL(t, `
allow role ops sub $SYS/#
allow any all +/#
`)
	runChecks(t, sys, []check{
		{alice, false, "$SYS/#", true, "explicit grant"},
		{alice, false, "$SYS/broker/+", true, "explicit grant"},
		{bob, false, "$SYS/#", false, "+/# does not match $SYS"},
		{bob, false, "#", true, "+/# covers # (both exclude $ topics)"},
		{alice, true, "$SYS/x", false, "sub-only grant"},
	})
}

func TestACLPlaceholders(t *testing.T) {
	a := mustACL(t, `
allow any all users/%u/#
allow any all clients/%c
allow any all logs/%c-out/%u
allow any all pct/%x/100%
`)
	runChecks(t, a, []check{
		{bob, true, "users/bob/a", true, "%u whole level"},
		{bob, true, "users/alice/a", false, "other user"},
		{bob, true, "clients/bob-1", true, "%c whole level"},
		{bob, true, "logs/bob-1-out/bob", true, "%c inside a level"},
		{bob, true, "logs/x-out/bob", false, "wrong client id"},
		{bob, true, "pct/%x/100%", true, "other % sequences are literal"},
		{anon, true, "users//a", false, "anonymous (empty username) never matches %u"},
		{Identity{Username: "%c", ClientID: "zz"}, true, "users/zz/a", false, "single-pass substitution"},
		{Identity{Username: "%c", ClientID: "zz"}, true, "users/%c/a", true, "single-pass substitution"},
	})
}

// TestACLPlaceholderInjection covers CVE-2017-7650: identities containing
// wildcards or separators must not widen a pattern.
func TestACLPlaceholderInjection(t *testing.T) {
	a := mustACL(t, `
allow any all users/%u/#
allow any all clients/%c/#
allow any all %u/data
`)
	for _, name := range []string{"+", "#", "a/b", "a+", "x#", "nul\x00", ""} {
		u := Identity{Username: name, ClientID: "ok"}
		c := Identity{Username: "ok", ClientID: name}
		runChecks(t, a, []check{
			{u, false, "users/+/#", false, "username " + name},
			{u, false, "users/#", false, "username " + name},
			{u, true, "users/" + name + "/x", false, "username " + name},
			{u, true, "users/a/b/x", false, "username " + name},
			{c, false, "clients/#", false, "client id " + name},
			{c, true, "clients/a/b/x", false, "client id " + name},
		})
	}
	// A user named like a $ topic cannot reach $SYS through "%u/...".
	runChecks(t, a, []check{
		{Identity{Username: "$SYS"}, true, "$SYS/data", false, "$ injected at level 0"},
		{Identity{Username: "$SYS"}, false, "$SYS/data", false, "$ injected at level 0"},
		{Identity{Username: "bob"}, true, "bob/data", true, "control"},
	})
}

func TestACLDenyOverlap(t *testing.T) {
	a := mustACL(t, `
deny  user bob sub secret/+/keys
allow any      sub #
`)
	runChecks(t, a, []check{
		{bob, false, "#", false, "deny overlaps #"},
		{bob, false, "secret/#", false, "deny overlaps"},
		{bob, false, "+/x/keys", false, "deny overlaps"},
		{bob, false, "secret/x/keys", false, "deny matches"},
		{bob, false, "secret/x/other", true, "disjoint from the deny"},
		{bob, false, "public/#", true, "disjoint from the deny"},
		{alice, false, "#", true, "deny is for bob only"},
	})
}

func TestACLTokenScopes(t *testing.T) {
	a := mustACL(t, `allow any all #`)
	tok := Identity{
		Username:       "bob",
		ClientID:       "c1",
		TokenPublish:   []string{"tele/%u/#"},
		TokenSubscribe: []string{"cmd/%c/+", "broadcast/#"},
	}
	runChecks(t, a, []check{
		{tok, true, "tele/bob/x", true, "in token scope"},
		{tok, true, "tele/alice/x", false, "outside token scope"},
		{tok, true, "other", false, "outside token scope though the ACL allows"},
		{tok, false, "cmd/c1/reboot", true, "in scope"},
		{tok, false, "cmd/c1/+", true, "subset of scope"},
		{tok, false, "cmd/c1/#", false, "wider than scope"},
		{tok, false, "broadcast/#", true, "second scope entry"},
		{tok, false, "#", false, "wider than scope"},
		{tok, false, "$share/g/broadcast/x", true, "shared: inner filter in scope"},
		{tok, false, "$share/g/other", false, "shared: inner filter out of scope"},
	})
	none := Identity{Username: "bob", TokenPublish: []string{}, TokenSubscribe: []string{}}
	runChecks(t, a, []check{
		{none, true, "x", false, "empty scope allows nothing"},
		{none, false, "x", false, "empty scope allows nothing"},
	})
	// The ACL still applies on top of the scope.
	b := mustACL(t, `allow any pub tele/bob/a`)
	runChecks(t, b, []check{
		{tok, true, "tele/bob/a", true, "both allow"},
		{tok, true, "tele/bob/b", false, "scope allows, ACL denies"},
	})
	// Scopes apply with an empty ACL too.
	runChecks(t, nil, []check{{tok, true, "other", false, "scope applies without ACL"}})
	// Wildcard identities do not widen scope placeholders either.
	evil := Identity{Username: "#", TokenPublish: []string{"tele/%u"}}
	runChecks(t, nil, []check{{evil, true, "tele/x", false, "CVE-2017-7650 in scopes"}})
}

func TestACLSharedSubscriptions(t *testing.T) {
	// No $share rules: any group, inner filter checked by ordinary rules.
	a := mustACL(t, `allow any sub jobs/#`)
	runChecks(t, a, []check{
		{bob, false, "$share/any/jobs/#", true, "no $share rules: any group"},
		{bob, false, "$share/any/other/#", false, "inner filter denied"},
		{bob, false, "$share/any/#", false, "inner filter wider than jobs/#"},
		{bob, false, "$share//jobs/x", false, "empty group"},
		{bob, false, "$share/g+/jobs/x", false, "wildcard in group"},
		{bob, false, "$share/+/jobs/x", false, "wildcard group"},
		{bob, false, "$share/g", false, "no filter"},
		{bob, false, "$share/g/", false, "empty filter"},
		{bob, false, "$share/g/a/#/b", false, "invalid inner filter"},
		{bob, true, "$share/g/jobs/x", false, "publishing to $share is refused"},
	})
	// With $share rules, groups are controlled too.
	b := mustACL(t, `
allow role ops      sub $share/workers/jobs/#
deny  any           sub $share/+/jobs/secret
allow any           sub $share/%u/#
allow any           sub jobs/#
allow user alice    sub $SYS/#
allow any           all $share/open/#
`)
	runChecks(t, b, []check{
		{alice, false, "$share/workers/jobs/#", true, "ops may join workers"},
		{alice, false, "$share/workers/jobs/a/+", true, "subset of the group rule"},
		{bob, false, "$share/workers/jobs/#", false, "bob lacks the role"},
		{alice, false, "$share/workers/#", false, "inner filter too wide for the ordinary rules"},
		{bob, false, "$share/bob/jobs/x", true, "group named after the user"},
		{bob, false, "$share/alice/jobs/x", false, "not bob's group"},
		{bob, false, "$share/bob/jobs/secret", false, "deny overlaps"},
		{bob, false, "$share/bob/jobs/#", false, "deny overlaps"},
		{alice, false, "$share/alice/$SYS/#", true, "own group, $SYS granted to alice"},
		{bob, false, "$share/bob/$SYS/#", false, "inner $SYS not granted to bob"},
		{bob, false, "$share/open/jobs/a", true, "\"all\" $share rule works for subscribe"},
		{bob, false, "jobs/#", true, "ordinary subscription ignores $share rules"},
		{Identity{Username: "a+b"}, false, "$share/a+b/jobs/x", false, "invalid group"},
		{bob, true, "jobs/x", false, "$share rules grant nothing for publish"},
	})
	c := mustACL(t, `
allow any sub $share/#
allow any sub #
`)
	runChecks(t, c, []check{
		{bob, false, "$share/g/x/#", true, "$share/# = every group"},
		{bob, false, "$share/g/#", true, "$share/# = every group"},
	})
}

func TestNewACLErrors(t *testing.T) {
	for _, tc := range []struct {
		rule Rule
		want string
	}{
		{Rule{Action: ActionAll, Topic: "a/#/b"}, `acl rule 2: topic "a/#/b": '#' must be the last level`},
		{Rule{Action: ActionAll, Topic: "a+"}, `'+' must be a whole level`},
		{Rule{Action: ActionAll, Topic: ""}, `empty topic`},
		{Rule{Topic: "a"}, `invalid action 0`},
		{Rule{Action: 9, Topic: "a"}, `invalid action 9`},
		{Rule{Action: ActionAll, User: "a", Role: "b", Topic: "a"}, `only one of user, role or anonymous`},
		{Rule{Action: ActionAll, Topic: "$share/g"}, `needs a group and a filter`},
		{Rule{Action: ActionPublish, Topic: "$share/g/a"}, `only apply to subscribe`},
	} {
		_, err := NewACL([]Rule{{Allow: true, Action: ActionAll, Topic: "ok"}, tc.rule})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewACL(%+v) error = %v, want it to contain %q", tc.rule, err, tc.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "acl rule 2: ") {
			t.Errorf("error %q does not name the rule", err)
		}
	}
}

func TestParseACL(t *testing.T) {
	rules, err := ParseACL(strings.NewReader("\ufeff# header\r\n"+
		"allow user alice pub sensors/%u/#\r\n"+
		"  deny anonymous all #  \n"+
		"\n"+
		"allow role ops sub $SYS/#\n"+
		"ALLOW ANY SUBSCRIBE topic with spaces/+\n"), "acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Allow: true, User: "alice", Action: ActionPublish, Topic: "sensors/%u/#"},
		{Anonymous: true, Action: ActionAll, Topic: "#"},
		{Allow: true, Role: "ops", Action: ActionSubscribe, Topic: "$SYS/#"},
		{Allow: true, Action: ActionSubscribe, Topic: "topic with spaces/+"},
	}
	if len(rules) != len(want) {
		t.Fatalf("got %d rules, want %d: %+v", len(rules), len(want), rules)
	}
	for i := range want {
		if rules[i] != want[i] {
			t.Errorf("rule %d = %+v, want %+v", i+1, rules[i], want[i])
		}
		// String renders something ParseACL reads back identically.
		back, err := ParseACL(strings.NewReader(rules[i].String()), "x")
		if err != nil || len(back) != 1 || back[0] != rules[i] {
			t.Errorf("round trip of %q = %+v, %v", rules[i].String(), back, err)
		}
	}
}

func TestParseACLErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"permit any all #", "acl.conf:1: rule must start with allow or deny"},
		{"# ok\nallow", "acl.conf:2: missing subject"},
		{"allow everyone all #", `acl.conf:1: unknown subject "everyone"`},
		{"allow user", `acl.conf:1: "user" needs a name`},
		{"allow role ops", "acl.conf:1: missing action"},
		{"allow any read #", `acl.conf:1: unknown action "read": use pub, sub or all`},
		{"allow any all", "acl.conf:1: missing topic filter"},
		{"\n\nallow any all a/#/b", `acl.conf:3: topic "a/#/b": '#' must be the last level`},
		{"allow any pub $share/g/x", "acl.conf:1: topic \"$share/g/x\": $share rules control"},
		{"allow any all " + strings.Repeat("x", maxLineLen+1), "acl.conf: reading ACL"},
	} {
		_, err := ParseACL(strings.NewReader(tc.text), "acl.conf")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseACL(%.40q) error = %v, want %q", tc.text, err, tc.want)
		}
	}
}

func TestLoadACL(t *testing.T) {
	path := t.TempDir() + "/acl.conf"
	if _, err := LoadACL(path); err == nil || !strings.Contains(err.Error(), "acl file") {
		t.Errorf("missing file error = %v", err)
	}
	writeFile(t, path, "allow any all #\nbogus\n", 0o644)
	if _, err := LoadACL(path); err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Errorf("error %v does not name %s:2", err, path)
	}
	writeFile(t, path, "allow any all #\n", 0o644)
	rules, err := LoadACL(path)
	if err != nil || len(rules) != 1 {
		t.Fatalf("LoadACL = %v, %v", rules, err)
	}
}

// TestACLPublishSubscribeAgree checks that for concrete topics the subset
// evaluation of CanSubscribe agrees with CanPublish on "all" rules.
func TestACLPublishSubscribeAgree(t *testing.T) {
	a := mustACL(t, `
deny  user bob   all  a/secret/+
allow role ops   all  a/#
allow any        all  a/+/x
deny  anonymous  all  #
allow any        all  pub/%u/%c
allow any        all  $SYS/+
`)
	topics := []string{"a", "a/b", "a/secret/x", "a/b/x", "a/secret", "pub/bob/bob-1", "pub/alice/alice-1", "$SYS/x", "$SYS/x/y", "x"}
	for _, id := range []Identity{alice, bob, anon, {Username: "carol", ClientID: "c", Roles: []string{"ops"}}} {
		for _, topic := range topics {
			if p, s := a.CanPublish(id, topic), a.CanSubscribe(id, topic); p != s {
				t.Errorf("%q on %q: publish %v but subscribe %v", id.Username, topic, p, s)
			}
		}
	}
}
