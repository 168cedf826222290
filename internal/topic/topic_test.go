package topic

import "testing"

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
