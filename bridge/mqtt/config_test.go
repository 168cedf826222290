package mqtt

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"gopkg.in/yaml.v3"

	"github.com/motemq/mote/bridge"
	"github.com/motemq/mote/internal/deps"
)

func good() Config {
	return Config{URL: "tcp://broker.example.com:1883", Topics: []Topic{{Pattern: "sensors/#", QoS: 1}}}
}

func TestValidate(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"every scheme", func(c *Config) { c.URL = "mqtts://h" }, ""},
		{"ssl with tls", func(c *Config) { c.URL = "ssl://h:8883"; c.TLS.CAFile = "/ca.pem" }, ""},
		{"full", func(c *Config) {
			c.URL, c.ProtocolVersion, c.ClientID, c.Username, c.Password = "tls://h:8883", 5, "x", "u", "${MOTE_PW}"
			c.CleanSession, c.SessionExpiry, c.Keepalive = &no, 2*time.Hour, 30*time.Second
			c.Topics = []Topic{{Pattern: "", Direction: "both", QoS: 2, LocalPrefix: "a/b", RemotePrefix: "c/d"}, {Pattern: "+/x", Direction: "in"}}
		}, ""},
		{"v4", func(c *Config) { c.ProtocolVersion = 4; c.Username, c.Password = "u", "p" }, ""},
		{"url missing", func(c *Config) { c.URL = "" }, "mqtt.url: missing: give the remote broker"},
		{"url scheme", func(c *Config) { c.URL = "http://h:80" }, `mqtt.url: unsupported scheme "http": use tcp://, mqtt://, ssl://, tls:// or mqtts://`},
		{"url no scheme", func(c *Config) { c.URL = "broker:1883" }, `mqtt.url: unsupported scheme "broker"`},
		{"url host", func(c *Config) { c.URL = "tcp://:1883" }, "has no host"},
		{"url port", func(c *Config) { c.URL = "tcp://h:99999" }, `port "99999" is not a number from 1 to 65535`},
		{"url path", func(c *Config) { c.URL = "tcp://h:1883/x" }, "a path, query or fragment means nothing here"},
		{"url credentials", func(c *Config) { c.URL = "tcp://u:p@h:1883" }, "set username and password instead"},
		{"tls without tls scheme", func(c *Config) { c.TLS.CAFile = "/ca.pem" }, "mqtt.tls: set, but url"},
		{"tls half a pair", func(c *Config) { c.URL = "mqtts://h"; c.TLS.CertFile = "/c.pem" }, "mqtt.tls: give both cert_file and key_file"},
		{"protocol", func(c *Config) { c.ProtocolVersion = 3 }, "mqtt.protocol_version: 3: use 4 (3.1.1) or 5"},
		{"client id", func(c *Config) { c.ClientID = "a\x00b" }, "mqtt.client_id: must be UTF-8 without NUL"},
		{"v4 password alone", func(c *Config) { c.ProtocolVersion = 4; c.Password = "p" }, "mqtt.password: set without username"},
		{"env name", func(c *Config) { c.Password = "${1X}" }, `mqtt.password: "1X" is not a valid environment variable name`},
		{"expiry v4", func(c *Config) { c.ProtocolVersion = 4; c.SessionExpiry = time.Hour }, "mqtt.session_expiry: MQTT 3.1.1 has no session expiry"},
		{"expiry clean", func(c *Config) { c.CleanSession = &yes; c.SessionExpiry = time.Hour }, "mqtt.session_expiry: set with clean_session true"},
		{"expiry fraction", func(c *Config) { c.SessionExpiry = 1500 * time.Millisecond }, "mqtt.session_expiry: 1.5s: use whole seconds"},
		{"keepalive", func(c *Config) { c.Keepalive = 500 * time.Millisecond }, "mqtt.keepalive: 500ms: use whole seconds, from 1s to 18h12m15s"},
		{"keepalive big", func(c *Config) { c.Keepalive = 24 * time.Hour }, "mqtt.keepalive: 24h0m0s"},
		{"negative timeout", func(c *Config) { c.ConnectTimeout = -time.Second }, "mqtt.connect_timeout: -1s: must not be negative"},
		{"reconnect order", func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Minute, time.Second }, "mqtt.reconnect_min: 1m0s is more than reconnect_max 1s"},
		{"no topics", func(c *Config) { c.Topics = nil }, "mqtt.topics: at least one is required"},
		{"direction", func(c *Config) {
			c.Topics = []Topic{{Pattern: "a"}, {Pattern: "b"}, {Pattern: "c", Direction: "sideways"}}
		}, `mqtt.topics[2].direction: "sideways": use in, out or both`},
		{"qos", func(c *Config) { c.Topics[0].QoS = 3 }, "mqtt.topics[0].qos: 3: use 0, 1 or 2"},
		{"wildcard prefix", func(c *Config) { c.Topics[0].LocalPrefix = "site/+/" }, `mqtt.topics[0].local_prefix: "site/+/": wildcards (+ #) are not allowed in a prefix`},
		{"remote wildcard prefix", func(c *Config) { c.Topics[0].RemotePrefix = "#/" }, `mqtt.topics[0].remote_prefix: "#/": wildcards`},
		{"bad pattern", func(c *Config) { c.Topics[0].Pattern = "a/#/b" }, `mqtt.topics[0].pattern: "a/#/b" with local_prefix "" makes "a/#/b", which is not a valid topic filter`},
		{"bad in pattern", func(c *Config) { c.Topics[0] = Topic{Pattern: "x+", Direction: "in", RemotePrefix: "r/"} }, `with remote_prefix "r/" makes "r/x+"`},
		{"empty filter", func(c *Config) { c.Topics[0].Pattern = "" }, "mqtt.topics[0].pattern: missing"},
		{"pattern NUL", func(c *Config) { c.Topics[0].Pattern = "a\x00" }, "mqtt.topics[0].pattern: must be UTF-8 without NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no error, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{URL: "http://h", ProtocolVersion: 7, Topics: []Topic{{Pattern: "a", Direction: "up", QoS: 9}}}
	lines := strings.Split(c.Validate().Error(), "\n")
	for _, want := range []string{"mqtt.url:", "mqtt.protocol_version:", "mqtt.topics[0].direction:", "mqtt.topics[0].qos:"} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("no %q line in %q", want, lines)
		}
	}
}

