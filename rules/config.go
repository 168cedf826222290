package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the rules section of the broker's configuration. The broker
// embeds it inline, so its keys are top-level: rules, rules_file, events,
// tables.
type Config struct {
	// Rules are the rules written in the broker's configuration file. They
	// come before the rules of File.
	Rules []Rule `yaml:"rules"`
	// File is a YAML file with a top-level "rules:" list (see LoadFile),
	// read at start and again on SIGHUP. A file that fails to load or
	// compile keeps the rules in force.
	File string `yaml:"rules_file"`
	// Events publishes broker events as JSON messages under $events/
	// (default true).
	Events *bool `yaml:"events"`
	// Tables loads enrich tables from JSON files: table name → file holding
	// one object of key → object. A file replaces its table's contents at
	// start and on SIGHUP; tables not named here are kept as the admin API
	// left them.
	Tables map[string]string `yaml:"tables"`
}

// EventsEnabled reports whether events are published (the default).
func (c *Config) EventsEnabled() bool { return c.Events == nil || *c.Events }

// Load returns the rules of the configuration followed by those of File.
func (c *Config) Load() ([]Rule, error) {
	rs := append([]Rule(nil), c.Rules...)
	if c.File == "" {
		return rs, nil
	}
	more, err := LoadFile(c.File)
	if err != nil {
		return nil, err
	}
	return append(rs, more...), nil
}

// Rule is one routing rule: messages on Topics for which When holds go
// through Actions in order.
type Rule struct {
	// Name identifies the rule in errors, events, status and the dead-letter
	// topic $rules/{name}/dead: one topic level (no '/', '+', '#').
	Name string `yaml:"name"`
	// Topics are MQTT topic filters; "$events/..." filters select events.
	// A filter starting with a wildcard does not match $ topics
	// [MQTT-4.7.2-1].
	Topics []string `yaml:"topics"`
	// When is a boolean expression (expr-lang); empty means always.
	When string `yaml:"when"`
	// Actions run in order, each on the output of the one before.
	Actions []Action `yaml:"actions"`
	// OnError says what happens to the message when an action (or When)
	// fails on it: continue (the default: log, emit $events/rule/error,
	// carry on with the next action), drop (the message is not delivered)
	// or dead_letter (the original goes to $rules/{name}/dead with the
	// error as a user property, and is not delivered).
	OnError string `yaml:"on_error"`
	// Disabled loads the rule switched off (Engine.Enable turns it on).
	Disabled bool `yaml:"disabled"`
	// Chain lets the rule act on messages that rules published (republish,
	// split, aggregate results, dead letters). Off by default, so a rule
	// can never feed itself; with it, a message passes at most MaxHops
	// rules' outputs.
	Chain bool `yaml:"chain"`
}

// Action is one step of a rule. Exactly one field is set: the key names
// the action, so YAML reads "- republish: {topic: ...}" and a field that
// does not belong to the action is an unknown-key error.
type Action struct {
	Republish     *Republish     `yaml:"republish"`
	Transform     *Transform     `yaml:"transform"`
	Split         *Split         `yaml:"split"`
	Aggregate     *Aggregate     `yaml:"aggregate"`
	ScatterGather *ScatterGather `yaml:"scatter_gather"`
	Enrich        *Enrich        `yaml:"enrich"`
	Store         *Store         `yaml:"store"`
	// Bridge hands the message to the named outbound bridge (its outbox,
	// before the publisher's acknowledgement for QoS 1/2).
	Bridge string `yaml:"bridge"`
	// Drop stops the original message from reaching subscribers (it is
	// still acknowledged to its publisher).
	Drop bool `yaml:"drop"`
}

// Republish publishes the message to another topic.
type Republish struct {
	// Topic is a template: "alerts/{{ levels[1] }}".
	Topic string `yaml:"topic"`
	// QoS defaults to the message's.
	QoS *int `yaml:"qos"`
	// Retain makes the published message retained.
	Retain bool `yaml:"retain"`
	// Payload is an expression whose result is the payload: a string or
	// bytes as they are, anything else as JSON. Empty: the message's payload.
	Payload string `yaml:"payload"`
	// Template is a text payload with {{ expression }} interpolations.
	Template string `yaml:"template"`
	// User adds MQTT 5 user properties: name → template.
	User map[string]string `yaml:"user"`
}

