package broker

import (
	"fmt"
	"strings"

	"github.com/motemq/mote/bridge"
	amqpbridge "github.com/motemq/mote/bridge/amqp"
	httpbridge "github.com/motemq/mote/bridge/http"
	mqttbridge "github.com/motemq/mote/bridge/mqtt"
)

// BridgeConfig is one entry of bridges: (see README).
type BridgeConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // http, amqp or mqtt
	// Mode: deliver (webhooks, default) or request (invoke a web service and
	// publish its answer as the reply).
	Mode       string   `yaml:"mode"`
	ReplyTopic string   `yaml:"reply_topic"` // request mode, for requests without a response topic: e.g. "{{topic}}/reply"
	Filters    []string `yaml:"filters"`     // what goes out (http, amqp); mqtt bridges use mqtt.topics
	// Username is the local user whose ACL applies to what the bridge's
	// inbound side publishes (amqp in, mqtt in); empty: not checked.
	Username string `yaml:"username"`

	// Delivery (bridge package defaults when zero).
	MaxAttempts     int      `yaml:"max_attempts"`
	BackoffMin      Duration `yaml:"backoff_min"`
	BackoffMax      Duration `yaml:"backoff_max"`
	Concurrency     int      `yaml:"concurrency"`
	Ordered         *bool    `yaml:"ordered"`
	BatchSize       int      `yaml:"batch_size"`
	BatchWait       Duration `yaml:"batch_wait"`
	BreakerFailures int      `yaml:"breaker_failures"`
	BreakerCooldown Duration `yaml:"breaker_cooldown"`
	MemoryBuffer    int      `yaml:"memory_buffer"`

	// HTTP webhook.
	URL      string            `yaml:"url"`
	Method   string            `yaml:"method"`
	Headers  map[string]string `yaml:"headers"`
	Timeout  Duration          `yaml:"timeout"`
	Body     string            `yaml:"body"` // raw, json, template
	Template string            `yaml:"template"`

	// AMQP 0-9-1 (RabbitMQ), both ways.
	AMQP *amqpbridge.Config `yaml:"amqp"`
	// MQTT to a remote broker, Mosquitto style.
	MQTT *mqttbridge.Config `yaml:"mqtt"`
}

// outFilters are the topic filters of the bridge's outbound side.
func (c BridgeConfig) outFilters() []string {
	if c.Type == "mqtt" && c.MQTT != nil {
		return c.MQTT.OutFilters()
	}
	return c.Filters
}

func (c BridgeConfig) bridgeConfig() bridge.Config {
	return bridge.Config{
		Name: c.Name, Filters: c.outFilters(), MaxAttempts: c.MaxAttempts,
		BackoffMin: c.BackoffMin.Std(), BackoffMax: c.BackoffMax.Std(), Concurrency: c.Concurrency,
		Ordered: c.Ordered, BatchSize: c.BatchSize, BatchWait: c.BatchWait.Std(),
		BreakerFailures: c.BreakerFailures, BreakerCooldown: c.BreakerCooldown.Std(), MemoryBuffer: c.MemoryBuffer,
	}
}

func (c BridgeConfig) webhookConfig() httpbridge.WebhookConfig {
	return httpbridge.WebhookConfig{URL: c.URL, Method: c.Method, Headers: c.Headers, Timeout: c.Timeout.Std(), Body: c.Body, Template: c.Template}
}

func (c *Config) validateBridges(bad func(key, format string, args ...any)) {
	names := map[string]int{}
	for i, b := range c.Bridges {
		key := fmt.Sprintf("bridges[%d]", i)
		// each reports a package's joined "field: message" lines under key.
		each := func(err error) {
			if err == nil {
				return
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				field, msg, ok := strings.Cut(strings.Replace(line, "bridges[?]", key, 1), ": ")
				if !ok {
					bad(key, "%s", line)
					continue
				}
				if !strings.HasPrefix(field, key) {
					field = key + "." + field
				}
				bad(field, "%s", msg)
			}
		}
		if j, dup := names[b.Name]; dup && b.Name != "" {
			bad(key+".name", "%q is used twice (also bridges[%d])", b.Name, j)
		}
		names[b.Name] = i
		outbound := len(b.outFilters()) > 0
		if outbound || b.Type == "http" || b.Type == "" {
			each(b.bridgeConfig().Validate())
		}
		switch b.Mode {
		case "", "deliver":
		case "request":
			if b.Type != "http" {
				bad(key+".mode", "request is for http bridges")
			}
		default:
			bad(key+".mode", "%q: use deliver or request", b.Mode)
		}
		if b.AMQP != nil && b.Type != "amqp" {
			bad(key+".amqp", "set for a bridge of type %q; use type: amqp", b.Type)
		}
		if b.MQTT != nil && b.Type != "mqtt" {
			bad(key+".mqtt", "set for a bridge of type %q; use type: mqtt", b.Type)
		}
		switch b.Type {
		case "http":
			if _, err := httpbridge.NewRequester(b.webhookConfig(), b.ReplyTopic, 0, nil); err != nil {
				bad(key, "%v", err)
			}
		case "amqp":
			if b.AMQP == nil {
				bad(key+".amqp", "missing: an amqp bridge needs amqp.url and an exchange (out) or in queues")
				continue
			}
			each(b.AMQP.Validate(outbound))
			if !outbound && len(b.AMQP.In) == 0 {
				bad(key, "does nothing: give filters (MQTT → AMQP) or amqp.in (AMQP → MQTT)")
			}
		case "mqtt":
			if b.MQTT == nil {
				bad(key+".mqtt", "missing: an mqtt bridge needs mqtt.url and mqtt.topics")
				continue
			}
			if len(b.Filters) > 0 {
				bad(key+".filters", "not used by mqtt bridges; list topics under mqtt.topics with direction out, in or both")
			}
			each(b.MQTT.Validate())
		case "":
			bad(key+".type", "missing: use http, amqp or mqtt")
		default:
			bad(key+".type", "%q: use http, amqp or mqtt", b.Type)
		}
	}
}
