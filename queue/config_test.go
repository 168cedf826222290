package queue

import (
	"strings"
	"testing"
	"time"
)

func TestSettingsValidate(t *testing.T) {
	ok := Defaults()
	ok.Name = "jobs"
	ok.Filter = "jobs/#"
	if errs := ok.Validate("queues[0]"); len(errs) != 0 {
		t.Fatalf("defaults with a name: %v", errs)
	}
	for _, tc := range []struct {
		edit func(*Settings)
		want string
	}{
		{func(s *Settings) { s.Name = "" }, "queues[0].name: missing"},
		{func(s *Settings) { s.Name = "a/b" }, "queues[0].name: \"a/b\": a share name cannot contain"},
		{func(s *Settings) { s.Name = "jobs-*" }, "queues[0].filter: a declared queue needs a plain name"},
		{func(s *Settings) { s.Filter = "a/#/b" }, "queues[0].filter: \"a/#/b\" is not a valid topic filter"},
		{func(s *Settings) { s.Strategy = "fastest" }, "queues[0].strategy: \"fastest\": use round_robin"},
		{func(s *Settings) { s.Overflow = "block" }, "queues[0].overflow: \"block\": use reject_new or drop_oldest"},
		{func(s *Settings) { s.MaxDeliveries = 0 }, "queues[0].max_deliveries: 0: want 1 to 255"},
		{func(s *Settings) { s.DeadLetterTopic = "dead/#" }, "queues[0].dead_letter_topic"},
		{func(s *Settings) { s.MessageTTL = -time.Second }, "queues[0].message_ttl: must not be negative"},
		{func(s *Settings) { s.VisibilityTimeout = -time.Second }, "queues[0].visibility_timeout"},
		{func(s *Settings) { s.MaxLength = -1 }, "queues[0].max_length"},
	} {
		s := ok
		tc.edit(&s)
		errs := s.Validate("queues[0]")
		if len(errs) == 0 || !strings.Contains(errs[0].Error(), tc.want) {
			t.Errorf("want an error containing %q, got %v", tc.want, errs)
		}
	}
}

func TestMatchSettings(t *testing.T) {
	entries := []Settings{{Name: "jobs-*", Strategy: Random}, {Name: "jobs-urgent", Strategy: LeastInflight}}
	if s := match(entries, Defaults(), "jobs-urgent"); s.Strategy != Random {
		t.Errorf("first matching entry must win: got %q", s.Strategy)
	}
	if s := match(entries, Defaults(), "other"); s.Strategy != RoundRobin || s.Name != "other" || s.MaxDeliveries != 5 {
		t.Errorf("defaults for an unmatched group: %+v", s)
	}
}

func TestMemberOf(t *testing.T) {
	for _, tc := range []struct {
		in        string
		group, f  string
		wantMatch bool
	}{
		{"$share/g/a/b", "g", "a/b", true},
		{"$share/g/#", "g", "#", true},
		{"$share//a", "", "", false},
		{"$share/g", "", "", false},
		{"a/b", "", "", false},
	} {
		g, f, ok := memberOf(tc.in)
		if ok != tc.wantMatch || (ok && (g != tc.group || f != tc.f)) {
			t.Errorf("memberOf(%q) = %q %q %v", tc.in, g, f, ok)
		}
	}
}
