package mqtt

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/motemq/mote/bridge"
	topics "github.com/motemq/mote/internal/topic"
)

// Config is the mqtt: section of a bridge entry in mote.yaml. Durations are
// written as "5s", "1h".
type Config struct {
	// URL is the remote broker: tcp:// or mqtt:// (default port 1883),
	// ssl://, tls:// or mqtts:// (TLS, default port 8883), then host:port.
	// Required.
	URL string `yaml:"url"`
	// TLS configures the TLS client of the ssl://, tls:// and mqtts://
	// schemes (ServerName defaults to the URL's host).
	TLS bridge.TLSConfig `yaml:"tls"`
	// ProtocolVersion is 5 (MQTT 5, the default) or 4 (MQTT 3.1.1, for
	// remotes that speak nothing newer).
	ProtocolVersion int `yaml:"protocol_version"`
	// ClientID is the bridge's client id on the remote (default
	// "mote-bridge-" + the bridge's name). It is stable on purpose: the
	// remote finds the bridge's persistent session by it. Set it when
	// several Mote instances bridge to the same remote, or they take the
	// session over from each other.
	ClientID string `yaml:"client_id"`
	// Username and Password are the credentials on the remote. A value
	// written exactly "${NAME}" is replaced by the environment variable
	// NAME when the bridge is built (New fails if NAME is not set), so
	// secrets need not be in the file.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CleanSession, when true, starts every connection with a fresh
	// session. The default (false) keeps a persistent session, like
	// Mosquitto's cleansession false: while the bridge is away, the remote
	// keeps its subscriptions and queues QoS 1/2 messages for it.
	CleanSession *bool `yaml:"clean_session"`
	// SessionExpiry is how long an MQTT 5 remote keeps the session after a
	// disconnect (default 1h; whole seconds). Not used by 3.1.1, whose
	// remote decides alone, nor with clean_session true.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// Keepalive is the MQTT keep alive (default 60s; whole seconds).
	Keepalive time.Duration `yaml:"keepalive"`
	// ConnectTimeout bounds dialling, the TLS handshake, CONNECT and
	// SUBSCRIBE (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between connection attempts, and between retries of a local publish
	// that failed (defaults 200ms and 30s).
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// Topics says what crosses the bridge, in Mosquitto's terms (topic
	// pattern direction qos local_prefix remote_prefix). At least one.
	Topics []Topic `yaml:"topics"`
}

// Topic is one entry of topics: Pattern below LocalPrefix on this broker
// is Pattern below RemotePrefix on the remote.
type Topic struct {
	// Pattern is a topic filter relative to the prefixes, e.g. "sensors/#".
	// It may be empty when the prefixes are whole topic names (a one-topic
	// mapping, as in Mosquitto).
	Pattern string `yaml:"pattern"`
	// Direction is out (local to remote, the default), in (remote to
	// local) or both.
	Direction string `yaml:"direction"`
	// QoS is the most QoS used on the far side: out, a message goes at
	// min(its QoS, QoS); in, the bridge subscribes at QoS. When the qos key
	// is absent from the YAML it is 1 (DefaultQoS); a Topic built in Go
	// gets what its QoS field says.
	QoS byte `yaml:"qos"`
	// LocalPrefix and RemotePrefix are prepended to Pattern on each side,
	// e.g. "site1/" and "factory/site1/". No wildcards.
	LocalPrefix  string `yaml:"local_prefix"`
	RemotePrefix string `yaml:"remote_prefix"`
}

// Directions of a Topic.
const (
	DirectionOut  = "out"
	DirectionIn   = "in"
	DirectionBoth = "both"
)

// Defaults.
const (
	DefaultProtocolVersion = 5
	DefaultClientIDPrefix  = "mote-bridge-"
	DefaultSessionExpiry   = time.Hour
	DefaultKeepalive       = 60 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultReconnectMin    = 200 * time.Millisecond
	DefaultReconnectMax    = 30 * time.Second
	DefaultQoS             = 1
)

// topicKeys are the keys of a topics entry, in the order the error lists
// them.
var topicKeys = []string{"pattern", "direction", "qos", "local_prefix", "remote_prefix"}

// UnmarshalYAML decodes a topics entry, with QoS 1 when the qos key is
// absent. yaml.v3 does not pass KnownFields on to custom unmarshalers, so
// it rejects unknown keys itself.
func (t *Topic) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			known := false
			for _, want := range topicKeys {
				known = known || k.Value == want
			}
			if !known {
				return fmt.Errorf("line %d: field %s not found in a topics entry (use %s)", k.Line, k.Value, strings.Join(topicKeys, ", "))
			}
		}
	}
	type plain Topic // no UnmarshalYAML: no recursion
	p := plain{QoS: DefaultQoS}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*t = Topic(p)
	return nil
}

