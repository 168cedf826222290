package topic

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"+/x", "/x", true}, {"#", "$SYS/x", false}, {"+/x", "$q/x", false}, {"$q/#", "$q/x", true},
		{"a/b", "a/b/c", false},
	} {
		if got := Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	for f, want := range map[string]bool{"a/#": true, "#": true, "+/+": true, "": false, "a/#/b": false, "a+": false, "a/b#": false} {
		if got := ValidFilter(f); got != want {
			t.Errorf("ValidFilter(%q) = %v, want %v", f, got, want)
		}
	}
}

// refMatch is the obvious implementation (split both, compare level by
// level) that Match must agree with.
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(t) || l != "+" && l != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"a/#", "a"}, {"a/#", "a/b/c"}, {"a/+", "a/b"}, {"a/+", "a/b/c"}, {"+/x", "/x"},
		{"#", "$SYS/x"}, {"+/x", "$q/x"}, {"$q/#", "$q/x"}, {"a/b", "a/b/c"}, {"", ""},
		{"a/b", "a"}, {"+/#", "a"}, {"a//", "a//"}, {"/", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if got, want := Match(filter, topic), refMatch(filter, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, the split-based reference says %v", filter, topic, got, want)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Match("sensors/+/temp/#", "sensors/42/temp/a/b")
	}
}
