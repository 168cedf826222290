package broker

import (
	"crypto/tls"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/motemq/mote/internal/testpki"
	"github.com/motemq/mote/persistence"
)

func strp(s string) *string { return &s }

func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantErrContains(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q\ndoes not contain %q", err, s)
		}
	}
}

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("Defaults().Validate(): %v", err)
	}
	c, err := LoadConfig(Overrides{}, Overrides{})
	if err != nil {
		t.Fatalf("LoadConfig with nothing set: %v", err)
	}
	if !reflect.DeepEqual(c, Defaults()) {
		t.Errorf("LoadConfig with nothing set = %+v, want the defaults", c)
	}
	for _, data := range []string{"", "   \n\n", "# only a comment\n"} {
		c, err := ParseConfig("empty.yaml", []byte(data))
		if err != nil {
			t.Fatalf("ParseConfig(%q): %v", data, err)
		}
		c.file = ""
		if !reflect.DeepEqual(c, Defaults()) {
			t.Errorf("ParseConfig(%q) is not the defaults", data)
		}
	}
	d := Defaults()
	if d.Fsync != persistence.FsyncAlways || d.MQTT.MaxPacketSize != 1<<20 || d.MQTT.ConnectTimeout.Std() != 10*time.Second {
		t.Errorf("unexpected defaults: fsync %q packet %d connect %v", d.Fsync, d.MQTT.MaxPacketSize, d.MQTT.ConnectTimeout.Std())
	}
}