func TestTopicYAML(t *testing.T) {
	const doc = `
url: tcp://h:1883
keepalive: 30s
session_expiry: 2h
topics:
  - pattern: "a/#"
  - pattern: "b/#"
    qos: 0
    direction: in
    local_prefix: "l/"
    remote_prefix: "r/"
`
	var c Config
	d := yaml.NewDecoder(strings.NewReader(doc))
	d.KnownFields(true)
	if err := d.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Keepalive != 30*time.Second || c.SessionExpiry != 2*time.Hour {
		t.Errorf("durations %v %v", c.Keepalive, c.SessionExpiry)
	}
	want := []Topic{{Pattern: "a/#", QoS: 1}, {Pattern: "b/#", QoS: 0, Direction: "in", LocalPrefix: "l/", RemotePrefix: "r/"}}
	if !slices.Equal(c.Topics, want) {
		t.Errorf("topics %+v, want %+v", c.Topics, want)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}

	d = yaml.NewDecoder(strings.NewReader("topics:\n  - pattern: a\n    prefix: x\n"))
	d.KnownFields(true)
	if err := d.Decode(&c); err == nil || !strings.Contains(err.Error(), "line 3: field prefix not found in a topics entry") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestOutFilters(t *testing.T) {
	c := Config{Topics: []Topic{
		{Pattern: "a/#", LocalPrefix: "site1/"},
		{Pattern: "b/#", Direction: "in", LocalPrefix: "site1/"},
		{Pattern: "c/+", Direction: "both"},
		{Pattern: "a/#", Direction: "out", LocalPrefix: "site1/", RemotePrefix: "other/"},
		{Pattern: "", Direction: "out", LocalPrefix: "one/topic"},
	}}
	if got, want := c.OutFilters(), []string{"site1/a/#", "c/+", "one/topic"}; !slices.Equal(got, want) {
		t.Fatalf("OutFilters %q, want %q", got, want)
	}
}

func TestNew(t *testing.T) {
	t.Setenv("MOTE_TEST_BRIDGE_PW", "s3cret")
	c := good()
	c.Username, c.Password = "bridge", "${MOTE_TEST_BRIDGE_PW}"
	b, err := New("site1", c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.cfg.Password != "s3cret" || b.cfg.Username != "bridge" {
		t.Errorf("credentials %q %q", b.cfg.Username, b.cfg.Password)
	}
	if b.cfg.ClientID != "mote-bridge-site1" || b.cfg.ProtocolVersion != 5 || *b.cfg.CleanSession || b.cfg.SessionExpiry != time.Hour ||
		b.cfg.Keepalive != time.Minute || b.cfg.ReconnectMin != 200*time.Millisecond || b.cfg.ReconnectMax != 30*time.Second {
		t.Errorf("defaults %+v", b.cfg)
	}
	b.Stop() // never started: nothing to wait for
	b.Stop()

	c.Password = "${MOTE_TEST_BRIDGE_UNSET}"
	if _, err := New("site1", c, nil, nil); err == nil || !strings.Contains(err.Error(), "mqtt.password: environment variable MOTE_TEST_BRIDGE_UNSET is not set") {
		t.Errorf("unset variable: %v", err)
	}
	c = good()
	c.Topics[0].Direction = "in"
	if _, err := New("site1", c, nil, nil); err == nil || !strings.Contains(err.Error(), "need a publish function") {
		t.Errorf("in without publish: %v", err)
	}
	c = good()
	c.URL, c.TLS.CAFile = "mqtts://h", "/nonexistent/ca.pem"
	if _, err := New("site1", c, nil, nil); err == nil || !strings.Contains(err.Error(), "mqtt.tls.ca_file:") {
		t.Errorf("missing CA file: %v", err)
	}
	if _, err := New("site1", Config{}, nil, nil); err == nil {
		t.Error("New accepted an invalid config")
	}
}

func TestMapping(t *testing.T) {
	c := good()
	c.Topics = []Topic{
		{Pattern: "sensors/#", QoS: 1, LocalPrefix: "site1/", RemotePrefix: "factory/site1/"},
		{Pattern: "sensors/#", QoS: 2, LocalPrefix: "site1/", RemotePrefix: "never/"},
		{Pattern: "cmd/+", Direction: "both", QoS: 2, LocalPrefix: "site1/", RemotePrefix: "factory/site1/"},
		{Pattern: "", Direction: "in", LocalPrefix: "local/one", RemotePrefix: "remote/one"},
	}
	b, err := New("m", c, func(context.Context, packets.Packet) error { return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		local, remote string
		qos           byte
	}{
		{"site1/sensors/t", "factory/site1/sensors/t", 1},
		{"site1/cmd/x", "factory/site1/cmd/x", 2},
		{"site1sensors/t", "", 0},
		{"site1/cmd/x/y", "", 0},
		{"local/one", "", 0},
	} {
		r, got, ok := b.mapOut(tc.local)
		if got != tc.remote || ok != (tc.remote != "") || (ok && r.QoS != tc.qos) {
			t.Errorf("mapOut(%q) = %q %v (qos %d), want %q (qos %d)", tc.local, got, ok, r.QoS, tc.remote, tc.qos)
		}
	}
	for remote, local := range map[string]string{
		"factory/site1/cmd/x":     "site1/cmd/x",
		"remote/one":              "local/one",
		"factory/site1/sensors/t": "", // out only
		"remote/one/two":          "",
	} {
		if _, got, ok := b.mapIn(remote); got != local || ok != (local != "") {
			t.Errorf("mapIn(%q) = %q %v, want %q", remote, got, ok, local)
		}
	}
	if got := swapPrefix("site1/replies/1", "site1/", "factory/site1/"); got != "factory/site1/replies/1" {
		t.Errorf("response topic %q", got)
	}
	if got := swapPrefix("elsewhere/1", "site1/", "factory/site1/"); got != "elsewhere/1" {
		t.Errorf("response topic without the prefix %q", got)
	}
	// A topic the bridge's filters let through but no out topic maps is
	// the broker's wiring error: permanent.
	if err := b.sendOne(context.Background(), nil, msg("nowhere/x", "p", 1)); !bridge.IsPermanent(err) {
		t.Errorf("unmapped topic: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	b := &Bridge{cfg: Config{ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second}}
	for n, hi := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		for range 20 {
			if d := b.backoff(n); d < hi/2 || d > hi {
				t.Fatalf("backoff(%d) = %v, want %v..%v", n, d, hi/2, hi)
			}
		}
	}
}

func TestEchoes(t *testing.T) {
	e := newEchoes(30*time.Second, 3)
	clock := time.Now()
	e.now = func() time.Time { return clock }
	e.add("t", []byte("a"))
	e.add("t", []byte("a"))
	if e.take("u", []byte("a")) || e.take("t", []byte("b")) {
		t.Fatal("matched another topic or payload")
	}
	if !e.take("t", []byte("a")) || !e.take("t", []byte("a")) || e.take("t", []byte("a")) {
		t.Fatal("each add matches one take")
	}
	// Capacity: the oldest goes first.
	for _, p := range []string{"1", "2", "3", "4"} {
		e.add("t", []byte(p))
	}
	if e.len() != 3 || e.take("t", []byte("1")) || !e.take("t", []byte("4")) {
		t.Fatalf("capacity: %d remembered", e.len())
	}
	// Expiry: 2 and 3 are 30 s old.
	clock = clock.Add(20 * time.Second)
	e.add("t", []byte("5"))
	clock = clock.Add(10 * time.Second)
	if e.take("t", []byte("2")) || e.len() != 1 || !e.take("t", []byte("5")) {
		t.Fatal("expiry")
	}
}

// TestDeps keeps the production code off the broker (an import cycle
// later), the other bridges and testing (STYLE.md §1).
func TestDeps(t *testing.T) {
	allowed := []string{
		"github.com/motemq/mote/bridge/mqtt", "github.com/motemq/mote/bridge",
		"github.com/motemq/mote/internal/topic", "github.com/motemq/mote/internal/hookset",
		"github.com/motemq/mote/persistence",
	}
	for _, p := range deps.Of(t) {
		if p == "testing" || strings.HasPrefix(p, "github.com/motemq/mote/") && !slices.Contains(allowed, p) {
			t.Errorf("bridge/mqtt depends on %s", p)
		}
	}
}
