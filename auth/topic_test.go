package auth

import (
	"strings"
	"testing"
)

// refMatch is a deliberately naive, independent MQTT matcher used as the
// oracle for the level-algebra in topic.go.
func refMatch(f, t []string) bool {
	if len(t) > 0 && strings.HasPrefix(t[0], "$") && len(f) > 0 && (f[0] == "+" || f[0] == "#") {
		return false // [MQTT-4.7.2-1]
	}
	var rec func(f, t []string) bool
	rec = func(f, t []string) bool {
		switch {
		case len(f) == 0:
			return len(t) == 0
		case f[0] == "#":
			return true
		case len(t) == 0:
			return false
		case f[0] == "+" || f[0] == t[0]:
			return rec(f[1:], t[1:])
		}
		return false
	}
	return rec(f, t)
}

// universe enumerates every topic up to depth levels deep built from the
// literals of the given filters plus fresh values ("zz", "$zz", ""), which
// is enough to find a witness for any subset/overlap difference.
func universe(depth int, filters ...[]string) [][]string {
	vals := map[string]bool{"zz": true, "$zz": true, "": true}
	for _, f := range filters {
		for _, l := range f {
			if l != "+" && l != "#" {
				vals[l] = true
			}
		}
	}
	var vs []string
	for v := range vals {
		vs = append(vs, v)
	}
	var out [][]string
	var gen func(prefix []string)
	gen = func(prefix []string) {
		if len(prefix) > 0 {
			out = append(out, append([]string(nil), prefix...))
		}
		if len(prefix) == depth {
			return
		}
		for _, v := range vs {
			gen(append(prefix, v))
		}
	}
	gen(nil)
	return out
}

// bruteRelations computes subset(p, f) and overlap(p, f) by enumeration.
func bruteRelations(p, f []string) (sub, over bool) {
	sub = true
	for _, t := range universe(max(len(p), len(f))+1, p, f) {
		inF, inP := refMatch(f, t), refMatch(p, t)
		if inF && !inP {
			sub = false
		}
		if inF && inP {
			over = true
		}
	}
	return sub, over
}

func TestValidateFilter(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{"a/b", ""},
		{"#", ""},
		{"+", ""},
		{"a/+/c/#", ""},
		{"/", ""},
		{"a//b", ""},
		{"$SYS/#", ""},
		{"", "empty topic"},
		{"a/#/b", "'#' must be the last level"},
		{"a#", "'#' must be a whole level"},
		{"a/b+", "'+' must be a whole level"},
		{"a\x00b", "NUL"},
		{"a/\xff", "UTF-8"},
	} {
		err := validateFilter(tc.in)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("validateFilter(%q) = %v, want error containing %q", tc.in, err, tc.wantErr)
		}
	}
	if validateTopicName("a/+") == nil || validateTopicName("#") == nil || validateTopicName("a/b") != nil {
		t.Error("validateTopicName must reject wildcards and accept plain topics")
	}
}

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false}, // mochi's ledger bug: '+' is one level only
		{"a/+", "a", false},
		{"a/+", "a/", true}, // '+' matches an empty level
		{"+/+", "/", true},
		{"+", "", true},
		{"a/#", "a", true}, // '#' includes the parent
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"#", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false},
		{"+/#", "$SYS", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"$SYS/+", "$SYS/a", true},
		{"a/+/#", "$x/b", false},
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/", false},
	} {
		got := subset(tc.filter, tc.topic, nil)
		if got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
		if ref := refMatch(splitLevels(tc.filter), splitLevels(tc.topic)); ref != tc.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v (oracle broken)", tc.filter, tc.topic, ref, tc.want)
		}
	}
}

func TestSubsetOverlap(t *testing.T) {
	for _, tc := range []struct {
		p, f      string
		sub, over bool
	}{
		{"devices/bob/#", "devices/bob/+/temp", true, true},
		{"devices/bob/#", "devices/#", false, true},
		{"devices/bob/#", "#", false, true},
		{"devices/bob/#", "devices/bob", true, true},
		{"a/+", "a/+", true, true},
		{"a/+", "a/#", false, true},
		{"a/+", "a/b/+", false, false},
		{"a/#", "a/+/+", true, true},
		{"a/+/c", "a/b/+", false, true},
		{"#", "+/#", true, true},
		{"#", "$SYS/#", false, false},
		{"+/#", "$SYS/#", false, false},
		{"$SYS/#", "#", false, false},
		{"$SYS/#", "$SYS/+", true, true},
		{"+", "$x", false, false},
		{"+", "x", true, true},
		{"x", "+", false, true},
		{"a/b", "a/c", false, false},
		{"a/#", "b/#", false, false},
		{"a/b/#", "a/+", false, true},
	} {
		p, f := tc.p, tc.f
		if got := subset(p, f, nil); got != tc.sub {
			t.Errorf("subset(%q, %q) = %v, want %v", tc.p, tc.f, got, tc.sub)
		}
		if got := overlap(p, f, nil); got != tc.over {
			t.Errorf("overlap(%q, %q) = %v, want %v", tc.p, tc.f, got, tc.over)
		}
		if got := overlap(f, p, nil); got != tc.over {
			t.Errorf("overlap(%q, %q) = %v, want %v (not symmetric)", tc.f, tc.p, got, tc.over)
		}
	}
}

// TestSubsetOverlapExhaustive checks subset and overlap against brute-force
// enumeration for every pair of small filters over a tiny alphabet.
func TestSubsetOverlapExhaustive(t *testing.T) {
	levels := []string{"a", "$s", "", "+", "#"}
	var filters [][]string
	var gen func(prefix []string)
	gen = func(prefix []string) {
		if len(prefix) > 0 && validateFilter(strings.Join(prefix, "/")) == nil {
			filters = append(filters, append([]string(nil), prefix...))
		}
		if len(prefix) == 3 || (len(prefix) > 0 && prefix[len(prefix)-1] == "#") {
			return
		}
		for _, l := range levels {
			gen(append(prefix, l))
		}
	}
	gen(nil)
	if testing.Short() {
		filters = filters[:min(len(filters), 40)]
	}
	for _, p := range filters {
		for _, f := range filters {
			wantSub, wantOver := bruteRelations(p, f)
			if got := subset(strings.Join(p, "/"), strings.Join(f, "/"), nil); got != wantSub {
				t.Fatalf("subset(%q, %q) = %v, brute force says %v", strings.Join(p, "/"), strings.Join(f, "/"), got, wantSub)
			}
			if got := overlap(strings.Join(p, "/"), strings.Join(f, "/"), nil); got != wantOver {
				t.Fatalf("overlap(%q, %q) = %v, brute force says %v", strings.Join(p, "/"), strings.Join(f, "/"), got, wantOver)
			}
		}
	}
}