func TestFullConfigFile(t *testing.T) {
	c, err := LoadConfig(Overrides{Config: strp("testdata/full.yaml")}, Overrides{})
	if err != nil {
		t.Fatalf("testdata/full.yaml: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, "/var/lib/mote"},
		{"fsync", c.Fsync, persistence.FsyncEverySecond},
		{"log", c.Log, LogConfig{Level: "debug", Format: "json"}},
		{"mqtt.address", c.Listeners.MQTT.Address, "127.0.0.1:11883"},
		{"mqtts", c.Listeners.MQTTS.TLSFiles, TLSFiles{Cert: "/nonexistent/cert.pem", Key: "/nonexistent/key.pem", ClientCA: "/nonexistent/ca.pem"}},
		{"ws.path", c.Listeners.WS.Path, "/ws"},
		{"ws.origins", c.Listeners.WS.AllowedOrigins, []string{"https://example.com", "*"}},
		{"ws.proxies", c.Listeners.WS.TrustedProxies, []string{"10.0.0.0/8", "::1", "192.168.1.1"}},
		{"wss.address", c.Listeners.WSS.Address, ""},
		{"http", c.Listeners.HTTP.Address, "localhost:18080"},
		{"max_packet_size", c.MQTT.MaxPacketSize, Size(512 << 10)},
		{"max_keepalive", c.MQTT.MaxKeepalive.Std(), 30 * time.Minute},
		{"connect_timeout", c.MQTT.ConnectTimeout.Std(), 3 * time.Second},
		{"write_timeout", c.MQTT.WriteTimeout.Std(), time.Duration(0)},
		{"receive_maximum", c.MQTT.ReceiveMaximum, 100},
		{"max_inflight", c.MQTT.MaxInflight, 10},
		{"max_queued_messages", c.MQTT.MaxQueuedMessages, 500},
		{"topic_alias_maximum", c.MQTT.TopicAliasMaximum, 0},
		{"max_session_expiry", c.MQTT.MaxSessionExpiry.Std(), 24 * time.Hour},
		{"max_message_expiry", c.MQTT.MaxMessageExpiry.Std(), time.Hour},
		{"max_user_properties", c.MQTT.MaxUserProperties, 0},
		{"max_topic_length", c.MQTT.MaxTopicLength, 1024},
		{"max_topic_levels", c.MQTT.MaxTopicLevels, 16},
		{"max_clients", c.MQTT.MaxClients, 1000},
		{"write_queue", c.MQTT.WriteQueue, 32},
		{"sys_interval", c.MQTT.SysInterval.Std(), time.Second},
		{"shrink_min_size", c.Persistence.ShrinkMinSize, Size(1_000_000)},
		{"shrink_ratio", c.Persistence.ShrinkRatio, 1.5},
		{"shrink_interval", c.Persistence.ShrinkInterval.Std(), 10 * time.Minute},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestPartialFileKeepsOtherDefaults(t *testing.T) {
	c, err := ParseConfig("p.yaml", []byte("mqtt:\n  max_inflight: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.MaxInflight != 5 {
		t.Errorf("max_inflight = %d, want 5", c.MQTT.MaxInflight)
	}
	d := Defaults()
	if c.MQTT.ReceiveMaximum != d.MQTT.ReceiveMaximum || c.Listeners.WS.Path != d.Listeners.WS.Path || c.DataDir != d.DataDir {
		t.Error("a partial file reset keys it does not mention")
	}
}

func TestValidateNamesKeyAndFix(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty data_dir", `data_dir: ""`, []string{"data_dir:", "must not be empty", "default ./data"}},
		{"fsync", `fsync: sometimes`, []string{"fsync:", `"sometimes"`, "use always or everysec"}},
		{"log level", "log:\n  level: loud", []string{"log.level:", `"loud"`, "use debug, info, warn or error"}},
		{"log format", "log:\n  format: xml", []string{"log.format:", `"xml"`, "use auto, text or json"}},
		{"address without port", "listeners:\n  mqtt:\n    address: localhost", []string{"listeners.mqtt.address:", "is not host:port", "for example :1883"}},
		{"port out of range", "listeners:\n  ws:\n    address: \":99999\"", []string{"listeners.ws.address:", "port must be a number from 0 to 65535"}},
		{"port not a number", "listeners:\n  http:\n    address: \":http-ish\"", []string{"listeners.http.address:", "port must be a number"}},
		{"mqtts without cert", "listeners:\n  mqtts:\n    address: \":8883\"", []string{"listeners.mqtts.cert:", "needs cert and key", "empty address to turn it off"}},
		{"wss without key", "listeners:\n  wss:\n    address: \":8084\"\n    cert: c.pem", []string{"listeners.wss.cert:", "needs cert and key"}},
		{"cert on plain listener", "listeners:\n  mqtt:\n    cert: c.pem", []string{"listeners.mqtt:", "belong to the TLS listeners"}},
		{"client_ca on ws", "listeners:\n  ws:\n    client_ca: ca.pem", []string{"listeners.ws:", "belong to the TLS listeners"}},
		{"ws path", "listeners:\n  ws:\n    path: mqtt", []string{"listeners.ws.path:", `"mqtt" must start with /`}},
		{"origin", "listeners:\n  ws:\n    allowed_origins: [example.com]", []string{"listeners.ws.allowed_origins[0]:", "scheme://host[:port]", "* for any"}},
		{"proxy", "listeners:\n  ws:\n    trusted_proxies: [\"10.0.0.1\", \"10.0.0.0/33\"]", []string{"listeners.ws.trusted_proxies[1]:", "IP address or CIDR prefix"}},
		{"all off", "listeners:\n  mqtt:\n    address: \"\"\n  ws:\n    address: \"\"", []string{"listeners:", "every MQTT listener is off"}},
		{"packet size small", "mqtt:\n  max_packet_size: 10", []string{"mqtt.max_packet_size:", "want 64 bytes to 256MiB"}},
		{"packet size big", "mqtt:\n  max_packet_size: 1GiB", []string{"mqtt.max_packet_size:", "256MiB"}},
		{"keepalive", "mqtt:\n  max_keepalive: 19h", []string{"mqtt.max_keepalive:", "want 0 (no cap) to 65535s"}},
		{"keepalive negative", "mqtt:\n  max_keepalive: -1s", []string{"mqtt.max_keepalive:"}},
		{"connect timeout", "mqtt:\n  connect_timeout: 0s", []string{"mqtt.connect_timeout:", "must be positive"}},
		{"write timeout", "mqtt:\n  write_timeout: -1s", []string{"mqtt.write_timeout:", "must not be negative", "0 turns the write deadline off"}},
		{"receive maximum 0", "mqtt:\n  receive_maximum: 0", []string{"mqtt.receive_maximum:", "want 1 to 65535"}},
		{"receive maximum big", "mqtt:\n  receive_maximum: 65536", []string{"mqtt.receive_maximum:", "65536"}},
		{"inflight", "mqtt:\n  max_inflight: 0", []string{"mqtt.max_inflight:", "want 1 to 65535"}},
		{"queued", "mqtt:\n  max_queued_messages: 0", []string{"mqtt.max_queued_messages:", "want at least 1"}},
		{"alias", "mqtt:\n  topic_alias_maximum: -1", []string{"mqtt.topic_alias_maximum:", "want 0 to 65535"}},
		{"session expiry negative", "mqtt:\n  max_session_expiry: -1s", []string{"mqtt.max_session_expiry:", "want 0 to 136 years"}},
		{"session expiry huge", "mqtt:\n  max_session_expiry: 1200000h", []string{"mqtt.max_session_expiry:", "136 years"}},
		{"message expiry", "mqtt:\n  max_message_expiry: -1s", []string{"mqtt.max_message_expiry:", "must not be negative"}},
		{"user properties", "mqtt:\n  max_user_properties: -1", []string{"mqtt.max_user_properties:", "0: no limit"}},
		{"topic length", "mqtt:\n  max_topic_length: 0", []string{"mqtt.max_topic_length:", "want 1 to 65535"}},
		{"topic levels", "mqtt:\n  max_topic_levels: -1", []string{"mqtt.max_topic_levels:", "0: no limit"}},
		{"clients", "mqtt:\n  max_clients: -1", []string{"mqtt.max_clients:", "0: no limit"}},
		{"write queue", "mqtt:\n  write_queue: 0", []string{"mqtt.write_queue:", "want at least 1"}},
		{"sys interval", "mqtt:\n  sys_interval: 500ms", []string{"mqtt.sys_interval:", "want at least 1s"}},
		{"shrink ratio", "persistence:\n  shrink_ratio: 0.5", []string{"persistence.shrink_ratio:", "want more than 1"}},
		{"shrink ratio one", "persistence:\n  shrink_ratio: 1", []string{"persistence.shrink_ratio:"}},
		{"shrink ratio NaN", "persistence:\n  shrink_ratio: .nan", []string{"persistence.shrink_ratio:", "NaN", "want more than 1"}},
		{"shrink interval", "persistence:\n  shrink_interval: -1m", []string{"persistence.shrink_interval:", "must not be negative"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("bad.yaml", []byte(tc.yaml))
			wantErrContains(t, err, append([]string{"config: bad.yaml is not valid:"}, tc.want...)...)
			if err != nil && strings.Count(err.Error(), "\n") != 1 {
				t.Errorf("want exactly one problem (header + 1 line), got:\n%v", err)
			}
		})
	}
}

func TestValidateBoundaryValuesAccepted(t *testing.T) {
	yaml := `
fsync: always
log: {level: ERROR, format: text}
listeners:
  mqtt: {address: "[::1]:0"}
  ws: {address: "", path: ""}
  http: {address: ""}
mqtt:
  max_packet_size: 64
  max_keepalive: 65535s
  receive_maximum: 65535
  max_inflight: 1
  topic_alias_maximum: 65535
  max_session_expiry: 0s
  max_topic_length: 65535
  sys_interval: 1s
persistence:
  shrink_ratio: 0 # 0: the store's default
`
	c, err := ParseConfig("edge.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("boundary values refused: %v", err)
	}
	if c.MQTT.MaxPacketSize != 64 || c.Listeners.WS.Address != "" {
		t.Errorf("values not applied: %+v", c.MQTT)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Defaults()
	c.DataDir = ""
	c.Fsync = "never"
	c.MQTT.MaxInflight = 0
	c.Persistence.ShrinkInterval = -1
	err := c.Validate()
	wantErrContains(t, err, "data_dir:", "fsync:", "mqtt.max_inflight:", "persistence.shrink_interval:")
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Errorf("%d lines, want 4 (no file header without a file):\n%v", n, err)
	}
	if strings.Contains(err.Error(), "is not valid") {
		t.Errorf("header names a file although there is none: %v", err)
	}
}

func TestYAMLErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top-level key", "data_dir: ./d\nbogus: 1\n", []string{"config: u.yaml:2: unknown key \"bogus\"", "README.md"}},
		{"unknown nested key", "mqtt:\n  max_inflight: 5\n  max_inflite: 6\n", []string{"u.yaml:3: unknown key \"max_inflite\""}},
		{"unknown listener key", "listeners:\n  mqtt:\n    adress: :1\n", []string{"u.yaml:3: unknown key \"adress\""}},
		{"wrong type", "mqtt:\n  max_inflight: lots\n", []string{"u.yaml:2:", "lots"}},
		{"bad size", "mqtt:\n  max_packet_size: 1XB\n", []string{"config: u.yaml:2: ", "unknown unit", "use B, KiB, MiB, GiB, KB, MB, GB"}},
		{"bad size number", "persistence:\n  shrink_min_size: lots\n", []string{"config: u.yaml:2: ", "is not a size", "write 1048576, 512KiB, 1MiB, 2GB"}},
		{"bad duration", "mqtt:\n  connect_timeout: 10\n", []string{"config: u.yaml:2: ", `"10" is not a duration`, "write 10s, 5m, 1h"}},
		{"syntax", "mqtt:\n  max_inflight: [1\n", []string{"config: u.yaml:1: ", "did not find"}},
		{"not a mapping", "- a\n- b\n", []string{"config: u.yaml:1:", "cannot unmarshal"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("u.yaml", []byte(tc.yaml))
			wantErrContains(t, err, tc.want...)
			if err != nil && strings.Contains(err.Error(), ": yaml: ") {
				t.Errorf("error keeps the yaml: prefix: %v", err)
			}
		})
	}
	// Several type errors are all reported.
	_, err := ParseConfig("m.yaml", []byte("mqtt:\n  max_inflight: a\n  write_queue: b\nnope: 1\n"))
	wantErrContains(t, err, "m.yaml:2:", "m.yaml:3:", "m.yaml:4: unknown key \"nope\"")
}

