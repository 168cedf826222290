package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/motemq/mote/persistence"
	"github.com/motemq/mote/rules"
)

// Config is the whole broker configuration. Defaults < file < environment
// (MOTE_*) < flags; see LoadConfig.
type Config struct {
	DataDir     string            `yaml:"data_dir"`
	Fsync       persistence.Fsync `yaml:"fsync"`
	Log         LogConfig         `yaml:"log"`
	Listeners   Listeners         `yaml:"listeners"`
	MQTT        MQTTConfig        `yaml:"mqtt"`
	Persistence StoreConfig       `yaml:"persistence"`
	Auth        AuthConfig        `yaml:"auth"`
	Limits      LimitsConfig      `yaml:"limits"`
	Queues      []QueueConfig     `yaml:"queues"`
	Bridges     []BridgeConfig    `yaml:"bridges"`
	Admin       AdminConfig       `yaml:"admin"`
	// Rules are the top-level keys rules, rules_file, events and tables.
	Rules rules.Config `yaml:",inline"`

	file string // where the file layer came from, for messages
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // auto (text on a terminal, else JSON), text, json
}

// Listeners are the network endpoints. An empty address turns one off.
type Listeners struct {
	MQTT  TCPListener `yaml:"mqtt"`
	MQTTS TCPListener `yaml:"mqtts"`
	WS    WSListener  `yaml:"ws"`
	WSS   WSListener  `yaml:"wss"`
	HTTP  HTTPConfig  `yaml:"http"`
}

// TLSFiles are PEM files for a TLS listener.
type TLSFiles struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"` // when set, clients must present a certificate it signed (mTLS)
}

// TCPListener is an MQTT listener on TCP (mqtt) or TLS (mqtts).
type TCPListener struct {
	Address  string `yaml:"address"`
	TLSFiles `yaml:",inline"`
}

// WSListener is an MQTT-over-WebSocket listener (ws or wss).
type WSListener struct {
	Address        string   `yaml:"address"`
	Path           string   `yaml:"path"`
	AllowedOrigins []string `yaml:"allowed_origins"`
	TrustedProxies []string `yaml:"trusted_proxies"`
	TLSFiles       `yaml:",inline"`
}

// HTTPConfig is the HTTP listener (health, and later the admin API).
type HTTPConfig struct {
	Address string `yaml:"address"`
}

// MQTTConfig holds protocol limits.
type MQTTConfig struct {
	MaxPacketSize     Size     `yaml:"max_packet_size"`
	MaxKeepalive      Duration `yaml:"max_keepalive"`
	ConnectTimeout    Duration `yaml:"connect_timeout"`
	WriteTimeout      Duration `yaml:"write_timeout"`
	ReceiveMaximum    int      `yaml:"receive_maximum"`
	MaxInflight       int      `yaml:"max_inflight"`
	MaxQueuedMessages int      `yaml:"max_queued_messages"`
	Backpressure      Duration `yaml:"backpressure"`
	// QoS0Backpressure bounds how long a QoS 0 publisher is held when a
	// delivery of its message was dropped because the subscriber's write
	// queue (WriteQueue) is full: it waits until the subscriber has
	// written a quarter of the queue, so many publishers are paced to one
	// subscriber instead of having most of their messages dropped. A
	// subscriber that writes nothing during a whole wait holds nobody again
	// until it writes. 0 turns it off.
	QoS0Backpressure  Duration `yaml:"qos0_backpressure"`
	TopicAliasMaximum int      `yaml:"topic_alias_maximum"`
	MaxSessionExpiry  Duration `yaml:"max_session_expiry"`
	MaxMessageExpiry  Duration `yaml:"max_message_expiry"`
	MaxUserProperties int      `yaml:"max_user_properties"`
	MaxTopicLength    int      `yaml:"max_topic_length"`
	MaxTopicLevels    int      `yaml:"max_topic_levels"`
	MaxClients        int      `yaml:"max_clients"`
	WriteQueue        int      `yaml:"write_queue"`
	SysInterval       Duration `yaml:"sys_interval"`
}

// StoreConfig tunes the store's compaction.
type StoreConfig struct {
	ShrinkMinSize  Size     `yaml:"shrink_min_size"`
	ShrinkRatio    float64  `yaml:"shrink_ratio"`
	ShrinkInterval Duration `yaml:"shrink_interval"`
}

