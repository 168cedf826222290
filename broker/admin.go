package broker

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/motemq/mote/admin"
	"github.com/motemq/mote/listen"
	"github.com/motemq/mote/rules"
)

// AdminConfig is the admin: section (metrics, admin API, console). Its
// zero value is the default: everything on, the API for users with the
// admin role (or loopback clients while no users are configured).
type AdminConfig struct {
	// Enabled: unset or true serves /metrics, /api/v1 and the console on
	// the HTTP listener; false leaves only /healthz, /readyz and the
	// publish API.
	Enabled *bool `yaml:"enabled"`
	// Role is the role a user needs for the admin API and /metrics
	// (default admin).
	Role string `yaml:"role"`
	// MetricsPublic serves /metrics without credentials (for a scraper on
	// another host that cannot send any).
	MetricsPublic bool `yaml:"metrics_public"`
	// Console: unset or true serves the browser console at /.
	Console *bool `yaml:"console"`
	// ConsoleWSURL is the MQTT-over-WebSocket URL the console connects to
	// when the broker is behind a proxy (e.g. wss://mqtt.example.com/mqtt);
	// by default the page uses its own host name and the ws (or, on an
	// https page, wss) listener's port and path.
	ConsoleWSURL string `yaml:"console_ws_url"`
}

func (a AdminConfig) enabled() bool { return a.Enabled == nil || *a.Enabled }

func (a AdminConfig) role() string {
	if a.Role == "" {
		return admin.DefaultRole
	}
	return a.Role
}

func (c *Config) validateAdmin(bad func(key, format string, args ...any)) {
	a := c.Admin
	if a.Role != "" && strings.ContainsFunc(a.Role, func(r rune) bool {
		return r == ',' || r == ':' || r <= ' ' || r == 0x7f
	}) {
		bad("admin.role", "%q: a role is one word without ',', ':' or spaces (as in auth.users_file)", a.Role)
	}
	if u := a.ConsoleWSURL; u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "ws" && p.Scheme != "wss") || p.Host == "" {
			bad("admin.console_ws_url", "%q: want a ws:// or wss:// URL with a host, e.g. wss://mqtt.example.com/mqtt", u)
		}
	}
}

// registerAdmin adds the admin API, metrics and console to the HTTP
// listener's routes, and /healthz and /readyz where routes() has not.
func (b *Broker) registerAdmin(mux *http.ServeMux) {
	cfg := b.cfg.Admin
	api, err := admin.New(admin.Options{
		Server:          b.server,
		Store:           b.store,
		Persist:         b.persist,
		Auth:            b.auth,
		Queues:          b.queues,
		Bridges:         b.bridges,
		Conns:           b.conns,
		Pacer:           &b.pacer.Counters,
		UsersConfigured: b.cfg.Auth.UsersFile != "" || b.cfg.Auth.JWT != nil,
		Role:            cfg.role(),
		MetricsPublic:   cfg.MetricsPublic,
		NoConsole:       cfg.Console != nil && !*cfg.Console,
		WSURL:           cfg.ConsoleWSURL,
		Listeners:       b.adminListeners,
		Rules:           adminRules(b.rules),
		Ready:           b.ready.Load,
		Version:         Version,
		Log:             b.log.With("component", "admin"),
	})
	if err != nil {
		// Only a broken build gets here (the console files are embedded).
		b.log.Error("admin API, metrics and console not available", "error", err)
		return
	}
	// The broker's own /healthz and /readyz, when routes() has them, come
	// first; admin's (which also report the bridges) serve otherwise.
	for _, p := range []string{"/healthz", "/readyz"} {
		if _, pattern := mux.Handler(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: p}}); pattern == "" {
			mux.HandleFunc("GET "+p, map[string]http.HandlerFunc{"/healthz": api.Healthz, "/readyz": api.Readyz}[p])
		}
	}
	if !cfg.enabled() {
		return
	}
	if err := b.server.AddHook(api.Hook(), nil); err != nil {
		b.log.Error("admin metrics hook not added: message and refusal counters stay at 0", "error", err)
	}
	api.Register(mux)
	// The console's page comes from this listener and connects to the
	// WebSocket listener on another port: let the WebSocket listeners take
	// pages of this port on their host as same-origin.
	if b.httpLn != nil && (cfg.Console == nil || *cfg.Console) {
		_, port, err := net.SplitHostPort(b.httpLn.Addr().String())
		if err == nil {
			for _, id := range []string{ListenerWS, ListenerWSS} {
				if l, ok := b.server.Listeners.Get(id); ok {
					if ws, ok := l.(*listen.WS); ok {
						ws.AllowPagesOnPort(port)
					}
				}
			}
		}
	}
}

// adminListeners describes the bound listeners for /readyz and the console.
func (b *Broker) adminListeners() []admin.Listener {
	var out []admin.Listener
	for _, l := range []struct{ id, protocol, path string }{
		{ListenerMQTT, "tcp", ""},
		{ListenerMQTTS, "tls", ""},
		{ListenerWS, "ws", wsPath(b.cfg.Listeners.WS.Path)},
		{ListenerWSS, "wss", wsPath(b.cfg.Listeners.WSS.Path)},
		{ListenerHTTP, "http", ""},
	} {
		if a := b.Addr(l.id); a != "" {
			out = append(out, admin.Listener{ID: l.id, Protocol: l.protocol, Address: a, Path: l.path})
		}
	}
	return out
}

func wsPath(p string) string {
	if p == "" {
		return "/mqtt" // as listen.NewWS
	}
	return p
}

// rulesView shows the rules engine to the admin API.
type rulesView struct{ e *rules.Engine }

func adminRules(e *rules.Engine) admin.Rules {
	if e == nil {
		return nil
	}
	return rulesView{e}
}

func (v rulesView) Rules() []admin.RuleStatus {
	var out []admin.RuleStatus
	for _, r := range v.e.Rules() {
		out = append(out, admin.RuleStatus{
			Name: r.Name, Enabled: r.Enabled, Topics: r.Topics, Chain: r.Chain, OnError: r.OnError,
			Matched: r.Matched, Errors: r.Errors, LastError: r.LastError, LastErrorAt: r.LastErrorAt,
		})
	}
	return out
}

func (v rulesView) Enable(name string, on bool) error {
	err := v.e.Enable(name, on)
	if errors.Is(err, rules.ErrUnknownRule) {
		return fmt.Errorf("%w: %w", admin.ErrNotFound, err)
	}
	return err
}

func (v rulesView) History(topic string, limit int) ([]admin.HistoryMessage, error) {
	ms, err := v.e.History(topic, limit)
	if err != nil {
		return nil, err
	}
	out := make([]admin.HistoryMessage, 0, len(ms))
	for _, m := range ms {
		out = append(out, admin.HistoryMessage{
			Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, ClientID: m.ClientID,
			ContentType: m.ContentType, Rule: m.Rule, Time: m.Time,
		})
	}
	return out, nil
}
