package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// This file holds the MQTT topic algebra the ACL is built on. Everything works
// on topics and filters taken level by level ('/' separates levels), without
// splitting them: these run for every publish and every delivery, which must
// not allocate.
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
// Both are decided exactly, level by level, without enumerating topics. P is
// a rule's (or token scope's) pattern: its %u and %c are substituted from an
// identity as its levels are compared, never into a new string.

const (
	levelSep    = "/"
	wildOne     = "+"
	wildMulti   = "#"
	sharePrefix = "$share"
)

// splitLevels splits a topic or filter into its levels. "" yields [""] (one
// empty level), matching how MQTT treats "a//b" as three levels.
func splitLevels(s string) []string { return strings.Split(s, levelSep) }

// levels walks the levels of a topic or filter as splitLevels would split
// them ("" is one empty level, "a/" is "a" then ""), without allocating.
type levels struct {
	rest string
	done bool
}

// next returns the next level, or ok false past the last one.
func (l *levels) next() (level string, ok bool) {
	if l.done {
		return "", false
	}
	level, l.rest, ok = strings.Cut(l.rest, levelSep)
	l.done = !ok
	return level, true
}

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
	if !strings.ContainsAny(s, wildOne+wildMulti) {
		return nil // the level checks below are all about wildcards
	}
	ls := levels{rest: s}
	for l, ok := ls.next(); ok; l, ok = ls.next() {
		switch {
		case l == wildMulti:
			if !ls.done {
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

// levelIs reports whether pattern level l, with "%u" and "%c" replaced by
// id's username and client id, equals s. The replacement is one left-to-
// right pass (a username containing "%c" is not expanded again; "%%u" is
// '%' then the username), done while comparing rather than into a new
// string. With id nil, l is taken literally.
func levelIs(l, s string, id *Identity) bool {
	if id == nil || strings.IndexByte(l, '%') < 0 {
		return l == s
	}
	for i := 0; i < len(l); i++ {
		if l[i] == '%' && i+1 < len(l) && (l[i+1] == 'u' || l[i+1] == 'c') {
			v := id.Username
			if l[i+1] == 'c' {
				v = id.ClientID
			}
			if !strings.HasPrefix(s, v) {
				return false
			}
			s = s[len(v):]
			i++
			continue
		}
		if s == "" || s[0] != l[i] {
			return false
		}
		s = s[1:]
	}
	return s == ""
}

// levelIsDollar reports whether pattern level l, substituted from id (nil:
// literally), starts with '$'.
func levelIsDollar(l string, id *Identity) bool {
	for id != nil && len(l) >= 2 && l[0] == '%' {
		var v string
		switch l[1] {
		case 'u':
			v = id.Username
		case 'c':
			v = id.ClientID
		default:
			return false // a literal '%'
		}
		if v != "" {
			return isDollar(v)
		}
		l = l[2:]
	}
	return isDollar(l)
}

// normRoot rewrites the filter "#" as the equivalent "+/#". Both match every
// topic whose first level does not start with '$'; the rewrite lets subset
// and overlap treat '#' uniformly as "this level's parent and everything
// below", which is only true of "#" below the first level (a topic always has
// at least one level, so a bare "#" has no parent to match).
func normRoot(f string) string {
	if f == wildMulti {
		return wildOne + levelSep + wildMulti
	}
	return f
}

// subset reports whether every concrete topic matched by filter f is also
// matched by pattern p (Topics(f) ⊆ Topics(p)), p's placeholders substituted
// from id (see levelIs). Both must be valid filters; a pattern's
// substitution must have been checked (placeholdersOK). A concrete topic is
// a filter without wildcards, so subset(p, topic, id) is plain "p matches
// topic".
func subset(p, f string, id *Identity) bool {
	pl, fl := levels{rest: normRoot(p)}, levels{rest: normRoot(f)}
	for i := 0; ; i++ {
		x, xok := pl.next()
		y, yok := fl.next()
		if xok && x == wildMulti {
			// '#' (never at level 0 after normRoot) covers the rest of f,
			// including "no further levels".
			return true
		}
		if !yok {
			return !xok // f ends here; p must end here too
		}
		if !xok {
			return false // f has topics with more levels than p allows
		}
		switch y {
		case wildMulti:
			// f matches the parent and every deeper topic: only a '#' in p
			// (handled above) covers that.
			return false
		case wildOne:
			// f's level ranges over every value (non-'$' values at level 0,
			// which is exactly what a '+' in p matches there too).
			if x != wildOne {
				return false
			}
		default:
			switch {
			case x == wildOne:
				if i == 0 && isDollar(y) {
					return false // [MQTT-4.7.2-1]
				}
			case !levelIs(x, y, id):
				return false
			}
		}
	}
}

// overlap reports whether some concrete topic is matched by both pattern p
// (substituted from id, as for subset) and filter f. Both must be valid
// filters. The relation is symmetric.
func overlap(p, f string, id *Identity) bool {
	pl, fl := levels{rest: normRoot(p)}, levels{rest: normRoot(f)}
	for i := 0; ; i++ {
		x, xok := pl.next()
		y, yok := fl.next()
		if (xok && x == wildMulti) || (yok && y == wildMulti) {
			// '#' (never at level 0 after normRoot) absorbs whatever the
			// other side needs from here on, including nothing ("a/#"
			// matches "a"). Every valid filter matches at least one
			// topic, so they meet.
			return true
		}
		if !xok || !yok {
			return !xok && !yok
		}
		switch {
		case x == wildOne && y == wildOne:
		case x == wildOne:
			if i == 0 && isDollar(y) {
				return false
			}
		case y == wildOne:
			if i == 0 && levelIsDollar(x, id) {
				return false
			}
		case !levelIs(x, y, id):
			return false
		}
	}
}
