package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/motemq/mote/bridge"
)

// Config is the amqp: section of a bridge entry in mote.yaml.
type Config struct {
	// URL is amqp://user:pass@host:5672/vhost or amqps://… (required). The
	// credentials are part of the URL; percent-encode reserved characters.
	URL string `yaml:"url"`
	// TLS configures amqps:// connections (CA, client certificate).
	TLS bridge.TLSConfig `yaml:"tls"`
	// Exchange is where MQTT → AMQP messages go (required when the bridge
	// has filters).
	Exchange Exchange `yaml:"exchange"`
	// RoutingKey is a text/template for the routing key of an outbound
	// message: {{topic}}, {{level N}} (the Nth topic level, from 0),
	// {{client_id}} and {{key}} (the default key). Default: the MQTT topic
	// with '/' and '.' swapped (TopicToKey).
	RoutingKey string `yaml:"routing_key"`
	// Mandatory asks RabbitMQ to return messages no queue is bound for
	// (default true); see Unroutable.
	Mandatory *bool `yaml:"mandatory"`
	// Unroutable says what a returned (unroutable) message does:
	// dead_letter (default) dead-letters the batch at once, retry retries it
	// with backoff (for queues that are bound later). Only with mandatory.
	Unroutable string `yaml:"unroutable"`
	// ConfirmTimeout bounds one Send: dialing if needed, publishing and
	// waiting for RabbitMQ's publisher confirms (default 30s).
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// Heartbeat is the AMQP heartbeat interval (default 10s; at least 1s).
	// A dead peer is noticed after about three missed heartbeats.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// ReconnectMin and ReconnectMax bound the consumers' reconnect backoff,
	// exponential with jitter (defaults 200ms and 30s). The sender does not
	// back off itself: it re-dials on the next Send, which the bridge
	// retries with its own backoff.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// In are the queues consumed into MQTT (AMQP → MQTT).
	In []Inbound `yaml:"in"`
}

// Exchange is the exchange outbound messages are published to.
type Exchange struct {
	// Name of the exchange. amq.default names RabbitMQ's default exchange
	// (""), which routes a message to the queue named by its routing key.
	Name string `yaml:"name"`
	// Type when declaring: direct, fanout, topic (default) or headers, or a
	// plugin's x-… type.
	Type string `yaml:"type"`
	// Declare declares the exchange on every (re)connection; otherwise it
	// must exist (a publish to a missing exchange fails and is retried).
	Declare bool `yaml:"declare"`
	// Durable when declaring (default true).
	Durable *bool `yaml:"durable"`
	// AutoDelete when declaring.
	AutoDelete bool `yaml:"auto_delete"`
}

// Inbound is one queue consumed into MQTT (AMQP → MQTT).
type Inbound struct {
	// Queue to consume (required).
	Queue string `yaml:"queue"`
	// Declare declares the queue (and nothing else) on every connection.
	Declare bool `yaml:"declare"`
	// Durable when declaring (default true).
	Durable *bool `yaml:"durable"`
	// Arguments when declaring (x-queue-type, x-max-length, …).
	Arguments map[string]any `yaml:"arguments"`
	// DeadLetterExchange sets x-dead-letter-exchange when declaring: where
	// messages the broker refuses (ACL, invalid topic, too large) go.
	DeadLetterExchange string `yaml:"dead_letter_exchange"`
	// Bindings bind the queue to exchanges on every connection.
	Bindings []Binding `yaml:"bindings"`
	// Topic is a text/template for the MQTT topic: {{routing_key}},
	// {{exchange}}, {{queue}}, {{header "name"}} and {{key_topic}} (the
	// routing key with '.' and '/' swapped). Default: the mqtt-topic header
	// when the message carries one (it came from a Mote bridge), else
	// {{key_topic}}.
	Topic string `yaml:"topic"`
	// QoS of the MQTT messages published (default 1). A pointer because 0
	// is a valid choice distinct from "not set".
	QoS *byte `yaml:"qos"`
	// Retain publishes the messages retained.
	Retain bool `yaml:"retain"`
	// Prefetch is how many unacknowledged deliveries RabbitMQ may send ahead
	// (default 100; at most 65535). Messages are still published in order,
	// one at a time.
	Prefetch int `yaml:"prefetch"`
	// Username is the user the broker publishes as (ACL); the broker uses
	// it when it builds the Publish function, this package does not.
	Username string `yaml:"username"`
}

