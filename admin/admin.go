package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/motemq/mote/auth"
	"github.com/motemq/mote/bridge"
	"github.com/motemq/mote/guard"
	"github.com/motemq/mote/listen"
	"github.com/motemq/mote/persistence"
	"github.com/motemq/mote/queue"
)

// DefaultRole is the role a user needs for the admin API.
const DefaultRole = "admin"

// Listener describes one of the broker's listeners.
type Listener struct {
	ID       string // mqtt, mqtts, ws, wss, http
	Protocol string // tcp, tls, ws, wss, http
	Address  string // bound address
	Path     string // WebSocket path
}

// Options are what the admin side shows and acts on. Server, Store,
// Persist, Auth, Queues, Bridges and Conns are required; the rest may be
// left zero.
type Options struct {
	Server  *mqtt.Server
	Store   *persistence.Store
	Persist *persistence.Hook
	Auth    *auth.Hook
	Queues  *queue.Manager
	Bridges *bridge.Hook
	Conns   *listen.Stats
	// Pacer, when set, are the QoS 0 pacer's totals
	// (mote_qos0_paced_total).
	Pacer *guard.PaceCounters
	// Rules, when set, serves the rules and topic history endpoints; nil
	// answers them with 404 "rules are not configured".
	Rules Rules
	// UsersConfigured: users exist (a users file or JWT), so the API needs
	// a user with Role; without, it answers loopback clients only.
	UsersConfigured bool
	// Role is the role the API requires (default DefaultRole).
	Role string
	// MetricsPublic serves /metrics without credentials.
	MetricsPublic bool
	// NoConsole turns the browser console off (the API stays).
	NoConsole bool
	// WSURL, when set, is the MQTT-over-WebSocket URL the console connects
	// to (behind a proxy); otherwise the page builds it from its own host
	// and the ws/wss listener's port and path.
	WSURL string
	// Listeners returns the broker's listeners (for /readyz and the
	// console); Ready reports whether the broker serves.
	Listeners func() []Listener
	Ready     func() bool
	// Queued, when set, returns how many messages a client's session holds
	// for it (queued and in flight), for the client detail.
	Queued  func(clientID string) (int, bool)
	Version string
	Log     *slog.Logger
}

// API is the admin side of the HTTP listener.
type API struct {
	o       Options
	console fs.FS // nil with NoConsole
	reg     *prometheus.Registry
	hook    *Hook
	started time.Time
}

// New builds the admin side: its metrics registry (private, so several
// brokers can live in one process) and the latency callbacks of the store
// and the bridges. Add Hook() to the server and Register the routes.
func New(o Options) (*API, error) {
	if o.Server == nil || o.Store == nil || o.Persist == nil || o.Auth == nil || o.Queues == nil || o.Bridges == nil || o.Conns == nil {
		return nil, errors.New("admin: Server, Store, Persist, Auth, Queues, Bridges and Conns are required")
	}
	if o.Role == "" {
		o.Role = DefaultRole
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Listeners == nil {
		o.Listeners = func() []Listener { return nil }
	}
	if o.Ready == nil {
		o.Ready = func() bool { return true }
	}
	a := &API{o: o, hook: &Hook{}, started: time.Now()}
	if !o.NoConsole {
		dist, err := consoleFiles()
		if err != nil {
			return nil, err
		}
		a.console = dist
	}
	if err := a.registerMetrics(); err != nil {
		return nil, err
	}
	return a, nil
}

// Hook is the mochi hook that counts messages and bytes by QoS and refused
// connections; add it to the server (its position among the hooks does not
// matter).
func (a *API) Hook() *Hook { return a.hook }

// Registry is the metrics registry (for tests and embedding).
func (a *API) Registry() *prometheus.Registry { return a.reg }

// Register adds /metrics, the API and the console to mux (not /healthz
// and /readyz: see RegisterHealth).
func (a *API) Register(mux *http.ServeMux) {
	if a.o.MetricsPublic {
		mux.Handle("GET /metrics", a.metricsHandler())
	} else {
		mux.Handle("GET /metrics", a.guard(a.metricsHandler()))
	}
	for _, rt := range a.routes() {
		h := a.endpoint(rt)
		if !rt.open {
			h = a.guard(h)
		}
		mux.Handle(rt.method+" "+rt.path, h)
	}
	// Everything else under /api/v1 is a JSON 404 (or 405), not the
	// console's page or Go's text answer.
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		mux.Handle(m+" /api/v1/", a.notFound(mux))
	}
	if !a.o.NoConsole {
		a.registerConsole(mux)
	}
}

