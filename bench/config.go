package bench

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Scenario names, the first positional argument of `mote bench`.
const (
	ScenarioPubSub  = "pubsub"
	ScenarioLatency = "latency"
	ScenarioQueue   = "queue"
	ScenarioConns   = "conns"
	ScenarioWebhook = "webhook"
	ScenarioAMQP    = "amqp"
)

// Topic layouts of the pubsub scenario.
const (
	// ModeFanIn is N publishers → 1 topic → M subscribers.
	ModeFanIn = "fanin"
	// ModeFanOut is 1 publisher → 1 topic → M subscribers.
	ModeFanOut = "fanout"
	// ModePairs is N publisher/subscriber pairs, each pair on its own topic.
	ModePairs = "pairs"
)

// Limits that keep a typo from exhausting the machine.
const (
	maxClients     = 1_000_000
	maxPayloadSize = 256 << 20 // MQTT's maximum packet size is 256 MiB
	maxInflight    = 65535     // packet identifiers per connection
)

// Config is one benchmark run. Start from [DefaultConfig], which fills in the
// scenario's defaults; [Run] uses the values as given and rejects invalid ones
// (see [Config.Validate]). JSON names match the flags, with _ for -.
type Config struct {
	// Scenario is one of ScenarioPubSub, ScenarioLatency, ScenarioQueue, ScenarioConns.
	Scenario string `json:"scenario"`
	// URL is the broker: mqtt://host:port (or tcp://) or ws://host:port/path.
	URL string `json:"url"`
	// Protocol is 4 (MQTT 3.1.1, paho.mqtt.golang) or 5 (MQTT v5, paho.golang).
	Protocol int `json:"protocol"`
	// Username and Password are sent in CONNECT when non-empty.
	Username string `json:"username,omitempty"`
	Password string `json:"-"` // never printed or serialised
	// ClientPrefix starts every client identifier; the run id and the client's
	// role and index follow, so concurrent runs do not take over each other's sessions.
	ClientPrefix string `json:"client_prefix"`
	// Clean sets Clean Session (3.1.1) / Clean Start (v5). With Clean false a v5
	// session is kept for 5 minutes after the run (Session Expiry Interval 300).
	Clean bool `json:"clean"`
	// KeepAlive is sent in CONNECT; the clients ping when idle that long.
	KeepAlive time.Duration `json:"keepalive"`
	// ConnectTimeout bounds each TCP/WebSocket dial plus MQTT CONNECT/CONNACK.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// Duration is how long publishers publish (pubsub, latency, queue), or the
	// longest the connect phase may take (conns).
	Duration time.Duration `json:"duration"`

	// Pubs is the number of publishers.
	Pubs int `json:"pubs,omitempty"`
	// Subs is the number of subscribers (queue: consumers in the shared group).
	Subs int `json:"subs,omitempty"`
	// QoS is used for both PUBLISH and SUBSCRIBE.
	QoS byte `json:"qos"`
	// Size is the payload size in bytes, at least HeaderSize.
	Size int `json:"size,omitempty"`
	// TopicMode is the pubsub layout: ModeFanIn, ModeFanOut or ModePairs.
	TopicMode string `json:"topic_mode,omitempty"`
	// Topic prefixes every topic; the run id follows it.
	Topic string `json:"topic,omitempty"`
	// Group is the shared-subscription group of the queue scenario.
	Group string `json:"group,omitempty"`
	// Rate is messages per second per publisher; 0 publishes as fast as the
	// broker acknowledges (QoS ≥ 1) or the connection accepts (QoS 0).
	Rate float64 `json:"rate"`
	// Inflight is how many QoS ≥ 1 publishes each publisher keeps outstanding.
	// A v5 broker's Receive Maximum lowers it further (paho enforces it).
	Inflight int `json:"inflight,omitempty"`
	// Drain is how long, after publishing stops, to wait for outstanding
	// acknowledgements and deliveries before counting loss.
	Drain time.Duration `json:"drain,omitempty"`

	// Conns is the number of idle connections of the conns scenario.
	Conns int `json:"conns,omitempty"`
	// ConnectRate limits new connections per second; 0 is unlimited (but at
	// most 200 CONNECTs are in flight at once).
	ConnectRate float64 `json:"connect_rate,omitempty"`
	// Hold is how long the conns scenario keeps its connections open.
	Hold time.Duration `json:"hold,omitempty"`
	// PID is the broker's process id; when set, message scenarios report its
	// CPU use (/proc/PID/stat) beside the generator's, and the conns scenario reads its
	// VmRSS before connecting and at the end of Hold.
	PID int `json:"pid,omitempty"`
	// Sink is the address the webhook scenario's HTTP server listens on;
	// the broker's http bridge must send --topic's messages there.
	Sink string `json:"sink,omitempty"`
	// AMQPURL is the RabbitMQ the amqp scenario consumes from (never
	// printed: it holds the password).
	AMQPURL string `json:"-"`
	// Exchange is where the broker's amqp bridge publishes the run's
	// messages (amqp scenario).
	Exchange string `json:"exchange,omitempty"`
}