// Validate checks cfg without touching the network or the environment.
// Errors name the field relative to the bridge entry ("mqtt.url: ...") and
// are joined with errors.Join.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("mqtt.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := parseURL(c.URL); err != nil {
		bad("url", "%v", err)
	} else if !isTLS(c.URL) && !c.TLS.IsZero() {
		bad("tls", "set, but url %q does not use TLS: write ssl://, tls:// or mqtts://", c.URL)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "give both cert_file and key_file, or neither")
	}
	version := c.ProtocolVersion
	switch version {
	case 0:
		version = DefaultProtocolVersion
	case 4, 5:
	default:
		bad("protocol_version", "%d: use 4 (3.1.1) or 5", c.ProtocolVersion)
	}
	if !utf8.ValidString(c.ClientID) || strings.ContainsRune(c.ClientID, 0) || len(c.ClientID) > 65535 {
		bad("client_id", "must be UTF-8 without NUL, at most 65535 bytes")
	}
	if version == 4 && c.Password != "" && c.Username == "" {
		bad("password", "set without username: MQTT 3.1.1 sends a password only with a username")
	}
	for _, f := range []struct {
		name string
		v    string
	}{{"username", c.Username}, {"password", c.Password}} {
		if name, ok := envRef(f.v); ok && !envName.MatchString(name) {
			bad(f.name, "%q is not a valid environment variable name", name)
		}
	}
	clean := c.CleanSession != nil && *c.CleanSession
	if c.SessionExpiry != 0 {
		switch {
		case version == 4:
			bad("session_expiry", "MQTT 3.1.1 has no session expiry (the remote decides how long it keeps the session): remove it or use protocol_version 5")
		case clean:
			bad("session_expiry", "set with clean_session true, whose session ends with the connection: remove one of them")
		case c.SessionExpiry < time.Second || c.SessionExpiry%time.Second != 0 || c.SessionExpiry > math.MaxUint32*time.Second:
			bad("session_expiry", "%s: use whole seconds, from 1s to %s", c.SessionExpiry, math.MaxUint32*time.Second)
		}
	}
	if c.Keepalive != 0 && (c.Keepalive < time.Second || c.Keepalive%time.Second != 0 || c.Keepalive > math.MaxUint16*time.Second) {
		bad("keepalive", "%s: use whole seconds, from 1s to %s", c.Keepalive, math.MaxUint16*time.Second)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"connect_timeout", c.ConnectTimeout}, {"reconnect_min", c.ReconnectMin}, {"reconnect_max", c.ReconnectMax}} {
		if d.v < 0 {
			bad(d.name, "%s: must not be negative", d.v)
		}
	}
	if c.ReconnectMin > 0 && c.ReconnectMax > 0 && c.ReconnectMin > c.ReconnectMax {
		bad("reconnect_min", "%s is more than reconnect_max %s", c.ReconnectMin, c.ReconnectMax)
	}
	if len(c.Topics) == 0 {
		bad("topics", "at least one is required, e.g. {pattern: \"sensors/#\", direction: out}")
	}
	for i, t := range c.Topics {
		field := fmt.Sprintf("topics[%d].", i)
		out, in, ok := t.directions()
		if !ok {
			bad(field+"direction", "%q: use in, out or both", t.Direction)
		}
		if t.QoS > 2 {
			bad(field+"qos", "%d: use 0, 1 or 2", t.QoS)
		}
		prefixOK := true
		for _, p := range []struct{ name, v string }{{"local_prefix", t.LocalPrefix}, {"remote_prefix", t.RemotePrefix}} {
			if strings.ContainsAny(p.v, "+#") {
				bad(field+p.name, "%q: wildcards (+ #) are not allowed in a prefix", p.v)
				prefixOK = false
			} else if !utf8.ValidString(p.v) || strings.ContainsRune(p.v, 0) {
				bad(field+p.name, "must be UTF-8 without NUL")
				prefixOK = false
			}
		}
		if !utf8.ValidString(t.Pattern) || strings.ContainsRune(t.Pattern, 0) {
			bad(field+"pattern", "must be UTF-8 without NUL")
			continue
		}
		if !prefixOK {
			continue
		}
		check := func(side, prefix string) {
			f := prefix + t.Pattern
			switch {
			case f == "":
				bad(field+"pattern", "missing: give a topic filter such as \"sensors/#\" (or both prefixes for a one-topic mapping)")
			case !topics.ValidFilter(f):
				bad(field+"pattern", "%q with %s_prefix %q makes %q, which is not a valid topic filter", t.Pattern, side, prefix, f)
			case len(f) > 65535:
				bad(field+"pattern", "%s_prefix+pattern is longer than 65535 bytes", side)
			}
		}
		if out || !ok {
			check("local", t.LocalPrefix)
		}
		if in && (t.RemotePrefix != t.LocalPrefix || !out) {
			check("remote", t.RemotePrefix)
		}
	}
	return errors.Join(errs...)
}

