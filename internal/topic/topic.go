// Package topic holds MQTT topic filter checks shared by the queue and
// bridge packages (the auth package has its own, with placeholders).
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ValidFilter reports whether f is a valid MQTT topic filter.
func ValidFilter(f string) bool {
	if f == "" {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if l == "#" && i != len(levels)-1 {
			return false
		}
		if l != "#" && l != "+" && strings.ContainsAny(l, "+#") {
			return false
		}
	}
	return true
}

// Match reports whether topic matches filter; wildcards at the first level
// do not match topics starting with '$' [MQTT-4.7.2-1].
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	// Level by level without splitting: it runs per publish (bridges,
	// queues), and must not allocate.
	done := false // every topic level is matched
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		if done {
			return false
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore {
			return !tmore
		}
		filter, topic, done = frest, trest, !tmore
	}
}

// CheckName checks a topic name that something other than an MQTT client
// (the HTTP API, a bridge's inbound side) wants to publish to: not empty,
// UTF-8 without NUL, no wildcards, not one of the broker's $ topics, at
// most 65535 bytes. The error says what is wrong with t.
func CheckName(t string) error {
	switch {
	case t == "":
		return errors.New("topic: missing")
	case !utf8.ValidString(t) || strings.ContainsRune(t, 0):
		return errors.New("topic: must be UTF-8 without NUL")
	case strings.ContainsAny(t, "+#"):
		return fmt.Errorf("topic %q: wildcards are for subscriptions; publish to a concrete topic", t)
	case strings.HasPrefix(t, "$"):
		return fmt.Errorf("topic %q: topics starting with $ are the broker's", t)
	case len(t) > 65535:
		return errors.New("topic: longer than 65535 bytes")
	}
	return nil
}