func TestRewordYAML(t *testing.T) {
	for in, want := range map[string]string{
		"line 7: field foo not found in type broker.MQTTConfig": `7: unknown key "foo" (see the configuration reference in README.md)`,
		"line 3: cannot unmarshal !!str `x` into int":           "3: cannot unmarshal !!str `x` into int",
		"something without a line":                              " something without a line",
	} {
		if got := rewordYAML(in); got != want {
			t.Errorf("rewordYAML(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]Size{
		"0":        0,
		"1048576":  1 << 20,
		"1MiB":     1 << 20,
		"1mib":     1 << 20,
		"1M":       1 << 20,
		"512KiB":   512 << 10,
		"1KB":      1000,
		"1kb":      1000,
		"1k":       1024,
		"1MB":      1_000_000,
		"2G":       2 << 30,
		"2GiB":     2 << 30,
		"2GB":      2_000_000_000,
		"10B":      10,
		"1.5KiB":   1536,
		" 64 KiB ": 64 << 10,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, hint := range map[string]string{
		"":      "is not a size",
		"MiB":   "is not a size",
		"-1":    "is not a size",
		"1..2":  "is not a size",
		"1XB":   `unknown unit "xb"`,
		"1 TiB": `unknown unit "tib"`,
		"1e6":   `unknown unit "e6"`,
		// Would wrap around to a negative int64.
		"99999999999999999999": "is too large",
		"9999999999GiB":        "is too large",
		"8EiB":                 `unknown unit "eib"`,
	} {
		_, err := ParseSize(in)
		wantErrContains(t, err, hint)
	}
}

func TestDurationYAML(t *testing.T) {
	c, err := ParseConfig("d.yaml", []byte("mqtt:\n  connect_timeout: 10s\n  max_keepalive: 1h30m\n  write_timeout: 250ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.ConnectTimeout.Std() != 10*time.Second || c.MQTT.MaxKeepalive.Std() != 90*time.Minute || c.MQTT.WriteTimeout.Std() != 250*time.Millisecond {
		t.Errorf("durations = %v %v %v", c.MQTT.ConnectTimeout.Std(), c.MQTT.MaxKeepalive.Std(), c.MQTT.WriteTimeout.Std())
	}
	c, err = ParseConfig("s.yaml", []byte("mqtt:\n  max_packet_size: 2048\npersistence:\n  shrink_min_size: \"1 MiB\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.MaxPacketSize != 2048 || c.Persistence.ShrinkMinSize != 1<<20 {
		t.Errorf("sizes = %d %d", c.MQTT.MaxPacketSize, c.Persistence.ShrinkMinSize)
	}
}

func TestOverridePrecedence(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "mote.yaml", `
data_dir: /from/file
fsync: everysec
log: {level: warn}
listeners:
  mqtt: {address: ":1001"}
  ws: {address: ":1002"}
  http: {address: ":1003"}
`)
	env := EnvOverrides(envFrom(map[string]string{
		"MOTE_CONFIG":    file,
		"MOTE_DATA_DIR":  "/from/env",
		"MOTE_MQTT":      ":2001",
		"MOTE_LOG_LEVEL": "error",
		"MOTE_WS":        "", // set but empty: turns the listener off
		"UNRELATED":      "x",
	}))
	flags := Overrides{DataDir: strp("/from/flag"), Fsync: strp("always")}

	c, err := LoadConfig(flags, env)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"data_dir (flag > env > file)", c.DataDir, "/from/flag"},
		{"fsync (flag > file)", string(c.Fsync), "always"},
		{"mqtt (env > file)", c.Listeners.MQTT.Address, ":2001"},
		{"log.level (env > file)", c.Log.Level, "error"},
		{"ws (empty env turns it off)", c.Listeners.WS.Address, ""},
		{"http (file > default)", c.Listeners.HTTP.Address, ":1003"},
		{"log.format (default)", c.Log.Format, "auto"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}

	// Without flags the environment wins over the file.
	c, err = LoadConfig(Overrides{}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/from/env" || c.Fsync != persistence.FsyncEverySecond {
		t.Errorf("env over file: data_dir %q fsync %q", c.DataDir, c.Fsync)
	}

	// --config beats MOTE_CONFIG; an empty --config means no file at all.
	other := writeFile(t, dir, "other.yaml", "data_dir: /from/other\n")
	c, err = LoadConfig(Overrides{Config: strp(other)}, EnvOverrides(envFrom(map[string]string{"MOTE_CONFIG": file})))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/from/other" || c.Fsync != persistence.FsyncAlways {
		t.Errorf("--config did not replace MOTE_CONFIG: data_dir %q fsync %q", c.DataDir, c.Fsync)
	}
	c, err = LoadConfig(Overrides{Config: strp("")}, EnvOverrides(envFrom(map[string]string{"MOTE_CONFIG": file})))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != Defaults().DataDir {
		t.Errorf("empty --config still read MOTE_CONFIG: data_dir %q", c.DataDir)
	}
}

func TestEnvOverrides(t *testing.T) {
	all := map[string]string{
		"MOTE_CONFIG": "c", "MOTE_DATA_DIR": "d", "MOTE_MQTT": "m", "MOTE_WS": "w",
		"MOTE_HTTP": "h", "MOTE_LOG_LEVEL": "l", "MOTE_FSYNC": "f",
	}
	o := EnvOverrides(envFrom(all))
	got := map[string]*string{
		"MOTE_CONFIG": o.Config, "MOTE_DATA_DIR": o.DataDir, "MOTE_MQTT": o.MQTT, "MOTE_WS": o.WS,
		"MOTE_HTTP": o.HTTP, "MOTE_LOG_LEVEL": o.LogLevel, "MOTE_FSYNC": o.Fsync,
	}
	for k, v := range got {
		if v == nil || *v != all[k] {
			t.Errorf("%s not read", k)
		}
	}
	if o := EnvOverrides(envFrom(nil)); !reflect.DeepEqual(o, Overrides{}) {
		t.Errorf("no variables set gives %+v, want all unset", o)
	}
}

func TestOverrideValuesAreValidated(t *testing.T) {
	_, err := LoadConfig(Overrides{}, EnvOverrides(envFrom(map[string]string{"MOTE_FSYNC": "never"})))
	wantErrContains(t, err, "fsync:", `"never"`, "use always or everysec")
	_, err = LoadConfig(Overrides{LogLevel: strp("chatty")}, Overrides{})
	wantErrContains(t, err, "log.level:", `"chatty"`)
	_, err = LoadConfig(Overrides{MQTT: strp(""), WS: strp("")}, Overrides{})
	wantErrContains(t, err, "every MQTT listener is off")
	_, err = LoadConfig(Overrides{HTTP: strp("nope")}, Overrides{})
	wantErrContains(t, err, "listeners.http.address:")
	// A flag can repair a bad environment value.
	if _, err := LoadConfig(Overrides{Fsync: strp("everysec")}, EnvOverrides(envFrom(map[string]string{"MOTE_FSYNC": "never"}))); err != nil {
		t.Errorf("flag did not override the bad env value: %v", err)
	}
}

func TestConfigFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := LoadConfig(Overrides{Config: &missing}, Overrides{})
	wantErrContains(t, err, missing, "file not found", "--config or MOTE_CONFIG")

	dir := t.TempDir()
	_, err = LoadConfig(Overrides{Config: &dir}, Overrides{}) // a directory
	wantErrContains(t, err, "config:", dir)

	bad := writeFile(t, t.TempDir(), "bad.yaml", "mqtt:\n  max_inflight: 0\n")
	_, err = LoadConfig(Overrides{Config: &bad}, Overrides{})
	wantErrContains(t, err, "config: "+bad+" is not valid:", "mqtt.max_inflight:")
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t)
	cert, key := pki.CertFile, pki.KeyFile
	missing := filepath.Join(dir, "missing.pem")

	t.Run("not found", func(t *testing.T) {
		c := Defaults()
		c.Listeners.MQTTS = TCPListener{Address: ":8883", TLSFiles: TLSFiles{Cert: missing, Key: key, ClientCA: missing + "2"}}
		c.Listeners.WSS.Address = ":8084"
		c.Listeners.WSS.TLSFiles = TLSFiles{Cert: cert, Key: missing}
		err := c.Validate()
		wantErrContains(t, err,
			"listeners.mqtts.cert: file not found: "+missing,
			"listeners.mqtts.client_ca: file not found: "+missing+"2",
			"listeners.wss.key: file not found: "+missing)
		if strings.Contains(err.Error(), "listeners.mqtts.key") {
			t.Errorf("existing key reported missing: %v", err)
		}
	})
	t.Run("valid", func(t *testing.T) {
		yaml := "listeners:\n  mqtts:\n    address: \":8883\"\n    cert: " + cert + "\n    key: " + key + "\n    client_ca: " + pki.CAFile + "\n"
		c, err := ParseConfig("tls.yaml", []byte(yaml))
		if err != nil {
			t.Fatalf("valid TLS files refused: %v", err)
		}
		tc, err := c.Listeners.MQTTS.tlsConfig("listeners.mqtts")
		if err != nil {
			t.Fatalf("tlsConfig: %v", err)
		}
		if len(tc.Certificates) != 1 || tc.MinVersion != tls.VersionTLS12 {
			t.Errorf("tls config: %d certs, min version %x", len(tc.Certificates), tc.MinVersion)
		}
		if tc.ClientAuth != tls.RequireAndVerifyClientCert || tc.ClientCAs == nil {
			t.Error("client_ca did not turn on mTLS")
		}
		tc, err = TLSFiles{Cert: cert, Key: key}.tlsConfig("x")
		if err != nil || tc.ClientAuth != tls.NoClientCert {
			t.Errorf("without client_ca: %v, client auth %v", err, tc.ClientAuth)
		}
	})
	t.Run("load errors", func(t *testing.T) {
		_, err := TLSFiles{Cert: key, Key: cert}.tlsConfig("listeners.wss")
		wantErrContains(t, err, "listeners.wss.cert/key:")
		notPEM := writeFile(t, dir, "ca.txt", "not a certificate\n")
		_, err = TLSFiles{Cert: cert, Key: key, ClientCA: notPEM}.tlsConfig("listeners.mqtts")
		wantErrContains(t, err, "listeners.mqtts.client_ca:", notPEM, "holds no PEM certificate")
		_, err = TLSFiles{Cert: cert, Key: key, ClientCA: missing}.tlsConfig("listeners.mqtts")
		wantErrContains(t, err, "listeners.mqtts.client_ca:")
	})
}

