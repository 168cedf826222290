package frame

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckString(t *testing.T) {
	tests := []struct {
		in   string
		want stringFault
	}{
		{"", stringOK},
		{"a/b c", stringOK},
		{bom, stringOK},
		{astral, stringOK},
		{"\u00a0\u07ff\u0800\ud7ff\ue000\ufdcf\ufdf0\ufffd\U0010fffd", stringOK},
		{badUTF8, stringInvalid},
		{overlong, stringInvalid},
		{truncatedSeq, stringInvalid},
		{"\xf4\x90\x80\x80", stringInvalid}, // above U+10FFFF
		{surrogate, stringSurrogate},
		{"\xed\xbf\xbf", stringSurrogate}, // U+DFFF
		{nul, stringNull},
		{ctrl, stringControl},
		{"\x1f", stringControl},
		{"\t", stringControl},
		{del, stringControl},
		{c1, stringControl},
		{"\u009f", stringControl},
		{nonchar, stringNoncharacter},
		{"\ufffe", stringNoncharacter},
		{nonchar2, stringNoncharacter},
		{"\ufdef", stringNoncharacter},
		{nonchar3, stringNoncharacter},
		{"\U0010ffff", stringNoncharacter},
	}
	for _, tc := range tests {
		if got := checkString([]byte(tc.in)); got != tc.want {
			t.Errorf("checkString(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidTopic(t *testing.T) {
	for _, tc := range []struct {
		t  string
		ok bool
	}{
		{"a", true}, {"a/b", true}, {"/", true}, {"/a/", true}, {"$SYS/x", true}, {"a b", true},
		{"*", true}, {">", true}, {"a\tb", true}, {bom, true}, {strings.Repeat("x", 65535), true},
		{"", false}, {"+", false}, {"#", false}, {"a/+", false}, {"a/#", false}, {"a+", false},
		{nul, false}, {badUTF8, false}, {surrogate, false}, {strings.Repeat("x", 65536), false},
	} {
		if got := ValidTopic(tc.t); got != tc.ok {
			t.Errorf("ValidTopic(%q) = %v, want %v", clip([]byte(tc.t)), got, tc.ok)
		}
	}
}

func TestValidFilter(t *testing.T) {
	for _, tc := range []struct {
		f  string
		ok bool
	}{
		{"a", true}, {"a/b", true}, {"#", true}, {"+", true}, {"a/#", true}, {"a/+", true},
		{"+/+", true}, {"/+", true}, {"+/", true}, {"/#", true}, {"a/+/b/#", true}, {"/", true}, {"//", true},
		{"$SYS/#", true}, {"$share", true}, {"$share/", false}, {"$shared/a", true}, {"$SHARE/g", true},
		{"$share/g/a", true}, {"$share/g/#", true}, {"$share/g/+/b", true}, {"$share/g//", true},
		{"$share/g/$share/h/a", true}, {"$share/g-1.x/a/b", true},
		{"", false}, {"a/#/b", false}, {"#/a", false}, {"a#", false}, {"a/b#", false}, {"a+", false},
		{"+a", false}, {"a/+b/c", false}, {"++", false}, {"##", false}, {"a/##", false},
		{"$share/g", false}, {"$share//a", false}, {"$share/+/a", false}, {"$share/#/a", false},
		{"$share/g+/a", false}, {"$share/g/", false}, {"$share/g/a#", false}, {"$share/g/a/#/b", false},
		{nul, false}, {"a/\x00", false}, {"$share/\x00/0", false}, {badUTF8, false}, {strings.Repeat("x", 65536), false},
	} {
		if got := ValidFilter(tc.f); got != tc.ok {
			t.Errorf("ValidFilter(%q) = %v, want %v", tc.f, got, tc.ok)
		}
		if got := refFilter(tc.f); got != tc.ok {
			t.Errorf("refFilter(%q) = %v, want %v (the reference is wrong)", tc.f, got, tc.ok)
		}
	}
}

// refTopic and refFilter restate the rules as plainly as possible, by
// splitting into levels, to cross-check the byte-scanning implementations.
func refTopic(t string) bool {
	return t != "" && len(t) <= 65535 && utf8.ValidString(t) &&
		!strings.ContainsAny(t, "+#\x00")
}

func refFilter(f string) bool {
	if f == "" || len(f) > 65535 || !utf8.ValidString(f) || strings.Contains(f, "\x00") {
		return false
	}
	levels := strings.Split(f, "/")
	if strings.HasPrefix(f, "$share/") {
		// $share / {ShareName} / {filter...}
		if len(levels) < 3 {
			return false
		}
		group := levels[1]
		if group == "" || strings.ContainsAny(group, "+#") {
			return false
		}
		levels = levels[2:]
		if strings.Join(levels, "/") == "" {
			return false
		}
	}
	for i, l := range levels {
		switch {
		case l == "#":
			if i != len(levels)-1 {
				return false
			}
		case l == "+":
		case strings.ContainsAny(l, "+#"):
			return false
		}
	}
	return true
}

func FuzzValidFilter(f *testing.F) {
	for _, s := range []string{
		"a", "a/b", "#", "+", "a/#", "a/+/b", "/", "$SYS/#", "$share/g/a", "$share/g", "$share//a",
		"$share/+/a", "$share/g/", "a/#/b", "a+", "a#", "$share", "$shared/x", "$share/g/#", "a\x00",
		"\xff", "+/+/#", "//", "$share/g//", "$share/g/$share/h/#",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidFilter(s), refFilter(s); got != want {
			t.Fatalf("ValidFilter(%q) = %v, reference says %v", s, got, want)
		}
		if got, want := ValidTopic(s), refTopic(s); got != want {
			t.Fatalf("ValidTopic(%q) = %v, reference says %v", s, got, want)
		}
		// Every valid topic name is a valid filter, unless it looks like a
		// shared subscription ("$share/g" is a fine topic, a bad filter).
		if ValidTopic(s) && !strings.HasPrefix(s, sharePrefix) && !ValidFilter(s) {
			t.Fatalf("%q is a valid topic but not a valid filter", s)
		}
		// checkString is stricter than the UTF-8 part of both.
		if checkString([]byte(s)) == stringOK && !utf8.ValidString(s) {
			t.Fatalf("checkString accepts invalid UTF-8 %q", s)
		}
	})
}