// Defaults returns the configuration used with no file, no environment and
// no flags.
func Defaults() *Config {
	return &Config{
		DataDir: "./data",
		Fsync:   persistence.FsyncAlways,
		Log:     LogConfig{Level: "info", Format: "auto"},
		Listeners: Listeners{
			MQTT: TCPListener{Address: ":1883"},
			WS:   WSListener{Address: ":8083", Path: "/mqtt"},
			WSS:  WSListener{Path: "/mqtt"},
			HTTP: HTTPConfig{Address: ":8080"},
		},
		MQTT: MQTTConfig{
			MaxPacketSize:     1 << 20,
			MaxKeepalive:      Duration(time.Hour),
			ConnectTimeout:    Duration(10 * time.Second),
			WriteTimeout:      Duration(5 * time.Second),
			ReceiveMaximum:    1024,
			MaxInflight:       256,
			MaxQueuedMessages: 10000,
			Backpressure:      Duration(5 * time.Second),
			QoS0Backpressure:  Duration(20 * time.Millisecond),
			TopicAliasMaximum: 64,
			MaxSessionExpiry:  Duration(7 * 24 * time.Hour),
			MaxUserProperties: 64,
			MaxTopicLength:    16384,
			MaxTopicLevels:    128,
			WriteQueue:        1024,
			SysInterval:       Duration(10 * time.Second),
		},
		Auth:   AuthConfig{WatchInterval: Duration(2 * time.Second)},
		Limits: defaultLimits(),
		Persistence: StoreConfig{
			ShrinkMinSize:  32 << 20,
			ShrinkRatio:    2,
			ShrinkInterval: Duration(time.Minute),
		},
	}
}

// Overrides are values from the environment or flags; nil means unset.
type Overrides struct {
	Config   *string
	DataDir  *string
	MQTT     *string
	WS       *string
	HTTP     *string
	LogLevel *string
	Fsync    *string
}

// EnvOverrides reads MOTE_CONFIG, MOTE_DATA_DIR, MOTE_MQTT, MOTE_WS,
// MOTE_HTTP, MOTE_LOG_LEVEL and MOTE_FSYNC. A variable set to the empty
// string is set (an empty address turns a listener off).
func EnvOverrides(lookup func(string) (string, bool)) Overrides {
	get := func(name string) *string {
		if v, ok := lookup(name); ok {
			return &v
		}
		return nil
	}
	return Overrides{
		Config:   get("MOTE_CONFIG"),
		DataDir:  get("MOTE_DATA_DIR"),
		MQTT:     get("MOTE_MQTT"),
		WS:       get("MOTE_WS"),
		HTTP:     get("MOTE_HTTP"),
		LogLevel: get("MOTE_LOG_LEVEL"),
		Fsync:    get("MOTE_FSYNC"),
	}
}

// merge returns o with unset values taken from base.
func (o Overrides) merge(base Overrides) Overrides {
	pick := func(a, b *string) *string {
		if a != nil {
			return a
		}
		return b
	}
	return Overrides{
		Config:   pick(o.Config, base.Config),
		DataDir:  pick(o.DataDir, base.DataDir),
		MQTT:     pick(o.MQTT, base.MQTT),
		WS:       pick(o.WS, base.WS),
		HTTP:     pick(o.HTTP, base.HTTP),
		LogLevel: pick(o.LogLevel, base.LogLevel),
		Fsync:    pick(o.Fsync, base.Fsync),
	}
}

func (o Overrides) apply(c *Config) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.DataDir, o.DataDir)
	set(&c.Listeners.MQTT.Address, o.MQTT)
	set(&c.Listeners.WS.Address, o.WS)
	set(&c.Listeners.HTTP.Address, o.HTTP)
	set(&c.Log.Level, o.LogLevel)
	if o.Fsync != nil {
		c.Fsync = persistence.Fsync(*o.Fsync)
	}
}

// LoadConfig builds the configuration: defaults, then the file (from flags,
// else MOTE_CONFIG), then the environment, then flags. It returns every
// problem found, joined.
func LoadConfig(flags, env Overrides) (*Config, error) {
	o := flags.merge(env)
	c := Defaults()
	if o.Config != nil && *o.Config != "" {
		if err := c.loadFile(*o.Config); err != nil {
			return nil, err
		}
	}
	env.apply(c)
	flags.apply(c)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseConfig reads YAML over the defaults (for tests and --check-config).
func ParseConfig(name string, data []byte) (*Config, error) {
	c := Defaults()
	if err := c.decode(name, data); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) loadFile(name string) error {
	data, err := os.ReadFile(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("config: %s: file not found (check --config or MOTE_CONFIG)", name)
		}
		return fmt.Errorf("config: %w", err)
	}
	return c.decode(name, data)
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

func (c *Config) decode(name string, data []byte) error {
	c.file = name
	if len(bytes.TrimSpace(data)) == 0 {
		return nil // an empty file means defaults
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // an unknown key is an error, not a silent default
	err := dec.Decode(c)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, 0, len(te.Errors))
		for _, e := range te.Errors {
			errs = append(errs, fmt.Errorf("config: %s:%s", name, rewordYAML(e)))
		}
		return errors.Join(errs...)
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if n, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(n, "line ") {
		// Our own UnmarshalYAML errors ("line N: ...") read like yaml's.
		return fmt.Errorf("config: %s:%s: %s", name, strings.TrimPrefix(n, "line "), rest)
	}
	return fmt.Errorf("config: %s: %s", name, msg)
}

// rewordYAML turns yaml.v3's messages into "line N: what to fix".
func rewordYAML(msg string) string {
	line := ""
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line = m[1]
		msg = msg[len(m[0]):]
	}
	if strings.HasPrefix(msg, "field ") && strings.Contains(msg, " not found in type ") {
		key := strings.TrimSuffix(strings.TrimPrefix(msg, "field "), msg[strings.Index(msg, " not found in type "):])
		msg = fmt.Sprintf("unknown key %q (see the configuration reference in README.md)", key)
	}
	if line != "" {
		return line + ": " + msg
	}
	return " " + msg
}