// DefaultConfig returns the defaults for a scenario (pubsub when empty).
func DefaultConfig(scenario string) Config {
	if scenario == "" {
		scenario = ScenarioPubSub
	}
	c := Config{
		Scenario:       scenario,
		URL:            "mqtt://127.0.0.1:1883",
		Protocol:       5,
		ClientPrefix:   "mote-bench-",
		Clean:          true,
		KeepAlive:      30 * time.Second,
		ConnectTimeout: 10 * time.Second,
		Duration:       10 * time.Second,
		Pubs:           1,
		Subs:           1,
		Size:           64,
		TopicMode:      ModeFanIn,
		Topic:          "mote-bench",
		Group:          "bench",
		Inflight:       64,
		Drain:          2 * time.Second,
		Conns:          1000,
		Hold:           10 * time.Second,
		AMQPURL:        "amqp://guest:guest@127.0.0.1:5672/",
		Exchange:       "mote.bench",
	}
	switch scenario {
	case ScenarioLatency:
		c.Rate = 5000
		c.QoS = 1
	case ScenarioQueue:
		c.QoS = 1
		c.Subs = 4
	case ScenarioWebhook:
		c.QoS = 1
		c.Sink = "127.0.0.1:18090"
	case ScenarioAMQP:
		c.QoS = 1
	}
	return c
}

// problems collects validation errors; each names the flag and the value.
type problems []error

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// Validate reports every invalid or contradictory setting at once.
func (c *Config) Validate() error {
	var p problems
	switch c.Scenario {
	case ScenarioPubSub, ScenarioLatency, ScenarioQueue, ScenarioConns, ScenarioWebhook, ScenarioAMQP:
	default:
		p.addf("scenario %q: must be one of pubsub, latency, queue, conns, webhook", c.Scenario)
	}
	if _, err := parseBrokerURL(c.URL); err != nil {
		p.addf("--url %q: %w", c.URL, err)
	}
	if c.Protocol != 4 && c.Protocol != 5 {
		p.addf("--protocol %d: must be 4 (MQTT 3.1.1) or 5 (MQTT v5)", c.Protocol)
	}
	if c.KeepAlive < 0 || c.KeepAlive > 65535*time.Second || c.KeepAlive%time.Second != 0 {
		p.addf("--keepalive %s: must be whole seconds between 0s and 65535s", c.KeepAlive)
	}
	if c.ConnectTimeout <= 0 {
		p.addf("--connect-timeout %s: must be positive", c.ConnectTimeout)
	}
	if c.Duration <= 0 {
		p.addf("--duration %s: must be positive", c.Duration)
	}
	if c.Scenario == ScenarioConns {
		c.validateConns(&p)
	} else {
		c.validateMessages(&p)
	}
	return errors.Join(p...)
}

