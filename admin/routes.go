package admin

import (
	_ "embed"
	"net/http"
	"time"
)

// openAPI documents every route below; a test checks the two agree.
//
//go:embed openapi.json
var openAPI []byte

// route is one API endpoint. fn returns the JSON body of a 200 answer or
// an error (an *apiError for what the caller did wrong).
type route struct {
	method, path string
	open         bool     // no credentials needed
	params       []string // query parameters it takes
	fn           func(r *http.Request) (any, error)
}

var pageParams = []string{"limit", "cursor"}

func (a *API) routes() []route {
	with := func(extra ...string) []string { return append(extra, pageParams...) }
	return []route{
		{method: "GET", path: "/api/v1/openapi.json", open: true, fn: func(*http.Request) (any, error) { return rawJSON(openAPI), nil }},
		{method: "GET", path: "/api/v1/console-config", open: true, fn: a.consoleConfig},
		{method: "GET", path: "/api/v1/whoami", fn: a.whoami},
		{method: "GET", path: "/api/v1/overview", fn: a.overview},

		{method: "GET", path: "/api/v1/clients", params: with("connected", "username", "listener", "q"), fn: a.listClients},
		{method: "GET", path: "/api/v1/clients/{id}", fn: a.getClient},
		{method: "POST", path: "/api/v1/clients/{id}/disconnect", fn: a.disconnectClient},
		{method: "GET", path: "/api/v1/subscriptions", params: with("client", "filter", "topic"), fn: a.listSubscriptions},
		{method: "GET", path: "/api/v1/topics", params: with("prefix"), fn: a.listTopics},

		{method: "GET", path: "/api/v1/retained", params: with("filter"), fn: a.listRetained},
		{method: "GET", path: "/api/v1/retained/{topic...}", fn: a.getRetained},
		{method: "DELETE", path: "/api/v1/retained/{topic...}", fn: a.deleteRetained},

		{method: "GET", path: "/api/v1/queues", fn: a.listQueues},
		{method: "GET", path: "/api/v1/queues/{group}", fn: a.getQueue},
		{method: "GET", path: "/api/v1/queues/{group}/messages", params: pageParams, fn: a.peekQueue},
		{method: "POST", path: "/api/v1/queues/{group}/purge", fn: a.purgeQueue},
		{method: "GET", path: "/api/v1/queues/{group}/dead", params: pageParams, fn: a.queueDead},
		{method: "POST", path: "/api/v1/queues/{group}/redrive", params: []string{"limit"}, fn: a.redriveQueue},

		{method: "GET", path: "/api/v1/bridges", fn: a.listBridges},
		{method: "GET", path: "/api/v1/bridges/{name}", fn: a.getBridge},
		{method: "POST", path: "/api/v1/bridges/{name}/pause", fn: a.pauseBridge(true)},
		{method: "POST", path: "/api/v1/bridges/{name}/resume", fn: a.pauseBridge(false)},
		{method: "GET", path: "/api/v1/bridges/{name}/dead", params: pageParams, fn: a.bridgeDead},
		{method: "POST", path: "/api/v1/bridges/{name}/retry", params: []string{"limit"}, fn: a.retryBridge},

		{method: "GET", path: "/api/v1/rules", fn: a.listRules},
		{method: "POST", path: "/api/v1/rules/{name}/enable", fn: a.enableRule(true)},
		{method: "POST", path: "/api/v1/rules/{name}/disable", fn: a.enableRule(false)},
		{method: "GET", path: "/api/v1/history", params: []string{"topic", "limit"}, fn: a.history},
	}
}

// endpoint runs a route: query parameters checked, fn called, the answer
// written as JSON.
func (a *API) endpoint(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkParams(r.URL.Query(), rt.params); err != nil {
			a.writeError(w, r, err)
			return
		}
		v, err := rt.fn(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func (a *API) whoami(r *http.Request) (any, error) {
	id := identity(r)
	return map[string]any{
		"username":  id.Username,
		"anonymous": id.Anonymous,
		"roles":     nonNil(id.Roles),
		"admin":     true,
	}, nil
}

// Overview is the broker at a glance (the console's header and rates).
type Overview struct {
	Version          string    `json:"version"`
	Started          time.Time `json:"started"`
	UptimeSeconds    int64     `json:"uptime_seconds"`
	ClientsConnected int64     `json:"clients_connected"`
	Sessions         int       `json:"sessions"`
	Subscriptions    int64     `json:"subscriptions"`
	Retained         int64     `json:"retained"`
	Inflight         int64     `json:"inflight"`
	MessagesReceived uint64    `json:"messages_received"`
	MessagesSent     uint64    `json:"messages_sent"`
	BytesReceived    uint64    `json:"bytes_received"`
	BytesSent        uint64    `json:"bytes_sent"`
	Queues           int       `json:"queues"`
	Bridges          int       `json:"bridges"`
	StoreSize        int64     `json:"store_size"`
}

func (a *API) overview(*http.Request) (any, error) {
	info := a.o.Server.Info.Clone()
	var in, out uint64
	for q := range 3 {
		in += a.hook.in[q].Load()
		out += a.hook.out[q].Load()
	}
	return Overview{
		Version:          a.o.Version,
		Started:          a.started.UTC(),
		UptimeSeconds:    int64(time.Since(a.started) / time.Second),
		ClientsConnected: info.ClientsConnected,
		Sessions:         a.sessions(),
		Subscriptions:    info.Subscriptions,
		Retained:         int64(a.o.Server.Topics.Retained.Len()),
		Inflight:         info.Inflight,
		MessagesReceived: in,
		MessagesSent:     out,
		BytesReceived:    a.o.Conns.BytesRead.Load(),
		BytesSent:        a.o.Conns.BytesWritten.Load(),
		Queues:           len(a.o.Queues.Stats()),
		Bridges:          len(a.o.Bridges.Bridges()),
		StoreSize:        a.o.Store.Stats().FileSize,
	}, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// sessions counts the clients' sessions (not mochi's inline client).
func (a *API) sessions() int {
	n := 0
	for _, cl := range a.o.Server.Clients.GetAll() {
		if !cl.Net.Inline {
			n++
		}
	}
	return n
}

// Routes lists the API's routes as "METHOD /path" (the OpenAPI document
// must describe each).
func Routes() []string {
	var out []string
	for _, rt := range (&API{}).routes() {
		out = append(out, rt.method+" "+rt.path)
	}
	return out
}