// RegisterHealth adds /healthz and /readyz to mux.
func (a *API) RegisterHealth(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", a.Healthz)
	mux.HandleFunc("GET /readyz", a.Readyz)
}

// apiError is an answer other than 2xx.
type apiError struct {
	status int
	msg    string
	header [2]string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

// writeError answers err as JSON: an *apiError with its status, anything
// else as 500 (a bug or a store failure, never bad input) and logged.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		a.o.Log.Error("admin api: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		ae = &apiError{status: http.StatusInternalServerError, msg: "internal error: " + err.Error()}
	}
	if ae.header[0] != "" {
		w.Header().Set(ae.header[0], ae.header[1])
	}
	writeJSON(w, ae.status, map[string]string{"error": ae.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away: nothing to tell it
}

// guard lets a request through when it is allowed to use the API (see
// authorize).
func (a *API) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := a.authorize(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

type identityKey struct{}

// identity is who guard let through.
func identity(r *http.Request) auth.Identity {
	id, _ := r.Context().Value(identityKey{}).(auth.Identity)
	return id
}

// authorize says who sent r and whether they may use the API: with users
// configured, an authenticated user with the role; without, a loopback
// client.
func (a *API) authorize(r *http.Request) (auth.Identity, error) {
	if !a.o.UsersConfigured {
		if isLoopback(r.RemoteAddr) {
			return auth.Identity{Anonymous: true}, nil
		}
		return auth.Identity{}, errorf(http.StatusForbidden,
			"the admin API answers loopback clients only while no users are configured: add a user with the %q role to auth.users_file (mote passwd), or use a JWT with that role", a.o.Role)
	}
	id, err := a.o.Auth.AuthenticateHTTP(r)
	switch {
	case errors.Is(err, auth.ErrThrottled):
		return id, &apiError{status: http.StatusTooManyRequests, msg: err.Error(), header: [2]string{"Retry-After", "10"}}
	case err != nil || id.Anonymous:
		return id, a.unauthorized(r, "the admin API needs a user with the %q role: send HTTP Basic credentials of a user in auth.users_file, or a bearer token", a.o.Role)
	case !slices.Contains(id.Roles, a.o.Role):
		who := id.Username
		return id, errorf(http.StatusForbidden, "user %q does not have the %q role the admin API requires (give it the role in auth.users_file, user:hash:%s, or in its token)", who, a.o.Role, a.o.Role)
	}
	return id, nil
}

// unauthorized is a 401 with its challenge. The console asks for a
// challenge browsers do not answer with their own login dialog.
func (a *API) unauthorized(r *http.Request, format string, args ...any) error {
	challenge := `Basic realm="mote", charset="UTF-8"`
	if r.Header.Get("X-Mote-Console") != "" {
		challenge = `MoteConsole realm="mote"`
	}
	return &apiError{status: http.StatusUnauthorized, msg: fmt.Sprintf(format, args...), header: [2]string{"WWW-Authenticate", challenge}}
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// notFound answers requests under /api/v1 that no route takes: 405 with
// Allow when the path exists for other methods, else 404.
func (a *API) notFound(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != m+" /api/v1/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{
				"error": fmt.Sprintf("%s is not allowed on %s: use %s (see /api/v1/openapi.json)", r.Method, r.URL.Path, strings.Join(allow, ", ")),
			})
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]string{
			"error": fmt.Sprintf("no such endpoint: %s %s (the endpoints are listed in /api/v1/openapi.json)", r.Method, r.URL.Path),
		})
	})
}
