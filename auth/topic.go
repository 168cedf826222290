package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// This file holds the MQTT topic algebra the ACL is built on. Everything works
// on topics and filters split into levels at '/'.
//
// The set of concrete topics a filter F matches, Topics(F), follows MQTT 3.1.1
// and 5.0 section 4.7:
//
//   - '+' matches exactly one level, which may be empty;
//   - '#' (last level only) matches the parent level and any number of
//     further levels: "a/#" matches "a", "a/b" and "a/b/c";
//   - a filter whose first level is '+' or '#' does not match topics whose
//     first level starts with '$' [MQTT-4.7.2-1].
//
// On top of matching, the ACL needs two set relations between filters:
//
//	subset(P, F):  Topics(F) ⊆ Topics(P)   (everything F can deliver, P allows)
//	overlap(P, F): Topics(F) ∩ Topics(P) ≠ ∅ (P and F share at least one topic)
//
// Both are decided exactly, level by level, without enumerating topics.

const (
	levelSep    = "/"
	wildOne     = "+"
	wildMulti   = "#"
	sharePrefix = "$share"
)

// splitLevels splits a topic or filter into its levels. "" yields [""] (one
// empty level), matching how MQTT treats "a//b" as three levels.
func splitLevels(s string) []string { return strings.Split(s, levelSep) }

// validateFilter reports whether s is a syntactically valid MQTT topic filter:
// non-empty valid UTF-8 without NUL, '+' and '#' only as whole levels, and '#'
// only as the last level. The error says what is wrong and how to fix it.
func validateFilter(s string) error {
	if s == "" {
		return errors.New("empty topic: use '#' for every topic")
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL character, which MQTT forbids in topics")
	}
	levels := splitLevels(s)
	for i, l := range levels {
		switch {
		case l == wildMulti:
			if i != len(levels)-1 {
				return errors.New("'#' must be the last level (write \"a/#\", not \"a/#/b\")")
			}
		case l == wildOne:
		case strings.Contains(l, wildMulti):
			return fmt.Errorf("level %q: '#' must be a whole level (write \"a/#\", not \"a#\")", l)
		case strings.Contains(l, wildOne):
			return fmt.Errorf("level %q: '+' must be a whole level (write \"a/+/b\", not \"a+/b\")", l)
		}
	}
	return nil
}

// validateTopicName reports whether s is a valid concrete topic name (what a
// client may publish to): a valid filter without any wildcard.
func validateTopicName(s string) error {
	if err := validateFilter(s); err != nil {
		return err
	}
	if strings.ContainsAny(s, wildOne+wildMulti) {
		return errors.New("wildcards '+' and '#' are not allowed in a topic name")
	}
	return nil
}

// isDollar reports whether a literal level starts with '$'.
func isDollar(level string) bool { return strings.HasPrefix(level, "$") }

// rootMulti is the level form of a bare "#" filter.
var rootMulti = []string{wildOne, wildMulti}

// normRoot rewrites the filter "#" as the equivalent "+/#". Both match every
// topic whose first level does not start with '$'; the rewrite lets subset
// and overlap treat '#' uniformly as "this level's parent and everything
// below", which is only true of "#" below the first level (a topic always has
// at least one level, so a bare "#" has no parent to match).
func normRoot(f []string) []string {
	if len(f) == 1 && f[0] == wildMulti {
		return rootMulti
	}
	return f
}

// subset reports whether every concrete topic matched by filter f is also
// matched by pattern p (Topics(f) ⊆ Topics(p)). Both must be valid filters.
// A concrete topic is a filter without wildcards, so subset(p, topic) is
// plain "p matches topic".
func subset(p, f []string) bool {
	p, f = normRoot(p), normRoot(f)
	for i := 0; ; i++ {
		if i < len(p) && p[i] == wildMulti {
			// '#' (never at level 0 after normRoot) covers the rest of f,
			// including "no further levels".
			return true
		}
		if i == len(f) {
			return i == len(p) // f ends here; p must end here too
		}
		if i == len(p) {
			return false // f has topics with more levels than p allows
		}
		switch f[i] {
		case wildMulti:
			// f matches the parent and every deeper topic: only a '#' in p
			// (handled above) covers that.
			return false
		case wildOne:
			// f's level ranges over every value (non-'$' values at level 0,
			// which is exactly what a '+' in p matches there too).
			if p[i] != wildOne {
				return false
			}
		default:
			switch {
			case p[i] == wildOne:
				if i == 0 && isDollar(f[i]) {
					return false // [MQTT-4.7.2-1]
				}
			case p[i] != f[i]:
				return false
			}
		}
	}
}

// overlap reports whether some concrete topic is matched by both a and b.
// Both must be valid filters. The relation is symmetric.
func overlap(a, b []string) bool {
	a, b = normRoot(a), normRoot(b)
	for i := 0; ; i++ {
		if (i < len(a) && a[i] == wildMulti) || (i < len(b) && b[i] == wildMulti) {
			// '#' (never at level 0 after normRoot) absorbs whatever the
			// other side needs from here on, including nothing ("a/#"
			// matches "a"). Every valid filter matches at least one
			// topic, so they meet.
			return true
		}
		if i == len(a) || i == len(b) {
			return i == len(a) && i == len(b)
		}
		x, y := a[i], b[i]
		switch {
		case x == wildOne && y == wildOne:
		case x == wildOne:
			if i == 0 && isDollar(y) {
				return false
			}
		case y == wildOne:
			if i == 0 && isDollar(x) {
				return false
			}
		case x != y:
			return false
		}
	}
}

// matchTopic reports whether filter f matches the concrete topic t.
func matchTopic(f, t []string) bool { return subset(f, t) }