func (c *Config) validateConns(p *problems) {
	if c.Conns < 1 || c.Conns > maxClients {
		p.addf("--conns %d: must be between 1 and %d", c.Conns, maxClients)
	}
	if c.ConnectRate < 0 {
		p.addf("--connect-rate %g: must be 0 (unlimited) or positive", c.ConnectRate)
	}
	if c.Hold < 0 {
		p.addf("--hold %s: must not be negative", c.Hold)
	}
	if c.PID < 0 {
		p.addf("--pid %d: must be a process id", c.PID)
	}
}

func (c *Config) validateMessages(p *problems) {
	if c.QoS > 2 {
		p.addf("--qos %d: must be 0, 1 or 2", c.QoS)
	}
	if c.Size < HeaderSize || c.Size > maxPayloadSize {
		p.addf("--size %d: must be between %d (the header carrying producer, sequence and send time) and %d", c.Size, HeaderSize, maxPayloadSize)
	}
	if c.Pubs < 1 || c.Pubs > maxClients {
		p.addf("--pubs %d: must be between 1 and %d", c.Pubs, maxClients)
	}
	if c.Subs < 0 || c.Subs > maxClients {
		p.addf("--subs %d: must be between 0 and %d", c.Subs, maxClients)
	}
	if c.Rate < 0 {
		p.addf("--rate %g: must be 0 (as fast as possible) or positive", c.Rate)
	}
	if c.Inflight < 1 || c.Inflight > maxInflight {
		p.addf("--inflight %d: must be between 1 and %d", c.Inflight, maxInflight)
	}
	if c.Drain < 0 {
		p.addf("--drain %s: must not be negative", c.Drain)
	}
	if c.PID < 0 {
		p.addf("--pid %d: must be a process id", c.PID)
	}
	if c.Topic == "" || strings.ContainsAny(c.Topic, "+#\x00") || strings.HasPrefix(c.Topic, "$") {
		p.addf("--topic %q: must be a non-empty topic name without wildcards, NUL or a leading $", c.Topic)
	}
	switch c.Scenario {
	case ScenarioLatency:
		if c.Pubs != 1 || c.Subs != 1 {
			p.addf("latency runs 1 publisher and 1 subscriber (got --pubs %d --subs %d); use pubsub for more", c.Pubs, c.Subs)
		}
	case ScenarioWebhook:
		if _, _, err := net.SplitHostPort(c.Sink); err != nil {
			p.addf("--sink %q: want host:port for the HTTP sink", c.Sink)
		}
	case ScenarioAMQP:
		if u, err := url.Parse(c.AMQPURL); err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
			p.addf("--amqp-url %q: want amqp://user:pass@host:port/vhost", redactURL(c.AMQPURL))
		}
		if c.Exchange == "" {
			p.addf("--exchange: required (the exchange the broker's amqp bridge publishes to)")
		}
	case ScenarioQueue:
		if c.Subs < 1 {
			p.addf("--subs %d: queue needs at least 1 consumer", c.Subs)
		}
		if c.Group == "" || strings.ContainsAny(c.Group, "/+#\x00") {
			p.addf("--group %q: must be non-empty without /, +, # or NUL", c.Group)
		}
	case ScenarioPubSub:
		switch c.TopicMode {
		case ModeFanIn:
		case ModeFanOut:
			if c.Pubs != 1 {
				p.addf("--pubs %d: fanout has exactly 1 publisher; use --topic-mode fanin for more", c.Pubs)
			}
		case ModePairs:
			if c.Subs != c.Pubs {
				p.addf("--subs %d: pairs needs as many subscribers as publishers (%d); leave --subs unset", c.Subs, c.Pubs)
			}
		default:
			p.addf("--topic-mode %q: must be fanin, fanout or pairs", c.TopicMode)
		}
	}
}

// parseBrokerURL accepts mqtt://, tcp:// and ws:// URLs with a host.
func parseBrokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "mqtt", "tcp", "ws":
	default:
		return nil, fmt.Errorf("scheme %q: must be mqtt, tcp or ws", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, errors.New("no host")
	}
	return u, nil
}
