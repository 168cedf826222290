package admin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/motemq/mote/admin"
	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
	"github.com/motemq/mote/internal/deps"
)

// The endpoints end to end are tested in broker/admin_test.go, against a
// broker with everything wired; these tests look at the admin side alone,
// built over a real broker's parts.

func newAPI(t *testing.T, b *broker.Broker, mutate func(*admin.Options)) (*admin.API, *http.ServeMux) {
	t.Helper()
	o := admin.Options{
		Server: b.Server(), Store: b.Store(), Persist: b.Persistence(), Auth: b.Auth(),
		Queues: b.Queues(), Bridges: b.Bridges(), Conns: b.ConnStats(), Version: "test",
	}
	if mutate != nil {
		mutate(&o)
	}
	api, err := admin.New(o)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	api.RegisterHealth(mux)
	return api, mux
}

func serve(mux *http.ServeMux, method, path, remote string) (int, http.Header, map[string]any) {
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	var out map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return w.Code, w.Header(), out
}

// Without users, only loopback clients may use the API; the open
// endpoints answer anyone.
func TestAdminLoopbackOnlyWithoutUsers(t *testing.T) {
	b := brokertest.Start(t)
	_, mux := newAPI(t, b, nil)
	for _, tc := range []struct {
		name, path, remote string
		want               int
	}{
		{"loopback v4", "/api/v1/clients", "127.0.0.1:5000", 200},
		{"loopback v6", "/api/v1/clients", "[::1]:5000", 200},
		{"remote", "/api/v1/clients", "203.0.113.7:5000", 403},
		{"remote metrics", "/metrics", "203.0.113.7:5000", 403},
		{"remote console config", "/api/v1/console-config", "203.0.113.7:5000", 200},
		{"remote openapi", "/api/v1/openapi.json", "203.0.113.7:5000", 200},
		{"remote readyz", "/readyz", "203.0.113.7:5000", 200},
		{"remote console", "/", "203.0.113.7:5000", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := serve(mux, "GET", tc.path, tc.remote)
			if code != tc.want {
				t.Fatalf("%s from %s: %d %v, want %d", tc.path, tc.remote, code, body, tc.want)
			}
			if code == 403 && !strings.Contains(body["error"].(string), "loopback") {
				t.Fatalf("403 does not say why: %v", body)
			}
		})
	}
}

// Readyz reports every bridge and fails when the broker is not serving.
func TestAdminReadyzReportsBridges(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Bridges = []broker.BridgeConfig{{Name: "hooks", Type: "http", Filters: []string{"x/#"}, URL: "http://127.0.0.1:1/in"}}
	})
	ready := true
	_, mux := newAPI(t, b, func(o *admin.Options) {
		o.Ready = func() bool { return ready }
		o.Listeners = func() []admin.Listener { return []admin.Listener{{ID: "mqtt", Address: b.Addr(broker.ListenerMQTT)}} }
	})
	code, _, body := serve(mux, "GET", "/readyz", "127.0.0.1:1")
	if code != 200 || body["ready"] != true {
		t.Fatalf("readyz: %d %v", code, body)
	}
	bridges, _ := body["bridges"].([]any)
	if len(bridges) != 1 || bridges[0].(map[string]any)["name"] != "hooks" {
		t.Fatalf("bridges not reported: %v", body)
	}
	if body["listeners"].(map[string]any)["mqtt"] != b.Addr(broker.ListenerMQTT) {
		t.Fatalf("listeners: %v", body["listeners"])
	}
	ready = false
	code, _, body = serve(mux, "GET", "/readyz", "127.0.0.1:1")
	if code != 503 || body["ready"] != false || len(body["reasons"].([]any)) == 0 {
		t.Fatalf("not ready: %d %v", code, body)
	}
	if code, _, body := serve(mux, "GET", "/healthz", "127.0.0.1:1"); code != 200 || body["status"] != "ok" {
		t.Fatalf("healthz: %d %v", code, body)
	}
}

// Every route is in the OpenAPI document and every documented operation
// is a route.
func TestOpenAPICoversRoutes(t *testing.T) {
	b := brokertest.Start(t)
	_, mux := newAPI(t, b, nil)
	code, _, doc := serve(mux, "GET", "/api/v1/openapi.json", "127.0.0.1:1")
	if code != 200 || doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi.json: %d", code)
	}
	documented := map[string]bool{}
	for path, ops := range doc["paths"].(map[string]any) {
		for method := range ops.(map[string]any) {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	routes := admin.Routes()
	wild := regexp.MustCompile(`\{(\w+)\.\.\.\}`)
	for _, rt := range routes {
		key := wild.ReplaceAllString(rt, "{$1}")
		if !documented[key] {
			t.Errorf("route %s is not in openapi.json", rt)
		}
		delete(documented, key)
	}
	for op := range documented {
		t.Errorf("openapi.json documents %s, which is no route", op)
	}
}

// A page of the console is served with its Content-Security-Policy.
func TestConsoleServed(t *testing.T) {
	b := brokertest.Start(t)
	_, mux := newAPI(t, b, nil)
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Body)
	if w.Code != 200 || !strings.Contains(string(body), `id="tree"`) {
		t.Fatalf("GET /: %d %.200s", w.Code, body)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Fatalf("CSP: %q", csp)
	}
	js := regexp.MustCompile(`/assets/[^"]+\.js`).FindString(string(body))
	if js == "" {
		t.Fatal("no script in index.html")
	}
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", js, nil))
	if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), "javascript") {
		t.Fatalf("GET %s: %d %s", js, w.Code, w.Header().Get("Content-Type"))
	}
}

// The admin package shows the features; the broker wires it, so it must
// not import the broker.
func TestDeps(t *testing.T) {
	deps.Forbid(t, "admin", map[string]string{
		"github.com/motemq/mote/broker": "the broker wires features; admin does not import it",
		"github.com/motemq/mote/rules":  "rules plug in through admin.Rules",
	})
	if !slices.Contains(deps.Of(t), "github.com/prometheus/client_golang/prometheus") {
		t.Error("admin does not use the Prometheus client")
	}
}
