package broker

import (
	"fmt"
	"strings"

	"github.com/motemq/mote/bridge"
	httpbridge "github.com/motemq/mote/bridge/http"
)

// BridgeConfig is one entry of bridges: (see README).
type BridgeConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // http (amqp and mqtt: next)
	// Mode: deliver (webhooks, default) or request (invoke a web service and
	// publish its answer as the reply).
	Mode       string   `yaml:"mode"`
	ReplyTopic string   `yaml:"reply_topic"` // request mode, for requests without a response topic: e.g. "{{topic}}/reply"
	Filters    []string `yaml:"filters"`

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
}

func (c BridgeConfig) bridgeConfig() bridge.Config {
	return bridge.Config{
		Name: c.Name, Filters: c.Filters, MaxAttempts: c.MaxAttempts,
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
		if j, dup := names[b.Name]; dup && b.Name != "" {
			bad(key+".name", "%q is used twice (also bridges[%d])", b.Name, j)
		}
		names[b.Name] = i
		if err := b.bridgeConfig().Validate(); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				field, msg, _ := strings.Cut(strings.Replace(line, "bridges[?]", key, 1), ": ")
				bad(field, "%s", msg)
			}
		}
		switch b.Mode {
		case "", "deliver", "request":
		default:
			bad(key+".mode", "%q: use deliver or request", b.Mode)
		}
		switch b.Type {
		case "http":
			if _, err := httpbridge.NewRequester(b.webhookConfig(), b.ReplyTopic, 0, nil); err != nil {
				bad(key, "%v", err)
			}
		case "":
			bad(key+".type", "missing: use http")
		default:
			bad(key+".type", "%q: use http (amqp and mqtt bridges are not built yet)", b.Type)
		}
	}
}