// Transform changes the message's representation or content and passes the
// result to the next action.
type Transform struct {
	// From is how to read the payload: json (the default), cbor, msgpack,
	// base64, hex or text.
	From string `yaml:"from"`
	// To is how to write it: json, cbor, msgpack, base64, hex or text.
	// Default: the format the value was read in (From, or the format a
	// previous transform wrote), json for a value computed from bytes.
	To string `yaml:"to"`
	// Fields builds an object: output field → expression. Expressions see
	// the decoded payload as json.
	Fields map[string]string `yaml:"fields"`
	// Merge adds Fields to the decoded object instead of replacing it.
	Merge bool `yaml:"merge"`
	// Remove deletes fields from the object (after Fields).
	Remove []string `yaml:"remove"`
	// Expr computes the new value from the decoded payload (json).
	Expr string `yaml:"expr"`
	// Template writes text with {{ expression }} interpolations (To: text).
	Template string `yaml:"template"`
}

// Split turns one message into one message per element of a list; the
// following actions run once per element.
type Split struct {
	// Expr yields the list; default: the payload, which must be an array.
	Expr string `yaml:"expr"`
	// Max bounds the elements (default 1000); a longer list is an error.
	Max int `yaml:"max"`
}

// Aggregate collects messages by key until Count arrived or Window passed
// since the first, then passes one combined message to the next action:
// {"key": ..., "count": n, "complete": bool, "items": [payloads]}.
// State is in memory: a crash loses open aggregations.
type Aggregate struct {
	// Key is an expression grouping messages; default: the topic.
	Key string `yaml:"key"`
	// Count completes an aggregation when this many messages arrived.
	Count int `yaml:"count"`
	// Window completes it this long after its first message.
	Window time.Duration `yaml:"window"`
	// MaxKeys bounds open aggregations (default 10000).
	MaxKeys int `yaml:"max_keys"`
}

// ScatterGather publishes the message as a request to several topics (MQTT 5
// request/response: a response topic of the engine's and fresh correlation
// data each), gathers the replies until all arrived or Timeout passed, and
// answers once: {"complete": bool, "replies": {target: payload}, "missing":
// [targets]} to ReplyTopic with the original correlation data. The answer
// also goes on to the next action. State is in memory.
type ScatterGather struct {
	// Targets are topic templates.
	Targets []string `yaml:"targets"`
	// Timeout bounds the wait (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// QoS of the requests and the answer; default the message's.
	QoS *int `yaml:"qos"`
	// ReplyTopic is a template; default: the message's response topic.
	ReplyTopic string `yaml:"reply_topic"`
}

// Enrich merges an object into the payload (a JSON object): from a table
// kept in the store, or from an HTTP lookup.
type Enrich struct {
	// Table names a key/value table (Engine.KVSet, Config.Tables).
	Table string `yaml:"table"`
	// Key is an expression yielding the table key (with Table).
	Key string `yaml:"key"`
	// HTTP looks the object up with a GET.
	HTTP *HTTPLookup `yaml:"http"`
	// Into merges under this field instead of at the top level.
	Into string `yaml:"into"`
	// Required makes a missing entry an error (default: merge nothing).
	Required bool `yaml:"required"`
}

// HTTPLookup is a cached GET returning a JSON object.
type HTTPLookup struct {
	// URL is a template: "http://inventory/devices/{{ json.id }}". Values are
	// inserted as they are; use a path-safe key.
	URL string `yaml:"url"`
	// Timeout bounds one request (default 2s).
	Timeout time.Duration `yaml:"timeout"`
	// CacheTTL keeps answers (404s too) this long (default 1m; negative:
	// no cache).
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// CacheSize bounds the cached answers (default 1000).
	CacheSize int `yaml:"cache_size"`
	// Headers are sent with every request.
	Headers map[string]string `yaml:"headers"`
}

// Store keeps the last messages of each topic (see Engine.History).
type Store struct {
	// Max is how many messages per topic are kept (default 100 when MaxAge
	// is not set either).
	Max int `yaml:"max"`
	// MaxAge drops messages older than this.
	MaxAge time.Duration `yaml:"max_age"`
}

// fileFormat is the rules file.
type fileFormat struct {
	Rules []Rule `yaml:"rules"`
}

// LoadFile reads a rules file: YAML with a top-level "rules:" list. Unknown
// keys are errors (with their line); the rules are not compiled.
func LoadFile(path string) ([]Rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules file: %w", err)
	}
	rs, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("rules file %s: %w", path, err)
	}
	return rs, nil
}

// Parse decodes the rules file format from b.
func Parse(b []byte) ([]Rule, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f fileFormat
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file: no rules
		}
		return nil, err
	}
	return f.Rules, nil
}