// OutFilters are the local topic filters of the out and both topics
// (LocalPrefix+Pattern), without duplicates: the broker's outbound bridge
// takes them as its bridge.Config.Filters. Empty when nothing goes out.
func (c Config) OutFilters() []string {
	var fs []string
	for _, t := range c.Topics {
		out, _, ok := t.directions()
		f := t.LocalPrefix + t.Pattern
		if ok && out && !contains(fs, f) {
			fs = append(fs, f)
		}
	}
	return fs
}

func contains(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// directions reports what t carries; ok is false for an unknown direction.
func (t Topic) directions() (out, in, ok bool) {
	switch t.Direction {
	case "", DirectionOut:
		return true, false, true
	case DirectionIn:
		return false, true, true
	case DirectionBoth:
		return true, true, true
	}
	return false, false, false
}

// withDefaults fills in the defaults; name is the bridge's.
func (c Config) withDefaults(name string) Config {
	if c.ProtocolVersion == 0 {
		c.ProtocolVersion = DefaultProtocolVersion
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientIDPrefix + name
	}
	if c.CleanSession == nil {
		f := false
		c.CleanSession = &f
	}
	if c.SessionExpiry == 0 && !*c.CleanSession && c.ProtocolVersion == 5 {
		c.SessionExpiry = DefaultSessionExpiry
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Keepalive, DefaultKeepalive)
	def(&c.ConnectTimeout, DefaultConnectTimeout)
	def(&c.ReconnectMin, DefaultReconnectMin)
	def(&c.ReconnectMax, DefaultReconnectMax)
	c.ReconnectMax = max(c.ReconnectMax, c.ReconnectMin)
	c.Topics = append([]Topic(nil), c.Topics...)
	return c
}

// schemes maps the URL schemes to whether they use TLS.
var schemes = map[string]bool{"tcp": false, "mqtt": false, "ssl": true, "tls": true, "mqtts": true}

// parseURL returns the host:port to dial and the host name.
func parseURL(raw string) (addr, host string, err error) {
	if raw == "" {
		return "", "", errors.New("missing: give the remote broker, e.g. tcp://broker.example.com:1883 or mqtts://broker.example.com:8883")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("%q: %v", raw, err)
	}
	tls, known := schemes[strings.ToLower(u.Scheme)]
	switch {
	case !known:
		return "", "", fmt.Errorf("unsupported scheme %q: use tcp://, mqtt://, ssl://, tls:// or mqtts://", u.Scheme)
	case u.User != nil:
		return "", "", fmt.Errorf("%q: credentials in the URL are not used: set username and password instead", u.Redacted())
	case u.Hostname() == "":
		return "", "", fmt.Errorf("%q has no host: write scheme://host:port", raw)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return "", "", fmt.Errorf("%q: a path, query or fragment means nothing here: write scheme://host:port", raw)
	}
	port := u.Port()
	if port == "" {
		port = "1883"
		if tls {
			port = "8883"
		}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", raw, port)
	}
	return net.JoinHostPort(u.Hostname(), port), u.Hostname(), nil
}

// isTLS reports whether a valid URL uses TLS.
func isTLS(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && schemes[strings.ToLower(u.Scheme)]
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// envRef reports whether v is exactly "${NAME}" and returns NAME.
func envRef(v string) (string, bool) {
	if strings.HasPrefix(v, "${") && strings.HasSuffix(v, "}") && len(v) > 3 {
		return v[2 : len(v)-1], true
	}
	return "", false
}

// expandEnv replaces a value written "${NAME}" with the variable NAME; an
// unset variable is an error (never an empty credential by accident).
func expandEnv(field, v string) (string, error) {
	name, ok := envRef(v)
	if !ok {
		return v, nil
	}
	val, set := os.LookupEnv(name)
	if !set {
		return "", fmt.Errorf("mqtt.%s: environment variable %s is not set (the value is %q)", field, name, v)
	}
	return val, nil
}
