package queue

import (
	"fmt"
	"path"
	"strings"
	"time"

	topics "github.com/motemq/mote/internal/topic"
)

// Strategies for handing a message to one member of a group.
const (
	RoundRobin    = "round_robin"
	LeastInflight = "least_inflight"
	StickyClient  = "sticky_client" // by the publisher's client id
	StickyTopic   = "sticky_topic"  // by the message topic
	Random        = "random"
)

// Overflow policies when a queue holds MaxLength messages.
const (
	RejectNew  = "reject_new"  // refuse the publish (MQTT 5: reason 0x97)
	DropOldest = "drop_oldest" // drop the oldest waiting message
)

// Settings configure one queue (or the queues whose group matches Name).
type Settings struct {
	// Name is a group name, or a path.Match pattern over group names.
	Name string
	// Filter, when set, declares the queue at start-up: it keeps messages
	// matching Filter before its first consumer subscribes. Name must then
	// be a plain group name.
	Filter              string
	Strategy            string
	MaxLength           int
	Overflow            string
	MessageTTL          time.Duration
	MaxDeliveries       int
	DeadLetterTopic     string // "{group}" is replaced by the group name
	Durable             bool
	InflightPerConsumer int // 0: the member's own window
	QueueExpiry         time.Duration
	// VisibilityTimeout, when positive, takes a QoS 1 message back from a
	// connected member that has not acknowledged it for this long and gives
	// it to another (0: off).
	VisibilityTimeout time.Duration
}

// Defaults are the settings of a group no configured entry matches.
func Defaults() Settings {
	return Settings{
		Strategy:        RoundRobin,
		Overflow:        RejectNew,
		MaxDeliveries:   5,
		DeadLetterTopic: "$queue/{group}/dead",
		Durable:         true,
		QueueExpiry:     time.Hour,
	}
}

// Validate checks s; key prefixes the messages (e.g. "queues[2]").
func (s Settings) Validate(key string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, field, fmt.Sprintf(format, args...)))
	}
	if s.Name == "" {
		bad("name", "missing: give a group name or pattern (e.g. jobs or jobs-*)")
	} else if _, err := path.Match(s.Name, ""); err != nil {
		bad("name", "%q is not a valid pattern: %v", s.Name, err)
	} else if strings.ContainsAny(s.Name, "/+#") {
		bad("name", "%q: a share name cannot contain '/', '+' or '#'", s.Name)
	}
	if s.Filter != "" {
		if strings.ContainsAny(s.Name, "*?[\\") {
			bad("filter", "a declared queue needs a plain name, not the pattern %q", s.Name)
		}
		if !topics.ValidFilter(s.Filter) {
			bad("filter", "%q is not a valid topic filter", s.Filter)
		}
	}
	switch s.Strategy {
	case RoundRobin, LeastInflight, StickyClient, StickyTopic, Random:
	default:
		bad("strategy", "%q: use round_robin, least_inflight, sticky_client, sticky_topic or random", s.Strategy)
	}
	switch s.Overflow {
	case RejectNew, DropOldest:
	default:
		bad("overflow", "%q: use reject_new or drop_oldest", s.Overflow)
	}
	if s.MaxLength < 0 {
		bad("max_length", "%d: want 0 (unlimited) or more", s.MaxLength)
	}
	if s.MessageTTL < 0 {
		bad("message_ttl", "must not be negative (0: no limit)")
	}
	if s.MaxDeliveries < 1 || s.MaxDeliveries > 255 {
		bad("max_deliveries", "%d: want 1 to 255", s.MaxDeliveries)
	}
	if s.DeadLetterTopic == "" || strings.ContainsAny(s.DeadLetterTopic, "+#") {
		bad("dead_letter_topic", "%q: want a topic name without wildcards", s.DeadLetterTopic)
	}
	if s.InflightPerConsumer < 0 {
		bad("inflight_per_consumer", "%d: want 0 (the consumer's receive maximum) or more", s.InflightPerConsumer)
	}
	if s.VisibilityTimeout < 0 {
		bad("visibility_timeout", "must not be negative (0: off)")
	}
	if s.QueueExpiry < 0 {
		bad("queue_expiry", "must not be negative")
	}
	return errs
}

// match returns the settings for group: the first entry whose Name matches,
// else defaults.
func match(entries []Settings, defaults Settings, group string) Settings {
	for _, s := range entries {
		if ok, _ := path.Match(s.Name, group); ok {
			return s
		}
	}
	d := defaults
	d.Name = group
	return d
}