// Binding binds an Inbound queue to an exchange.
type Binding struct {
	Exchange string `yaml:"exchange"`
	Key      string `yaml:"key"`
}

// ConsumerStatus is a snapshot of a Consumer's state.
type ConsumerStatus struct {
	Queue     string
	Connected bool   // consuming now
	Consumed  uint64 // deliveries received
	Published uint64 // published into MQTT and acknowledged
	Rejected  uint64 // refused by the broker for good: rejected to the queue's dead-letter exchange
	Requeued  uint64 // not published for now: returned to the queue
	LastError string
	// LastErrorAt is when LastError happened (zero if never).
	LastErrorAt time.Time
}

// Values of Config.Unroutable.
const (
	UnroutableDeadLetter = "dead_letter"
	UnroutableRetry      = "retry"
)

// Defaults.
const (
	DefaultExchangeType   = "topic"
	DefaultConfirmTimeout = 30 * time.Second
	DefaultHeartbeat      = 10 * time.Second
	DefaultReconnectMin   = 200 * time.Millisecond
	DefaultReconnectMax   = 30 * time.Second
	DefaultQoS            = 1
	DefaultPrefetch       = 100
)

// defaultExchangeAlias names the default exchange ("") in the config, as
// RabbitMQ's management UI and HTTP API do: an empty name would more
// likely be a forgotten setting than a choice.
const defaultExchangeAlias = "amq.default"

// urlHint is the form of a URL, for errors.
const urlHint = "use amqp://user:pass@host:5672/vhost"

// maxShortstr is the longest AMQP short string (names, keys, most
// properties).
const maxShortstr = 255

// Validate checks everything that can be checked without a network: the
// URL, the exchange, the templates, the unroutable mode, the durations, the
// inbound queues, and the TLS files when the URL is amqps://. hasFilters
// says whether the bridge has MQTT → AMQP filters, which need an exchange:
// exchange.name is then required (amq.default for the default exchange).
// Errors are joined; each starts with its field path within the bridge
// entry ("amqp.exchange.type: …").
func (c Config) Validate(hasFilters bool) error {
	v := &validator{}
	c.validateConn(v)
	if hasFilters {
		c.validateOut(v)
	}
	for i, in := range c.In {
		in.validate(v, fmt.Sprintf("amqp.in[%d]", i))
	}
	return v.err()
}

// validator collects errors with their field paths.
type validator struct{ errs []error }