// FuzzConfig: no YAML makes the loader panic, every error it returns is a
// config error, and what it accepts is valid with sane sizes and ratios.
func FuzzConfig(f *testing.F) {
	if data, err := os.ReadFile("testdata/full.yaml"); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"data_dir: ./d\n",
		"mqtt:\n  max_packet_size: 1MiB\n  connect_timeout: 10s\n",
		"mqtt:\n  max_packet_size: 99999999999999999999999999GiB\n",
		"mqtt: {max_keepalive: *a}\n",
		"a: &a [*a]\n",
		"listeners:\n  ws:\n    allowed_origins: [x]\n    trusted_proxies: [\"::ffff:1.2.3.4/200\"]\n",
		"bogus: 1\n",
		"- 1\n",
		"mqtt:\n  max_inflight: !!binary aGVsbG8=\n",
		"persistence: {shrink_ratio: .nan}\n",
		"persistence: {shrink_ratio: -.inf, shrink_min_size: [1]}\n",
		"---\ndata_dir: a\n---\ndata_dir: b\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("error without the config: prefix: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
		if c.Persistence.ShrinkMinSize < 0 || math.IsNaN(c.Persistence.ShrinkRatio) {
			t.Fatalf("accepted persistence settings %+v", c.Persistence)
		}
	})
}
