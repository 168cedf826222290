package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzParseUsers: parsing arbitrary input must not panic, and an accepted
// file has exactly one valid user per non-comment line.
func FuzzParseUsers(f *testing.F) {
	hash := "$2a$04$abcdefghijklmnopqrstuu5X8Bq1mZpY6Q0GgC8cJx1N0kJ3p0Z9K2" // shape only
	f.Add("alice:" + hash + ":ops,dev\n# c\n\nbob:" + hash + "\n")
	f.Add("alice:" + hash + "\nalice:" + hash)
	f.Add(":::\n")
	f.Add("\ufeffx:$2y$10$" + strings.Repeat("a", 53) + ": a , b ,\r\n")
	f.Fuzz(func(t *testing.T, data string) {
		u, err := ParseUsers(strings.NewReader(data), "fuzz")
		if err != nil {
			if u != nil {
				t.Fatal("non-nil Users with an error")
			}
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		lines := 0
		for i, raw := range strings.Split(data, "\n") {
			line, skip := cleanLine(raw, i == 0)
			if skip {
				continue
			}
			lines++
			pl, err := parsePasswdLine(line)
			if err != nil {
				t.Fatalf("accepted file has invalid line %q: %v", line, err)
			}
			if ValidateUsername(pl.user) != nil {
				t.Fatalf("accepted invalid username %q", pl.user)
			}
			if _, ok := u.users[pl.user]; !ok {
				t.Fatalf("user %q missing", pl.user)
			}
		}
		if u.Len() != lines {
			t.Fatalf("Len = %d, but %d user lines", u.Len(), lines)
		}
	})
}

// FuzzParseACL: parsing must not panic; accepted rules compile, and each
// rule's String form parses back to the same rule.
func FuzzParseACL(f *testing.F) {
	f.Add("allow user alice pub sensors/%u/#\ndeny anonymous all #\nallow role ops sub $SYS/#\n")
	f.Add("allow any sub $share/%u/jobs/#\n# c\n")
	f.Add("deny any all a/#/b")
	f.Fuzz(func(t *testing.T, data string) {
		rules, err := ParseACL(strings.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		if _, err := NewACL(rules); err != nil {
			t.Fatalf("ParseACL accepted rules NewACL rejects: %v", err)
		}
		for _, r := range rules {
			back, err := ParseACL(strings.NewReader(r.String()), "x")
			if err != nil || len(back) != 1 || back[0] != r {
				// Topics are trimmed, so a topic with surrounding space
				// (which the parser cannot produce) is the only exception.
				t.Fatalf("round trip of %+v via %q = %+v, %v", r, r.String(), back, err)
			}
		}
	})
}

// concreteTopics returns some concrete topics matched by filter: wildcards
// replaced by sample values.
func concreteTopics(filter string) []string {
	var out []string
	for _, fill := range []struct{ plus, hash string }{{"x", ""}, {"", "x/y"}, {"zz", "x"}} {
		levels := splitLevels(filter)
		var t []string
		for i, l := range levels {
			switch l {
			case wildOne:
				t = append(t, fill.plus)
			case wildMulti:
				if fill.hash != "" {
					t = append(t, strings.Split(fill.hash, "/")...)
				} else if i == 0 {
					t = append(t, "x") // "#" needs at least one level
				}
			default:
				t = append(t, l)
			}
		}
		out = append(out, strings.Join(t, "/"))
	}
	return out
}

// smallFilter reports whether the brute-force oracle is affordable for f.
func smallFilter(f string) bool { return len(f) <= 24 && strings.Count(f, "/") <= 2 }

// FuzzACLMatch checks the ACL against its defining invariants with two
// random rules, a random filter, topic and identity.
func FuzzACLMatch(f *testing.F) {
	f.Add("devices/%u/#", false, "#", "devices/bob/+/temp", "devices/bob/1/temp", "bob", "c1")
	f.Add("a/+", true, "a/#", "a/#", "a/b", "u", "c")
	f.Add("$SYS/#", false, "+/#", "#", "$SYS/x", "u", "c")
	f.Add("%u/%c", true, "%c/#", "+/c", "u/c", "+", "#")
	f.Add("x/%u-%c/y", false, "x/#", "x/+/y", "x/a-b/y", "a", "b")
	f.Add("$share/%u/#", false, "jobs/#", "jobs/+", "jobs/1", "g", "c")
	f.Fuzz(func(t *testing.T, p1 string, deny1 bool, p2, filter, topic, user, client string) {
		a, err := NewACL([]Rule{
			{Allow: !deny1, Action: ActionAll, Topic: p1},
			{Allow: true, Action: ActionAll, Topic: p2},
		})
		if err != nil {
			if validateFilter(p1) == nil && validateFilter(p2) == nil && !isShareRule(p1) && !isShareRule(p2) {
				t.Fatalf("NewACL rejected valid patterns: %v", err)
			}
			return
		}
		id := Identity{Username: user, ClientID: client, Roles: []string{"r"}}

		canPub := a.CanPublish(id, topic)
		canSub := a.CanSubscribe(id, filter)
		_ = a.CanSubscribe(id, "$share/"+user+"/"+filter)

		if canPub && validateTopicName(topic) != nil {
			t.Fatalf("published to invalid topic %q", topic)
		}
		if canSub && validateFilter(filter) != nil {
			t.Fatalf("subscribed to invalid filter %q", filter)
		}

		ordinary := func(s string) bool { return validateFilter(s) == nil && !strings.HasPrefix(s, "$share/") }

		// Subscribe ⇒ every concrete topic the filter can deliver is
		// readable (all rules are "all", so readable = publishable).
		if canSub && ordinary(filter) {
			for _, ct := range concreteTopics(filter) {
				if validateTopicName(ct) == nil && !a.CanPublish(id, ct) {
					t.Fatalf("may subscribe %q but may not publish to %q", filter, ct)
				}
			}
			if validateTopicName(topic) == nil && refMatch(splitLevels(filter), splitLevels(topic)) && !a.CanPublish(id, topic) {
				t.Fatalf("may subscribe %q but may not publish to matching %q", filter, topic)
			}
			// Monotonic: a narrower filter is allowed too.
			if ordinary(topic) && subset(filter, topic, nil) && !a.CanSubscribe(id, topic) {
				t.Fatalf("may subscribe %q but not to its subset %q", filter, topic)
			}
		}
		// For a concrete topic, subscribe and publish agree.
		if validateTopicName(topic) == nil && !strings.HasPrefix(topic, "$share/") {
			if s := a.CanSubscribe(id, topic); s != canPub {
				t.Fatalf("topic %q: publish %v, subscribe %v", topic, canPub, s)
			}
		}
		// Without $share rules a shared subscription is decided by its
		// filter alone.
		if ordinary(filter) && !isShareRule(p1) && !isShareRule(p2) {
			for _, g := range []string{"g", user} {
				if validateFilter(g) == nil && g != "" && !strings.ContainsAny(g, "/+#") {
					if s := a.CanSubscribe(id, "$share/"+g+"/"+filter); s != canSub {
						t.Fatalf("$share/%s/%s = %v, plain = %v", g, filter, s, canSub)
					}
				}
			}
		}
		// Wildcards in identities never widen: a rule using a placeholder
		// with a bad value behaves as if absent.
		if !safeIdentityValue(user) && strings.Contains(p1+p2, "%u") {
			var keep []Rule
			for _, r := range []Rule{{Allow: !deny1, Action: ActionAll, Topic: p1}, {Allow: true, Action: ActionAll, Topic: p2}} {
				if !strings.Contains(r.Topic, "%u") {
					keep = append(keep, r)
				}
			}
			if len(keep) == 0 {
				// An ACL whose every rule is inert denies everything.
				if canPub || canSub {
					t.Fatalf("inert %%u rules granted access for username %q", user)
				}
			} else if b, _ := NewACL(keep); b.CanPublish(id, topic) != canPub || b.CanSubscribe(id, filter) != canSub {
				t.Fatalf("username %q: %%u rules were not inert", user)
			}
		}
		// The level algebra agrees with brute force on small inputs.
		for _, p := range []string{p1, p2} {
			if ordinary(p) && ordinary(filter) && smallFilter(p) && smallFilter(filter) {
				pl, fl := splitLevels(p), splitLevels(filter)
				sub, over := bruteRelations(pl, fl)
				if subset(p, filter, nil) != sub || overlap(p, filter, nil) != over {
					t.Fatalf("p=%q f=%q: subset %v/%v overlap %v/%v (got/brute)", p, filter, subset(p, filter, nil), sub, overlap(p, filter, nil), over)
				}
			}
		}
	})
}

// FuzzJWTVerify: arbitrary tokens must not panic, and any token that
// verifies yields a username.
func FuzzJWTVerify(f *testing.F) {
	good, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a", "publish": []string{"x/#"}}).SignedString([]byte(testSecret))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Add("a.b.c")
	v, err := NewJWT(JWTConfig{Secret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_900_000_000, 0)
	f.Fuzz(func(t *testing.T, token string) {
		_ = LooksLikeJWT([]byte(token))
		id, err := v.Verify(token, now)
		if err == nil && id.Username == "" {
			t.Fatal("verified token without username")
		}
	})
}