func (v *validator) bad(field, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

func (v *validator) err() error { return errors.Join(v.errs...) }

// validateConn checks what senders and consumers share: URL, TLS,
// durations.
func (c Config) validateConn(v *validator) {
	switch u, err := url.Parse(c.URL); {
	case c.URL == "":
		v.bad("amqp.url", "required; %s", urlHint)
	case err != nil:
		// url.Error repeats the URL, password included: report its cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		v.bad("amqp.url", "not a valid URL (%v); percent-encode reserved characters in the user name and password", err)
	case u.Scheme == "" || !strings.Contains(c.URL, "://"):
		v.bad("amqp.url", "missing scheme; %s", urlHint)
	case u.Scheme != "amqp" && u.Scheme != "amqps":
		v.bad("amqp.url", "scheme %q: use amqp:// or amqps://", u.Scheme)
	case u.Hostname() == "":
		v.bad("amqp.url", "missing host; %s", urlHint)
	default:
		if _, err := amqp.ParseURI(c.URL); err != nil {
			v.bad("amqp.url", "%v", err)
		}
		if u.Scheme == "amqps" {
			if _, err := c.TLS.Build(); err != nil {
				v.errs = append(v.errs, fmt.Errorf("amqp.%w", err)) // "amqp.tls.ca_file: …"
			}
		} else if !c.TLS.IsZero() {
			v.bad("amqp.tls", "set, but amqp.url is amqp://; use amqps:// for TLS")
		}
	}
	neg := func(field string, d time.Duration) {
		if d < 0 {
			v.bad(field, "%s must not be negative", d)
		}
	}
	neg("amqp.confirm_timeout", c.ConfirmTimeout)
	neg("amqp.heartbeat", c.Heartbeat)
	neg("amqp.reconnect_min", c.ReconnectMin)
	neg("amqp.reconnect_max", c.ReconnectMax)
	if c.Heartbeat > 0 && c.Heartbeat < time.Second {
		v.bad("amqp.heartbeat", "%s: AMQP heartbeats are whole seconds; use at least 1s", c.Heartbeat)
	}
	if c.ReconnectMin > 0 && c.ReconnectMax > 0 && c.ReconnectMin > c.ReconnectMax {
		v.bad("amqp.reconnect_min", "%s is more than reconnect_max %s", c.ReconnectMin, c.ReconnectMax)
	}
}

// validateOut checks the MQTT → AMQP settings.
func (c Config) validateOut(v *validator) {
	e := c.Exchange
	switch {
	case e.Name == "":
		v.bad("amqp.exchange.name", "required (the bridge has filters); name the exchange to publish to, or %s for the default exchange (which routes to the queue named by the routing key)", defaultExchangeAlias)
	case len(e.Name) > maxShortstr || !utf8.ValidString(e.Name):
		v.bad("amqp.exchange.name", "must be UTF-8 of at most %d bytes", maxShortstr)
	case e.Declare && strings.HasPrefix(e.Name, "amq."):
		v.bad("amqp.exchange.declare", "%q: amq.* exchanges are RabbitMQ's own and cannot be declared; set declare: false", e.Name)
	}
	switch t := e.Type; {
	case t == "" || t == "direct" || t == "fanout" || t == "topic" || t == "headers" || strings.HasPrefix(t, "x-"):
		if t != "" && !e.Declare {
			v.bad("amqp.exchange.type", "applies only with declare: true")
		}
	default:
		v.bad("amqp.exchange.type", "%q: use direct, fanout, topic or headers (or a plugin's x-… type)", t)
	}
	if !e.Declare {
		if e.Durable != nil {
			v.bad("amqp.exchange.durable", "applies only with declare: true")
		}
		if e.AutoDelete {
			v.bad("amqp.exchange.auto_delete", "applies only with declare: true")
		}
	}
	if c.RoutingKey != "" {
		if _, err := parseOutTemplate(c.RoutingKey); err != nil {
			v.bad("amqp.routing_key", "%v", err)
		}
	}
	switch c.Unroutable {
	case "", UnroutableDeadLetter, UnroutableRetry:
		if c.Unroutable != "" && c.Mandatory != nil && !*c.Mandatory {
			v.bad("amqp.unroutable", "applies only with mandatory: true (without it RabbitMQ drops unroutable messages)")
		}
	default:
		v.bad("amqp.unroutable", "%q: use %s or %s", c.Unroutable, UnroutableDeadLetter, UnroutableRetry)
	}
}

// validate checks one inbound entry; path is its field path.
func (in Inbound) validate(v *validator, path string) {
	switch {
	case in.Queue == "":
		v.bad(path+".queue", "required")
	case len(in.Queue) > maxShortstr || !utf8.ValidString(in.Queue):
		v.bad(path+".queue", "must be UTF-8 of at most %d bytes", maxShortstr)
	case in.Declare && strings.HasPrefix(in.Queue, "amq."):
		v.bad(path+".queue", "%q: queue names starting with amq. are reserved by RabbitMQ", in.Queue)
	}
	if !in.Declare {
		if in.Durable != nil {
			v.bad(path+".durable", "applies only with declare: true")
		}
		if len(in.Arguments) > 0 {
			v.bad(path+".arguments", "applies only with declare: true (set queue arguments by policy otherwise)")
		}
		if in.DeadLetterExchange != "" {
			v.bad(path+".dead_letter_exchange", "applies only with declare: true (set it by policy otherwise)")
		}
	}
	if _, err := toTable(in.Arguments); err != nil {
		v.bad(path+".arguments", "%v", err)
	}
	if dlx, ok := in.Arguments["x-dead-letter-exchange"]; ok && in.DeadLetterExchange != "" && dlx != in.DeadLetterExchange {
		v.bad(path+".dead_letter_exchange", "%q conflicts with arguments.x-dead-letter-exchange %v; set one", in.DeadLetterExchange, dlx)
	}
	if len(in.DeadLetterExchange) > maxShortstr {
		v.bad(path+".dead_letter_exchange", "longer than %d bytes", maxShortstr)
	}
	for i, b := range in.Bindings {
		bp := fmt.Sprintf("%s.bindings[%d]", path, i)
		switch {
		case b.Exchange == "" || b.Exchange == defaultExchangeAlias:
			v.bad(bp+".exchange", "required; the default exchange already routes to every queue by its name and cannot be bound")
		case len(b.Exchange) > maxShortstr:
			v.bad(bp+".exchange", "longer than %d bytes", maxShortstr)
		}
		if len(b.Key) > maxShortstr {
			v.bad(bp+".key", "longer than %d bytes", maxShortstr)
		}
	}
	if in.Topic != "" {
		if _, err := parseInTemplate(in.Topic); err != nil {
			v.bad(path+".topic", "%v", err)
		}
	}
	if in.QoS != nil && *in.QoS > 2 {
		v.bad(path+".qos", "%d: use 0, 1 or 2", *in.QoS)
	}
	if in.Prefetch < 0 || in.Prefetch > math.MaxUint16 {
		v.bad(path+".prefetch", "%d: use 1 to 65535 (0 means the default %d)", in.Prefetch, DefaultPrefetch)
	}
}

// withDefaults fills in the defaults.
func (c Config) withDefaults() Config {
	defD := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	defD(&c.ConfirmTimeout, DefaultConfirmTimeout)
	defD(&c.Heartbeat, DefaultHeartbeat)
	defD(&c.ReconnectMin, DefaultReconnectMin)
	defD(&c.ReconnectMax, DefaultReconnectMax)
	c.ReconnectMax = max(c.ReconnectMax, c.ReconnectMin)
	if c.Mandatory == nil {
		t := true
		c.Mandatory = &t
	}
	if c.Unroutable == "" {
		c.Unroutable = UnroutableDeadLetter
	}
	if c.Exchange.Type == "" {
		c.Exchange.Type = DefaultExchangeType
	}
	if c.Exchange.Durable == nil {
		t := true
		c.Exchange.Durable = &t
	}
	return c
}

// withDefaults fills in the defaults.
func (in Inbound) withDefaults() Inbound {
	if in.Durable == nil {
		t := true
		in.Durable = &t
	}
	if in.QoS == nil {
		q := byte(DefaultQoS)
		in.QoS = &q
	}
	if in.Prefetch == 0 {
		in.Prefetch = DefaultPrefetch
	}
	return in
}

// tlsConfig builds the TLS configuration for an amqps:// URL (nil for
// amqp://).
func (c Config) tlsConfig() (*tls.Config, error) {
	if u, err := url.Parse(c.URL); err != nil || u.Scheme != "amqps" {
		return nil, nil // amqp:// (Validate rejected anything else)
	}
	t, err := c.TLS.Build()
	if err != nil {
		return nil, fmt.Errorf("amqp.%w", err)
	}
	return t, nil
}

// wireExchange is the exchange name on the wire: "" for amq.default.
func wireExchange(name string) string {
	if name == defaultExchangeAlias {
		return ""
	}
	return name
}

// showExchange names an exchange for errors and logs.
func showExchange(name string) string {
	if name == "" {
		return defaultExchangeAlias + " (the default exchange)"
	}
	return name
}

// redactURL hides the password of an AMQP URL for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// toTable converts YAML-decoded queue arguments to an AMQP table: nested
// maps become tables, integers become int32 when they fit (int64 else, as
// AMQP's "int" encoding would truncate), and unsupported types are errors.
func toTable(m map[string]any) (amqp.Table, error) {
	if len(m) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report errors in a stable order
	t := amqp.Table{}
	for _, k := range keys {
		if len(k) > maxShortstr {
			return nil, fmt.Errorf("%q: names are at most %d bytes", k, maxShortstr)
		}
		v, err := toField(m[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		t[k] = v
	}
	return t, nil
}

func toField(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string, float64, float32, []byte, time.Time, int32, int64, int16, int8, uint16, uint32, byte:
		return x, nil
	case int:
		if x >= math.MinInt32 && x <= math.MaxInt32 {
			return int32(x), nil
		}
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return nil, fmt.Errorf("%d is too large for AMQP", x)
		}
		return int64(x), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return nil, fmt.Errorf("%d is too large for AMQP", x)
		}
		return int64(x), nil
	case map[string]any:
		return toTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			f, err := toField(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = f
		}
		return out, nil
	}
	return nil, fmt.Errorf("%T values are not supported; use strings, numbers, booleans, lists or maps", v)
}
