package amqp

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"gopkg.in/yaml.v3"

	"github.com/motemq/mote/internal/deps"
)

func ptr[T any](v T) *T { return &v }

func validConfig() Config {
	return Config{
		URL:      "amqp://guest:guest@127.0.0.1:5672/",
		Exchange: Exchange{Name: "mqtt", Type: "topic", Declare: true},
		In:       []Inbound{{Queue: "commands", Declare: true, DeadLetterExchange: "dlx", Bindings: []Binding{{Exchange: "cmd", Key: "#"}}}},
	}
}

// The YAML form decodes with KnownFields on, durations as "5s".
func TestConfigYAML(t *testing.T) {
	src := `
url: amqps://mote:secret@rabbit.example:5671/iot
tls:
  server_name: rabbit.example
exchange:
  name: telemetry
  type: topic
  declare: true
  durable: false
routing_key: "site1.{{key}}"
mandatory: true
unroutable: retry
confirm_timeout: 5s
heartbeat: 15s
reconnect_min: 100ms
reconnect_max: 10s
in:
  - queue: commands
    declare: true
    arguments: {x-queue-type: quorum, x-delivery-limit: 5}
    dead_letter_exchange: commands.dlx
    bindings: [{exchange: cmd, key: "devices.*"}]
    topic: "cmd/{{key_topic}}"
    qos: 0
    retain: true
    prefetch: 10
    username: bridge-in
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(true); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	in := c.In[0]
	if c.ConfirmTimeout != 5*time.Second || c.ReconnectMin != 100*time.Millisecond || *c.Exchange.Durable ||
		in.QoS == nil || *in.QoS != 0 || in.Arguments["x-delivery-limit"] != 5 || in.Bindings[0].Key != "devices.*" {
		t.Fatalf("decoded %+v", c)
	}
	table, err := toTable(in.Arguments)
	if err != nil || table["x-delivery-limit"] != int32(5) || table["x-queue-type"] != "quorum" {
		t.Fatalf("arguments table %#v, %v", table, err)
	}
	dec = yaml.NewDecoder(strings.NewReader("exchange: {nmae: x}"))
	dec.KnownFields(true)
	if err := dec.Decode(&Config{}); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("a misspelt key: %v", err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name       string
		edit       func(c *Config)
		hasFilters bool
		want       []string // substrings of the error; none: valid
	}{
		{name: "valid", edit: func(*Config) {}, hasFilters: true},
		{name: "default exchange by its alias", edit: func(c *Config) { c.Exchange = Exchange{Name: "amq.default"} }, hasFilters: true},
		{name: "no exchange without filters", edit: func(c *Config) { c.Exchange = Exchange{} }},
		{name: "url missing", edit: func(c *Config) { c.URL = "" }, want: []string{"amqp.url: required; use amqp://user:pass@host:5672/vhost"}},
		{name: "url without scheme", edit: func(c *Config) { c.URL = "guest:guest@rabbit:5672" }, want: []string{"amqp.url: missing scheme; use amqp://user:pass@host:5672/vhost"}},
		{name: "url host only", edit: func(c *Config) { c.URL = "rabbit.example" }, want: []string{"amqp.url: missing scheme"}},
		{name: "url wrong scheme", edit: func(c *Config) { c.URL = "http://rabbit:5672/" }, want: []string{`amqp.url: scheme "http": use amqp:// or amqps://`}},
		{name: "url without host", edit: func(c *Config) { c.URL = "amqp:///vhost" }, want: []string{"amqp.url: missing host"}},
		{name: "url bad heartbeat parameter", edit: func(c *Config) { c.URL = "amqp://h/?heartbeat=x" }, want: []string{"amqp.url: heartbeat"}},
		{name: "url password never echoed", edit: func(c *Config) { c.URL = "amqp://u:s3cr%zzet@h/" }, want: []string{"amqp.url: not a valid URL"}},
		{name: "tls without amqps", edit: func(c *Config) { c.TLS.ServerName = "x" }, want: []string{"amqp.tls: set, but amqp.url is amqp://"}},
		{name: "tls file missing", edit: func(c *Config) {
			c.URL = "amqps://h/"
			c.TLS.CAFile = filepath.Join(dir, "nope.pem")
		}, want: []string{"amqp.tls.ca_file: "}},
		{name: "exchange required with filters", edit: func(c *Config) { c.Exchange = Exchange{} }, hasFilters: true, want: []string{"amqp.exchange.name: required", "amq.default"}},
		{name: "exchange type", edit: func(c *Config) { c.Exchange.Type = "fan" }, hasFilters: true, want: []string{`amqp.exchange.type: "fan": use direct, fanout, topic or headers`}},
		{name: "plugin exchange type", edit: func(c *Config) { c.Exchange.Type = "x-consistent-hash" }, hasFilters: true},
		{name: "declaring amq.*", edit: func(c *Config) { c.Exchange.Name = "amq.topic" }, hasFilters: true, want: []string{"amqp.exchange.declare:"}},
		{name: "settings without declare", edit: func(c *Config) { c.Exchange.Declare = false; c.Exchange.AutoDelete = true }, hasFilters: true, want: []string{"amqp.exchange.type: applies only with declare: true", "amqp.exchange.auto_delete: applies only"}},
		{name: "routing key template syntax", edit: func(c *Config) { c.RoutingKey = "{{level" }, hasFilters: true, want: []string{"amqp.routing_key: "}},
		{name: "routing key template unknown function", edit: func(c *Config) { c.RoutingKey = "{{levle 1}}" }, hasFilters: true, want: []string{`amqp.routing_key: `, `"levle" not defined`}},
		{name: "routing key template misuse", edit: func(c *Config) { c.RoutingKey = `{{level "x"}}` }, hasFilters: true, want: []string{"amqp.routing_key: "}},
		{name: "unroutable", edit: func(c *Config) { c.Unroutable = "drop" }, hasFilters: true, want: []string{`amqp.unroutable: "drop": use dead_letter or retry`}},
		{name: "unroutable without mandatory", edit: func(c *Config) { c.Mandatory = ptr(false); c.Unroutable = "retry" }, hasFilters: true, want: []string{"amqp.unroutable: applies only with mandatory: true"}},
		{name: "negative durations", edit: func(c *Config) { c.ConfirmTimeout = -1; c.ReconnectMax = -time.Second }, want: []string{"amqp.confirm_timeout: ", "amqp.reconnect_max: "}},
		{name: "sub-second heartbeat", edit: func(c *Config) { c.Heartbeat = 500 * time.Millisecond }, want: []string{"amqp.heartbeat: 500ms"}},
		{name: "reconnect bounds", edit: func(c *Config) { c.ReconnectMin = time.Minute; c.ReconnectMax = time.Second }, want: []string{"amqp.reconnect_min: 1m0s is more than reconnect_max 1s"}},
		{name: "inbound queue required", edit: func(c *Config) { c.In = append(c.In, Inbound{}) }, want: []string{"amqp.in[1].queue: required"}},
		{name: "inbound qos", edit: func(c *Config) { c.In[0].QoS = ptr(byte(3)) }, want: []string{"amqp.in[0].qos: 3: use 0, 1 or 2"}},
		{name: "inbound prefetch", edit: func(c *Config) { c.In[0].Prefetch = -1 }, want: []string{"amqp.in[0].prefetch: -1"}},
		{name: "inbound declare settings without declare", edit: func(c *Config) { c.In[0].Declare = false }, want: []string{"amqp.in[0].dead_letter_exchange: applies only with declare: true"}},
		{name: "inbound binding to default exchange", edit: func(c *Config) { c.In[0].Bindings[0].Exchange = "" }, want: []string{"amqp.in[0].bindings[0].exchange: required"}},
		{name: "inbound topic template", edit: func(c *Config) { c.In[0].Topic = "{{header}}" }, want: []string{"amqp.in[0].topic: "}},
		{name: "inbound arguments", edit: func(c *Config) { c.In[0].Arguments = map[string]any{"x-bad": struct{}{}} }, want: []string{"amqp.in[0].arguments: x-bad: struct {} values are not supported"}},
		{name: "inbound dlx conflict", edit: func(c *Config) { c.In[0].Arguments = map[string]any{"x-dead-letter-exchange": "other"} }, want: []string{"amqp.in[0].dead_letter_exchange: \"dlx\" conflicts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.edit(&c)
			err := c.Validate(tc.hasFilters)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cr") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// All problems are reported at once, one per line.
func TestValidateJoinsErrors(t *testing.T) {
	c := Config{URL: "http://x", Exchange: Exchange{Type: "fan"}, In: []Inbound{{}, {Queue: "q", QoS: ptr(byte(9))}}}
	err := c.Validate(true)
	if n := len(strings.Split(err.Error(), "\n")); n != 5 {
		t.Fatalf("want 5 errors, got %d:\n%v", n, err)
	}
}

func TestNewSenderAndConsumerValidate(t *testing.T) {
	c := validConfig()
	c.Exchange.Type = "fan"
	if _, err := NewSender("b", c, discard); err == nil || !strings.Contains(err.Error(), "amqp.exchange.type") {
		t.Fatalf("NewSender: %v", err)
	}
	c = validConfig()
	in := c.In[0]
	in.QoS = ptr(byte(5))
	c.In[0] = in
	if _, err := NewConsumer("b", c, in, func(ctx context.Context, pk packets.Packet) error { return nil }, discard); err == nil || !strings.Contains(err.Error(), "amqp.in[0].qos") {
		t.Fatalf("NewConsumer: %v", err)
	}
	if _, err := NewConsumer("b", validConfig(), validConfig().In[0], nil, discard); err == nil {
		t.Fatal("NewConsumer without publish")
	}
	if _, err := NewConsumer("b", validConfig(), Inbound{}, (&recorder{}).publish, discard); err == nil || !strings.Contains(err.Error(), "amqp.in[?].queue: required") {
		t.Fatalf("NewConsumer with an entry not in cfg.In: %v", err)
	}
}

// TestDeps keeps the package a leaf: it may use the bridge machinery, the
// AMQP client and mochi's packets, never the broker, the other features or
// testing (STYLE.md §1).
func TestDeps(t *testing.T) {
	deps.Forbid(t, "bridge/amqp", map[string]string{
		"github.com/motemq/mote/broker":      "the broker wires features; features do not import it",
		"github.com/motemq/mote/admin":       "a feature",
		"github.com/motemq/mote/rules":       "a feature",
		"github.com/motemq/mote/auth":        "a feature",
		"github.com/motemq/mote/queue":       "a feature",
		"github.com/motemq/mote/bridge/http": "another bridge",
		"github.com/motemq/mote/bridge/mqtt": "another bridge",
	})
}