// Validate checks every field and returns all problems, each naming the key
// and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty (the store lives there; default ./data)")
	}
	if c.Fsync != persistence.FsyncAlways && c.Fsync != persistence.FsyncEverySecond {
		bad("fsync", "%q is not a policy: use always or everysec", c.Fsync)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		bad("log.format", "%q: use auto, text or json", c.Log.Format)
	}
	checkAddr := func(key, addr string) {
		if addr == "" {
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port (for example :1883 or 127.0.0.1:1883): %v", addr, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad(key, "%q: port must be a number from 0 to 65535", addr)
		}
	}
	checkTLS := func(key string, addr string, f TLSFiles, required bool) {
		if addr == "" {
			return
		}
		if required && (f.Cert == "" || f.Key == "") {
			bad(key+".cert", "a TLS listener needs cert and key (PEM files), or an empty address to turn it off")
			return
		}
		if !required && (f.Cert != "" || f.Key != "" || f.ClientCA != "") {
			bad(key, "cert/key/client_ca belong to the TLS listeners (mqtts, wss)")
			return
		}
		for _, p := range []struct{ k, v string }{{"cert", f.Cert}, {"key", f.Key}, {"client_ca", f.ClientCA}} {
			if p.v == "" {
				continue
			}
			if _, err := os.Stat(p.v); err != nil {
				bad(key+"."+p.k, "file not found: %s", p.v)
			}
		}
	}
	checkAddr("listeners.mqtt.address", c.Listeners.MQTT.Address)
	checkTLS("listeners.mqtt", c.Listeners.MQTT.Address, c.Listeners.MQTT.TLSFiles, false)
	checkAddr("listeners.mqtts.address", c.Listeners.MQTTS.Address)
	checkTLS("listeners.mqtts", c.Listeners.MQTTS.Address, c.Listeners.MQTTS.TLSFiles, true)
	for _, w := range []struct {
		key string
		l   WSListener
		tls bool
	}{{"listeners.ws", c.Listeners.WS, false}, {"listeners.wss", c.Listeners.WSS, true}} {
		checkAddr(w.key+".address", w.l.Address)
		checkTLS(w.key, w.l.Address, w.l.TLSFiles, w.tls)
		if w.l.Address != "" && !strings.HasPrefix(w.l.Path, "/") {
			bad(w.key+".path", "%q must start with / (default /mqtt)", w.l.Path)
		}
		for i, o := range w.l.AllowedOrigins {
			if o != "*" && !strings.Contains(o, "://") {
				bad(fmt.Sprintf("%s.allowed_origins[%d]", w.key, i), "%q: write an origin as scheme://host[:port], or * for any", o)
			}
		}
		for i, p := range w.l.TrustedProxies {
			if _, err := parsePrefix(p); err != nil {
				bad(fmt.Sprintf("%s.trusted_proxies[%d]", w.key, i), "%q: want an IP address or CIDR prefix", p)
			}
		}
	}
	checkAddr("listeners.http.address", c.Listeners.HTTP.Address)
	if c.Listeners.MQTT.Address == "" && c.Listeners.MQTTS.Address == "" && c.Listeners.WS.Address == "" && c.Listeners.WSS.Address == "" {
		bad("listeners", "every MQTT listener is off: set at least one of mqtt, mqtts, ws, wss")
	}

	m := c.MQTT
	if m.MaxPacketSize < 64 || m.MaxPacketSize > 268435455 {
		bad("mqtt.max_packet_size", "%d: want 64 bytes to 256MiB", m.MaxPacketSize)
	}
	if m.MaxKeepalive < 0 || time.Duration(m.MaxKeepalive) > 65535*time.Second {
		bad("mqtt.max_keepalive", "%v: want 0 (no cap) to 65535s", time.Duration(m.MaxKeepalive))
	}
	if m.ConnectTimeout <= 0 {
		bad("mqtt.connect_timeout", "must be positive (idle sockets before CONNECT are closed after it)")
	}
	if m.WriteTimeout < 0 {
		bad("mqtt.write_timeout", "must not be negative (0 turns the write deadline off)")
	}
	if m.ReceiveMaximum < 1 || m.ReceiveMaximum > 65535 {
		bad("mqtt.receive_maximum", "%d: want 1 to 65535", m.ReceiveMaximum)
	}
	if m.MaxInflight < 1 || m.MaxInflight > 65535 {
		bad("mqtt.max_inflight", "%d: want 1 to 65535", m.MaxInflight)
	}
	if m.MaxQueuedMessages < 1 {
		bad("mqtt.max_queued_messages", "%d: want at least 1", m.MaxQueuedMessages)
	}
	if m.TopicAliasMaximum < 0 || m.TopicAliasMaximum > 65535 {
		bad("mqtt.topic_alias_maximum", "%d: want 0 to 65535", m.TopicAliasMaximum)
	}
	if m.MaxSessionExpiry < 0 || time.Duration(m.MaxSessionExpiry) > math.MaxUint32*time.Second {
		bad("mqtt.max_session_expiry", "%v: want 0 to 136 years", time.Duration(m.MaxSessionExpiry))
	}
	if m.MaxMessageExpiry < 0 {
		bad("mqtt.max_message_expiry", "must not be negative (0: messages without an expiry never expire)")
	}
	if m.MaxUserProperties < 0 {
		bad("mqtt.max_user_properties", "must not be negative (0: no limit)")
	}
	if m.MaxTopicLength < 1 || m.MaxTopicLength > 65535 {
		bad("mqtt.max_topic_length", "%d: want 1 to 65535", m.MaxTopicLength)
	}
	if m.MaxTopicLevels < 0 {
		bad("mqtt.max_topic_levels", "must not be negative (0: no limit)")
	}
	if m.MaxClients < 0 {
		bad("mqtt.max_clients", "must not be negative (0: no limit)")
	}
	if m.WriteQueue < 1 {
		bad("mqtt.write_queue", "%d: want at least 1", m.WriteQueue)
	}
	if m.SysInterval < Duration(time.Second) {
		bad("mqtt.sys_interval", "%v: want at least 1s", time.Duration(m.SysInterval))
	}
	if c.Persistence.ShrinkRatio != 0 && !(c.Persistence.ShrinkRatio > 1) { // !(>) also refuses NaN
		bad("persistence.shrink_ratio", "%v: want more than 1 (compact when the file is this many times its compacted size)", c.Persistence.ShrinkRatio)
	}
	if m.Backpressure < 0 {
		bad("mqtt.backpressure", "must not be negative (0 turns it off)")
	}
	if m.QoS0Backpressure < 0 {
		bad("mqtt.qos0_backpressure", "must not be negative (0 turns it off)")
	}
	if c.Persistence.ShrinkInterval < 0 {
		bad("persistence.shrink_interval", "must not be negative")
	}
	c.validateAuth(bad)
	c.validateQueues(bad)
	c.validateBridges(bad)
	c.validateAdmin(bad)
	c.validateRules(bad)
	if len(errs) == 0 {
		return nil
	}
	if c.file != "" {
		errs = append([]error{fmt.Errorf("config: %s is not valid:", c.file)}, errs...)
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q: use debug, info, warn or error", s)
	}
	return l, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// tlsConfig loads a TLS listener's files.
func (f TLSFiles) tlsConfig(key string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("config: %s.cert/key: %v", key, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCA != "" {
		pem, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("config: %s.client_ca: %v", key, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: %s.client_ca: %s holds no PEM certificate", key, f.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Size is a byte count; YAML accepts a number or a string such as 512KiB,
// 1MiB, 2GB.
type Size int64

// UnmarshalYAML parses a size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*s = v
	return nil
}

// ParseSize parses "1048576", "1MiB", "512KiB", "1MB", "2G".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("%q is not a size (write 1048576, 512KiB, 1MiB, 2GB)", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kb": 1e3, "kib": 1 << 10,
		"m": 1 << 20, "mb": 1e6, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1e9, "gib": 1 << 30,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q (use B, KiB, MiB, GiB, KB, MB, GB)", s, unit)
	}
	if f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(f * mult), nil
}

// Duration is a time.Duration written as "10s", "5m", "1h".
type Duration time.Duration

// UnmarshalYAML parses a duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (write 10s, 5m, 1h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
