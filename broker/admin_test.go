package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
	"github.com/motemq/mote/rules"
)

// The admin side end to end: a real broker with its HTTP listener, real
// MQTT clients, a real webhook endpoint, real HTTP requests, and a real
// headless Chromium for the console.

type adminAnswer struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// adminDo sends a request to the broker's HTTP listener. cred is "" (none),
// "user:password" (Basic) or "Bearer TOKEN".
func adminDo(t *testing.T, b *broker.Broker, method, path, cred string) adminAnswer {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+b.Addr(broker.ListenerHTTP)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case strings.HasPrefix(cred, "Bearer "):
		req.Header.Set("Authorization", cred)
	case cred != "":
		u, p, _ := strings.Cut(cred, ":")
		req.SetBasicAuth(u, p)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := adminAnswer{status: resp.StatusCode, header: resp.Header, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("%s %s: answer is not a JSON object: %v: %.300s", method, path, err, raw)
		}
	}
	return a
}

// adminGet expects 200 and returns the body.
func adminGet(t *testing.T, b *broker.Broker, path string) map[string]any {
	t.Helper()
	a := adminDo(t, b, "GET", path, "")
	if a.status != 200 {
		t.Fatalf("GET %s: %d %s", path, a.status, a.raw)
	}
	return a.body
}

func adminPost(t *testing.T, b *broker.Broker, path string) map[string]any {
	t.Helper()
	a := adminDo(t, b, "POST", path, "")
	if a.status != 200 {
		t.Fatalf("POST %s: %d %s", path, a.status, a.raw)
	}
	return a.body
}

func items(t *testing.T, body map[string]any) []map[string]any {
	t.Helper()
	raw, ok := body["items"].([]any)
	if !ok {
		t.Fatalf("no items in %v", body)
	}
	out := make([]map[string]any, len(raw))
	for i, v := range raw {
		out[i] = v.(map[string]any)
	}
	return out
}

// eventually polls cond every 20 ms for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAdminAPI(t *testing.T) {
	ep := newEndpoint(t)
	ep.status.Store(400) // refused for good: dead-lettered at once
	b := brokertest.Start(t, webhookBridge(ep.URL), func(c *broker.Config) {
		c.Queues = []broker.QueueConfig{{Name: "jobs", Filter: "jobs/#", MaxDeliveries: 1}}
	})
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "admin-pub", Clean: true})
	sub := brokertest.MustV5(t, addr, brokertest.Options{ID: "admin-sub", Clean: true})
	sub.Sub(t, 1, "events/#", "sensors/+/temp")
	pub.MustPub(t, "status/a", []byte("online"), 1, true)
	pub.MustPub(t, "status/b", []byte{0xff, 0x00, 0xfe}, 1, true) // not UTF-8
	for i := 1; i <= 3; i++ {
		pub.MustPub(t, fmt.Sprintf("jobs/%d", i), []byte(fmt.Sprintf("job %d", i)), 1, false)
	}
	pub.MustPub(t, "events/e1", []byte("event one"), 1, false)

	t.Run("meta", func(t *testing.T) {
		o := adminGet(t, b, "/api/v1/overview")
		if o["clients_connected"].(float64) < 2 || o["queues"].(float64) != 1 || o["bridges"].(float64) != 1 || o["messages_received"].(float64) < 6 {
			t.Fatalf("overview: %v", o)
		}
		cc := adminGet(t, b, "/api/v1/console-config")
		ws := cc["ws"].(map[string]any)
		if fmt.Sprint(ws["port"]) == "0" || ws["path"] != "/mqtt" || cc["users"] != false {
			t.Fatalf("console-config: %v", cc)
		}
		if w := adminGet(t, b, "/api/v1/whoami"); w["admin"] != true {
			t.Fatalf("whoami: %v", w)
		}
		if doc := adminGet(t, b, "/api/v1/openapi.json"); doc["openapi"] != "3.1.0" {
			t.Fatalf("openapi: %v", doc["openapi"])
		}
	})

	t.Run("clients", func(t *testing.T) {
		l := adminGet(t, b, "/api/v1/clients?connected=true")
		ids := []string{}
		for _, c := range items(t, l) {
			ids = append(ids, c["id"].(string))
		}
		if strings.Join(ids, ",") != "admin-pub,admin-sub" || l["total"].(float64) != 2 {
			t.Fatalf("clients: %v", l)
		}
		l = adminGet(t, b, "/api/v1/clients?listener=mqtt&connected=true&q=sub")
		if cs := items(t, l); len(cs) != 1 || cs[0]["id"] != "admin-sub" || cs[0]["subscriptions"].(float64) != 2 {
			t.Fatalf("by listener and search: %v", l)
		}
		if cs := items(t, adminGet(t, b, "/api/v1/clients?listener=ws")); len(cs) != 0 {
			t.Fatalf("no client on ws: %v", cs)
		}
		if cs := items(t, adminGet(t, b, "/api/v1/clients?q=PUB")); len(cs) != 1 || cs[0]["id"] != "admin-pub" {
			t.Fatalf("search: %v", cs)
		}
		d := adminGet(t, b, "/api/v1/clients/admin-sub")
		subs := d["subscription_list"].([]any)
		if d["connected"] != true || d["protocol_version"].(float64) != 5 || len(subs) != 2 || subs[0].(map[string]any)["filter"] != "events/#" {
			t.Fatalf("detail: %v", d)
		}
	})

	t.Run("subscriptions and topics", func(t *testing.T) {
		l := adminGet(t, b, "/api/v1/subscriptions?topic="+url.QueryEscape("sensors/kitchen/temp"))
		if s := items(t, l); len(s) != 1 || s[0]["client"] != "admin-sub" || s[0]["filter"] != "sensors/+/temp" || s[0]["qos"].(float64) != 1 {
			t.Fatalf("subscriptions matching a topic: %v", l)
		}
		if s := items(t, adminGet(t, b, "/api/v1/subscriptions?client=admin-pub")); len(s) != 0 {
			t.Fatalf("admin-pub has no subscriptions: %v", s)
		}
		l = adminGet(t, b, "/api/v1/topics?prefix=events")
		if tp := items(t, l); len(tp) != 1 || tp[0]["filter"] != "events/#" || tp[0]["subscribers"].(float64) != 1 {
			t.Fatalf("topics: %v", l)
		}
	})

	t.Run("retained", func(t *testing.T) {
		l := adminGet(t, b, "/api/v1/retained?filter="+url.QueryEscape("status/+"))
		ms := items(t, l)
		if len(ms) != 2 || ms[0]["topic"] != "status/a" || ms[0]["payload"] != "online" || ms[1]["payload_encoding"] != "base64" || ms[1]["payload"] != "/wD+" {
			t.Fatalf("retained: %v", l)
		}
		m := adminGet(t, b, "/api/v1/retained/status%2Fa")
		if m["payload"] != "online" || m["retain"] != true || m["qos"].(float64) != 1 {
			t.Fatalf("read: %v", m)
		}
		if d := adminDo(t, b, "DELETE", "/api/v1/retained/status/a", ""); d.status != 200 || d.body["deleted"] != true {
			t.Fatalf("delete: %d %s", d.status, d.raw)
		}
		eventually(t, "the retained message to go", func() bool { return adminDo(t, b, "GET", "/api/v1/retained/status/a", "").status == 404 })
		late := brokertest.MustV5(t, addr, brokertest.Options{ID: "admin-late", Clean: true})
		late.Sub(t, 1, "status/#")
		if got := late.Next(t, wait); got.Topic != "status/b" {
			t.Fatalf("after the delete a new subscriber got %q", got.Topic)
		}
		if got, ok := late.Try(quiet); ok {
			t.Fatalf("deleted retained message still delivered: %q %q", got.Topic, got.Payload)
		}
		late.Close()
	})

	t.Run("queues", func(t *testing.T) {
		q := adminGet(t, b, "/api/v1/queues/jobs")
		if q["depth"].(float64) != 3 || q["filters"].([]any)[0] != "jobs/#" {
			t.Fatalf("queue: %v", q)
		}
		if l := items(t, adminGet(t, b, "/api/v1/queues")); len(l) != 1 || l[0]["group"] != "jobs" {
			t.Fatalf("queues: %v", l)
		}
		p := adminGet(t, b, "/api/v1/queues/jobs/messages?limit=2")
		ms := items(t, p)
		if len(ms) != 2 || ms[0]["payload"] != "job 1" || ms[1]["topic"] != "jobs/2" || p["total"].(float64) != 3 || p["next_cursor"] == nil {
			t.Fatalf("peek: %v", p)
		}
		p = adminGet(t, b, "/api/v1/queues/jobs/messages?limit=2&cursor="+p["next_cursor"].(string))
		if ms := items(t, p); len(ms) != 1 || ms[0]["payload"] != "job 3" || p["next_cursor"] != nil {
			t.Fatalf("second page: %v", p)
		}
		if r := adminPost(t, b, "/api/v1/queues/jobs/purge"); r["purged"].(float64) != 3 {
			t.Fatalf("purge: %v", r)
		}
		if q := adminGet(t, b, "/api/v1/queues/jobs"); q["depth"].(float64) != 0 {
			t.Fatalf("after purge: %v", q)
		}

		// A consumer that takes a message and goes away without
		// acknowledging it: with max_deliveries 1 it is dead-lettered.
		pub.MustPub(t, "jobs/4", []byte("job 4"), 1, false)
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: "admin-worker", Clean: true, NoAck: true})
		c.Sub(t, 1, "$share/jobs/jobs/#")
		if m := c.Next(t, wait); string(m.Payload) != "job 4" {
			t.Fatalf("consumer got %q", m.Payload)
		}
		c.Drop()
		eventually(t, "a dead letter", func() bool {
			return adminGet(t, b, "/api/v1/queues/jobs")["dead_letters"].(float64) == 1
		})
		d := adminGet(t, b, "/api/v1/queues/jobs/dead")
		if ms := items(t, d); len(ms) != 1 || ms[0]["topic"] != "jobs/4" || ms[0]["deliveries"].(float64) != 1 {
			t.Fatalf("dead letters: %v", d)
		}
		if r := adminPost(t, b, "/api/v1/queues/jobs/redrive"); r["moved"].(float64) != 1 {
			t.Fatalf("redrive: %v", r)
		}
		p = adminGet(t, b, "/api/v1/queues/jobs/messages")
		if ms := items(t, p); len(ms) != 1 || ms[0]["payload"] != "job 4" || ms[0]["deliveries"].(float64) != 0 {
			t.Fatalf("after redrive: %v", p)
		}
		if q := adminGet(t, b, "/api/v1/queues/jobs"); q["dead_letters"].(float64) != 0 {
			t.Fatalf("dead letters after redrive: %v", q)
		}
	})

	t.Run("bridges", func(t *testing.T) {
		eventually(t, "the bridge's dead letter", func() bool {
			return adminGet(t, b, "/api/v1/bridges/hooks")["dead_letters"].(float64) == 1
		})
		d := adminGet(t, b, "/api/v1/bridges/hooks/dead")
		ms := items(t, d)
		if len(ms) != 1 || ms[0]["topic"] != "events/e1" || ms[0]["payload"] != "event one" || !strings.Contains(ms[0]["reason"].(string), "400") {
			t.Fatalf("bridge dead letters: %v", d)
		}
		if r := adminPost(t, b, "/api/v1/bridges/hooks/pause"); r["paused"] != true {
			t.Fatalf("pause: %v", r)
		}
		ep.status.Store(200)
		if r := adminPost(t, b, "/api/v1/bridges/hooks/retry"); r["retried"].(float64) != 1 {
			t.Fatalf("retry: %v", r)
		}
		eventually(t, "the retried message in the backlog", func() bool {
			return adminGet(t, b, "/api/v1/bridges/hooks")["backlog"].(float64) == 1
		})
		if n := len(ep.got()); n != 0 {
			t.Fatalf("a paused bridge sent %d messages", n)
		}
		rd := adminGet(t, b, "/readyz")
		if rd["ready"] != true {
			t.Fatalf("readyz: %v", rd)
		}
		if r := adminPost(t, b, "/api/v1/bridges/hooks/resume"); r["paused"] != false {
			t.Fatalf("resume: %v", r)
		}
		got := ep.wait(t, 1)
		if !strings.Contains(got[0], `"topic":"events/e1"`) {
			t.Fatalf("webhook got %s", got[0])
		}
		if l := items(t, adminGet(t, b, "/api/v1/bridges")); len(l) != 1 || l[0]["name"] != "hooks" || l[0]["dead_letters"].(float64) != 0 {
			t.Fatalf("bridges: %v", l)
		}
	})

	t.Run("rules", func(t *testing.T) {
		// The broker has no rules: an empty list, unknown names are 404.
		if l := items(t, adminGet(t, b, "/api/v1/rules")); len(l) != 0 {
			t.Fatalf("rules: %v", l)
		}
		if a := adminDo(t, b, "POST", "/api/v1/rules/r1/enable", ""); a.status != 404 {
			t.Fatalf("enable: %d %s", a.status, a.raw)
		}
	})

	t.Run("disconnect", func(t *testing.T) {
		if r := adminPost(t, b, "/api/v1/clients/admin-sub/disconnect"); r["disconnected"] != true {
			t.Fatalf("disconnect: %v", r)
		}
		eventually(t, "the client to go", func() bool {
			a := adminDo(t, b, "GET", "/api/v1/clients/admin-sub", "")
			return a.status == 404 || a.body["connected"] == false
		})
		if a := adminDo(t, b, "POST", "/api/v1/clients/admin-sub/disconnect", ""); a.status != 404 && a.status != 409 {
			t.Fatalf("second disconnect: %d %s", a.status, a.raw)
		}
	})
}

// Bad input is a 4xx with a JSON message, never a 500 or a text page.
func TestAdminErrorsAreJSON(t *testing.T) {
	b := brokertest.Start(t)
	for _, tc := range []struct {
		method, path string
		status       int
		says         string
	}{
		{"GET", "/api/v1/clients?limit=0", 400, "limit"},
		{"GET", "/api/v1/clients?limit=1001", 400, "limit"},
		{"GET", "/api/v1/clients?limit=ten", 400, "limit"},
		{"GET", "/api/v1/clients?cursor=%25%25", 400, "cursor"},
		{"GET", "/api/v1/clients?connected=maybe", 400, "true or false"},
		{"GET", "/api/v1/clients?limt=5", 400, `unknown query parameter "limt"`},
		{"GET", "/api/v1/clients/nobody", 404, "no client"},
		{"POST", "/api/v1/clients/nobody/disconnect", 404, "no client"},
		{"GET", "/api/v1/subscriptions?topic=a/%2B", 400, "wildcards"},
		{"GET", "/api/v1/retained?filter=a/%23/b", 400, "not a valid MQTT topic filter"},
		{"GET", "/api/v1/retained/nothing/here", 404, "no retained message"},
		{"DELETE", "/api/v1/retained/a/%23", 400, "wildcards"},
		{"GET", "/api/v1/queues/nope", 404, "no queue"},
		{"GET", "/api/v1/queues/nope/messages", 404, "no queue"},
		{"GET", "/api/v1/queues/nope/messages?cursor=eA", 400, "cursor"},
		{"POST", "/api/v1/queues/nope/purge", 404, "no queue"},
		{"POST", "/api/v1/queues/nope/redrive?limit=-1", 400, "limit"},
		{"GET", "/api/v1/bridges/nope", 404, "no bridge"},
		{"POST", "/api/v1/bridges/nope/pause", 404, "no bridge"},
		{"GET", "/api/v1/history", 400, "topic: missing"},
		{"GET", "/api/v1/nothing", 404, "no such endpoint"},
		{"DELETE", "/api/v1/clients", 405, "GET"},
		{"GET", "/api/v1/publish", 405, "POST"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			a := adminDo(t, b, tc.method, tc.path, "")
			msg, _ := a.body["error"].(string)
			if a.status != tc.status || !strings.Contains(msg, tc.says) {
				t.Fatalf("%d %s; want %d with %q", a.status, a.raw, tc.status, tc.says)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

// Lists page with limit and cursor: every item once, in order, the total
// on every page.
func TestAdminPagination(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pager", Clean: true})
	const n = 25
	for i := range n {
		pub.MustPub(t, fmt.Sprintf("page/%02d", i), []byte("v"), 1, true)
	}
	for i := range 4 {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("pager-%d", i), Clean: true})
		t.Cleanup(c.Close)
	}
	walk := func(path string, limit int, key string) []string {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 50 {
				t.Fatal("pagination does not end")
			}
			p := path + "&limit=" + fmt.Sprint(limit)
			if cursor != "" {
				p += "&cursor=" + cursor
			}
			body := adminGet(t, b, p)
			its := items(t, body)
			if len(its) > limit {
				t.Fatalf("%d items on a page of %d", len(its), limit)
			}
			for _, it := range its {
				got = append(got, it[key].(string))
			}
			next, _ := body["next_cursor"].(string)
			if next == "" {
				return got
			}
			cursor = next
		}
	}
	got := walk("/api/v1/retained?filter=page/%23", 10, "topic")
	if len(got) != n {
		t.Fatalf("%d retained messages over the pages, want %d: %v", len(got), n, got)
	}
	for i, topic := range got {
		if topic != fmt.Sprintf("page/%02d", i) {
			t.Fatalf("page order: %v", got)
		}
	}
	if total := adminGet(t, b, "/api/v1/retained?filter=page/%23&limit=3")["total"].(float64); total != n {
		t.Fatalf("total %v", total)
	}
	ids := walk("/api/v1/clients?q=pager", 2, "id")
	if strings.Join(ids, ",") != "pager,pager-0,pager-1,pager-2,pager-3" {
		t.Fatalf("clients over pages: %v", ids)
	}
}

// With users configured the API and /metrics need the admin role (Basic
// or a bearer token); errors are JSON with a challenge on 401.
func TestAdminAuth(t *testing.T) {
	dir := t.TempDir()
	users := writeUsers(t, filepath.Join(dir, "passwd"),
		user{"root", "root-pw", []string{"admin"}},
		user{"ops", "ops-pw", []string{"operator"}},
	)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Auth.UsersFile = users
		c.Auth.JWT = &broker.JWTConfig{Secret: jwtSecret, RolesClaim: "roles"}
	})
	adminToken := mintJWT(t, jwt.MapClaims{"sub": "svc", "roles": []string{"admin"}, "exp": time.Now().Add(time.Hour).Unix()})
	plainToken := mintJWT(t, jwt.MapClaims{"sub": "svc2", "exp": time.Now().Add(time.Hour).Unix()})
	for _, tc := range []struct {
		name, path, cred string
		status           int
	}{
		{"no credentials", "/api/v1/clients", "", 401},
		{"wrong password", "/api/v1/clients", "root:nope", 401},
		{"unknown user", "/api/v1/clients", "ghost:x", 401},
		{"without the role", "/api/v1/clients", "ops:ops-pw", 403},
		{"admin", "/api/v1/clients", "root:root-pw", 200},
		{"admin token", "/api/v1/queues", "Bearer " + adminToken, 200},
		{"token without the role", "/api/v1/queues", "Bearer " + plainToken, 403},
		{"bad token", "/api/v1/queues", "Bearer not.a.token", 401},
		{"metrics without credentials", "/metrics", "", 401},
		{"metrics as admin", "/metrics", "root:root-pw", 200},
		{"whoami without the role", "/api/v1/whoami", "ops:ops-pw", 403},
		{"console config is open", "/api/v1/console-config", "", 200},
		{"openapi is open", "/api/v1/openapi.json", "", 200},
		{"readyz is open", "/readyz", "", 200},
		{"console is open", "/", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := adminDo(t, b, "GET", tc.path, tc.cred)
			if a.status != tc.status {
				t.Fatalf("%s as %q: %d %s, want %d", tc.path, tc.cred, a.status, a.raw, tc.status)
			}
			if a.status >= 400 {
				if msg, _ := a.body["error"].(string); msg == "" {
					t.Fatalf("error without a JSON message: %s", a.raw)
				}
			}
			if a.status == 401 && !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Basic ") {
				t.Fatalf("401 without a Basic challenge: %v", a.header)
			}
			if a.status == 403 && !strings.Contains(a.body["error"].(string), `"admin" role`) {
				t.Fatalf("403 does not name the role: %s", a.raw)
			}
		})
	}
	c := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "ops-1", Clean: true, Username: "ops", Password: "ops-pw"})
	t.Cleanup(c.Close)
	l := adminDo(t, b, "GET", "/api/v1/clients?username=ops", "root:root-pw")
	if cs := items(t, l.body); len(cs) != 1 || cs[0]["id"] != "ops-1" || cs[0]["username"] != "ops" {
		t.Fatalf("clients by username: %s", l.raw)
	}
	if w := adminDo(t, b, "GET", "/api/v1/whoami", "root:root-pw"); w.body["username"] != "root" {
		t.Fatalf("whoami: %s", w.raw)
	}
	if cc := adminDo(t, b, "GET", "/api/v1/console-config", ""); cc.body["users"] != true {
		t.Fatalf("console-config: %s", cc.raw)
	}
}

// /metrics in Prometheus' text format: the broker's figures, the queues',
// the bridges', the store's and the latency histograms.
func TestAdminMetrics(t *testing.T) {
	ep := newEndpoint(t)
	dir := t.TempDir()
	users := writeUsers(t, filepath.Join(dir, "passwd"), user{"root", "root-pw", []string{"admin"}})
	b := brokertest.Start(t, webhookBridge(ep.URL), func(c *broker.Config) {
		c.Auth.UsersFile = users
		c.Admin.MetricsPublic = true
		c.Queues = []broker.QueueConfig{{Name: "work", Filter: "work/#"}}
	})
	addr := b.Addr(broker.ListenerMQTT)
	refused5(t, addr, brokertest.Options{ID: "bad", Clean: true, Username: "root", Password: "wrong"}, rcBadCredentials)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "m-pub", Clean: true})
	sub := brokertest.MustV5(t, addr, brokertest.Options{ID: "m-sub", Clean: true})
	sub.Sub(t, 2, "m/#")
	pub.MustPub(t, "m/1", []byte("hello"), 1, false)
	pub.MustPub(t, "m/2", []byte("hello"), 2, true)
	pub.MustPub(t, "work/1", []byte("job"), 1, false)
	pub.MustPub(t, "events/1", []byte("ev"), 1, false)
	sub.Next(t, wait)
	sub.Next(t, wait)
	ep.wait(t, 1)

	var text string
	eventually(t, "the bridge send in the histogram", func() bool {
		a := adminDo(t, b, "GET", "/metrics", "")
		if a.status != 200 {
			t.Fatalf("/metrics: %d %s", a.status, a.raw)
		}
		text = string(a.raw)
		return strings.Contains(text, `mote_bridge_send_duration_seconds_count{bridge="hooks",result="ok"} 1`)
	})
	for _, want := range []string{
		`mote_build_info{version="dev"} 1`,
		`mote_clients_connected 2`,
		`mote_connections_refused_total{reason="bad_username_or_password"} 1`,
		`mote_messages_received_total{qos="1"} 3`,
		`mote_messages_received_total{qos="2"} 1`,
		`mote_messages_sent_total{qos="1"} 1`,
		`mote_messages_sent_total{qos="2"} 1`,
		`mote_message_bytes_received_total{qos="0"} 0`,
		`mote_sessions 2`,
		`mote_queue_depth{queue="work"} 1`,
		`mote_queue_acked_total{queue="work"} 0`,
		`mote_bridge_sent_total{bridge="hooks"} 1`,
		`mote_bridge_backlog{bridge="hooks"} 0`,
		`mote_bridge_connected{bridge="hooks"} 1`,
		`mote_bridge_paused{bridge="hooks"} 0`,
		`mote_messages_dropped_total{reason="session_queue_full"} 0`,
		`mote_acl_denied_total{action="publish"} 0`,
		`# TYPE mote_store_fsync_duration_seconds histogram`,
		`# TYPE mote_connections_total counter`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, metric := range []string{"mote_retained_messages", "mote_message_bytes_received_total{qos=\"1\"}", "mote_store_fsync_duration_seconds_count", "mote_store_size_bytes", "mote_network_bytes_received_total"} {
		var v float64
		for _, line := range strings.Split(text, "\n") {
			if rest, ok := strings.CutPrefix(line, metric+" "); ok {
				fmt.Sscan(rest, &v)
			}
		}
		if v <= 0 {
			t.Errorf("%s is %v, want > 0", metric, v)
		}
	}
}

// The console in a real headless Chromium: it logs in, connects over
// MQTT-over-WebSocket as the user, shows a message a Go client published
// in its topic tree, publishes one the Go client receives, and lists the
// clients through the admin API. A user without the admin role sees only
// what the ACL lets it read and no admin tables.
func TestConsoleInChromium(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s is missing: the console test needs Debian's chromium; `make test` installs it (scripts/ensure-services.sh), or run apt-get install chromium", chromium)
	}
	dir := t.TempDir()
	users := writeUsers(t, filepath.Join(dir, "passwd"),
		user{"alice", "alice-pw", []string{"admin"}},
		user{"bob", "bob-pw", nil},
	)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Auth.UsersFile = users
		c.Auth.ACL = []broker.ACLRule{
			{Permission: "allow", User: "alice", Action: "all", Topic: "#"},
			{Permission: "allow", User: "bob", Action: "all", Topic: "bob/#"},
			{Permission: "allow", Anonymous: true, Action: "all", Topic: "#"},
		}
	})
	goClient := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "go-client", Clean: true})
	goClient.Sub(t, 1, "console/#", "bob/#")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(dir, "chromium-profile")),
		chromedp.WindowSize(1280, 900),
	)
	defer cancelAlloc()
	page, cancelPage := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	defer cancelPage()

	const step = 20 * time.Second
	until := func(what, js string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			v, err := chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(step), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
			if err != nil {
				return v, fmt.Errorf("waiting for %s: %w", what, err)
			}
			return v, nil
		}
	}
	text := func(id string) string {
		s, err := chromedp.Run(page, chromedp.Evaluate[string](`document.getElementById(`+jsString(id)+`).textContent`))
		if err != nil {
			t.Fatalf("read #%s: %v", id, err)
		}
		return s
	}
	login := func(user, pass string) {
		t.Helper()
		err := chromedp.Do(page,
			chromedp.Navigate("http://"+b.Addr(broker.ListenerHTTP)+"/"),
			chromedp.WaitVisible(chromedp.CSS("#login-user")),
			until("the console configuration", `document.getElementById("version").textContent !== ""`),
			chromedp.SendKeys(chromedp.CSS("#login-user"), user),
			chromedp.SendKeys(chromedp.CSS("#login-pass"), pass),
			chromedp.Click(chromedp.CSS("#login-connect")),
			until("the MQTT connection", `document.getElementById("status").textContent === "connected"`),
		)
		if err != nil {
			t.Fatalf("login as %s: %v (login error: %q)", user, err, text("login-error"))
		}
	}
	// waitSubscribed waits until the console's client holds filter, so a
	// message published next reaches it.
	waitSubscribed := func(filter string) {
		t.Helper()
		eventually(t, "the console's subscription "+filter, func() bool {
			a := adminDo(t, b, "GET", "/api/v1/subscriptions?filter="+url.QueryEscape(filter), "alice:alice-pw")
			for _, s := range items(t, a.body) {
				if strings.HasPrefix(s["client"].(string), "mote-console-") {
					return true
				}
			}
			return false
		})
	}

	// alice: an admin who may read and write everything.
	start := time.Now()
	login("alice", "alice-pw")
	waitSubscribed("#")
	goClient.MustPub(t, "console/from-go", []byte("hello from go"), 1, false)
	if m := goClient.Next(t, wait); m.Topic != "console/from-go" { // its own, back
		t.Fatalf("go client: %q", m.Topic)
	}
	err := chromedp.Do(page,
		until("the Go client's message in the topic tree",
			`(() => { const n = document.querySelector('[data-topic="console/from-go"] .value'); return n && n.textContent === "hello from go"; })()`),
		chromedp.Click(chromedp.CSS(`[data-topic="console/from-go"]`)),
		until("the message detail", `document.getElementById("detail-payload") && document.getElementById("detail-payload").textContent === "hello from go"`),
		chromedp.SetValue(chromedp.CSS("#pub-topic"), "console/from-page"),
		chromedp.SetValue(chromedp.CSS("#pub-payload"), "hello from the page"),
		chromedp.SetValue(chromedp.CSS("#pub-content-type"), "text/plain"),
		chromedp.SetValue(chromedp.CSS("#pub-user-props"), "origin=console"),
		chromedp.Click(chromedp.CSS("#pub-send")),
		until("the publish acknowledgement", `document.getElementById("pub-result").textContent.startsWith("Published")`),
	)
	if err != nil {
		t.Fatalf("alice: %v (sub error %q, publish result %q)", err, text("sub-error"), text("pub-result"))
	}
	m := goClient.Next(t, wait)
	if m.Topic != "console/from-page" || string(m.Payload) != "hello from the page" || m.QoS != 1 {
		t.Fatalf("the Go client got %q %q QoS %d", m.Topic, m.Payload, m.QoS)
	}
	if m.Props == nil || m.Props.ContentType != "text/plain" || len(m.Props.User) != 1 || m.Props.User[0].Key != "origin" || m.Props.User[0].Value != "console" {
		t.Fatalf("the page's properties did not arrive: %+v", m.Props)
	}
	err = chromedp.Do(page,
		until("the page's own message in its tree", `!!document.querySelector('[data-topic="console/from-page"]')`),
		until("the admin tabs", `!document.getElementById("tab-clients").classList.contains("hidden")`),
		chromedp.Click(chromedp.CSS("#tab-clients")),
		until("the Go client in the clients table", `!!document.querySelector('#clients-table tr[data-client="go-client"]')`),
		chromedp.Click(chromedp.CSS("#tab-topics")),
	)
	if err != nil {
		t.Fatalf("alice's admin tables: %v (admin note %q)", err, text("admin-note"))
	}
	tree := text("tree")
	if !strings.Contains(tree, "console") || !strings.Contains(tree, "from-go") || !strings.Contains(tree, "from-page") {
		t.Fatalf("the topic tree shows %q", tree)
	}
	shot, err := chromedp.Run(page, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shots := t.TempDir()
	if d := os.Getenv("MOTE_SCREENSHOT_DIR"); d != "" {
		shots = d // to look at it after the test
	}
	png := filepath.Join(shots, "console.png")
	if err := os.WriteFile(png, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(shot, []byte("\x89PNG")) || len(shot) < 10_000 {
		t.Fatalf("screenshot %s: %d bytes, not a PNG of the page", png, len(shot))
	}
	t.Logf("alice: %v; screenshot %s (%d bytes)", time.Since(start).Round(time.Millisecond), png, len(shot))

	// bob: no admin role; the ACL lets him read and write bob/# only.
	err = chromedp.Do(page, chromedp.Click(chromedp.CSS("#logout")), until("the login form", `!document.getElementById("login").classList.contains("hidden")`))
	if err != nil {
		t.Fatal(err)
	}
	login("bob", "bob-pw")
	err = chromedp.Do(page,
		until("the ACL refusing #", `document.getElementById("sub-error").textContent.includes("ACL")`),
		until("the note about the admin role", `document.getElementById("admin-note").textContent.includes("admin")`),
		chromedp.SetValue(chromedp.CSS("#sub-filter"), "bob/#"),
		chromedp.Click(chromedp.CSS("#sub-form button")),
	)
	if err != nil {
		t.Fatalf("bob: %v (sub error %q)", err, text("sub-error"))
	}
	waitSubscribed("bob/#")
	goClient.MustPub(t, "console/secret", []byte("not for bob"), 1, false)
	goClient.MustPub(t, "bob/inbox", []byte("for bob"), 1, false)
	if m := goClient.Next(t, wait); m.Topic != "console/secret" {
		t.Fatalf("go client: %q", m.Topic)
	}
	if m := goClient.Next(t, wait); m.Topic != "bob/inbox" {
		t.Fatalf("go client: %q", m.Topic)
	}
	err = chromedp.Do(page,
		until("bob's message", `!!document.querySelector('[data-topic="bob/inbox"]')`),
		chromedp.SetValue(chromedp.CSS("#pub-topic"), "console/from-bob"),
		chromedp.SetValue(chromedp.CSS("#pub-payload"), "bob was here"),
		chromedp.Click(chromedp.CSS("#pub-send")),
		until("the refusal", `document.getElementById("pub-result").textContent.startsWith("Refused")`),
	)
	if err != nil {
		t.Fatalf("bob: %v (publish result %q)", err, text("pub-result"))
	}
	if strings.Contains(text("tree"), "secret") {
		t.Fatalf("bob's tree shows a topic the ACL hides: %q", text("tree"))
	}
	hidden, err := chromedp.Run(page, chromedp.Evaluate[bool](`document.getElementById("tab-clients").classList.contains("hidden")`))
	if err != nil || !hidden {
		t.Fatalf("bob sees the admin tabs (%v)", err)
	}
	if m, ok := goClient.Try(quiet); ok {
		t.Fatalf("bob's refused publish arrived: %q %q", m.Topic, m.Payload)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Dead letters of queues and bridges, and a bridge's pause, survive a
// restart.
func TestAdminStateSurvivesRestart(t *testing.T) {
	ep := newEndpoint(t)
	ep.status.Store(400)
	dir := t.TempDir()
	cfg := []func(*broker.Config){webhookBridge(ep.URL), func(c *broker.Config) {
		c.Queues = []broker.QueueConfig{{Name: "jobs", Filter: "jobs/#", MaxDeliveries: 1}}
	}}
	b := brokertest.StartIn(t, dir, cfg...)
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "r-pub", Clean: true})
	pub.MustPub(t, "events/1", []byte("e"), 1, false)
	pub.MustPub(t, "jobs/1", []byte("j"), 1, false)
	w := brokertest.MustV5(t, addr, brokertest.Options{ID: "r-worker", Clean: true, NoAck: true})
	w.Sub(t, 1, "$share/jobs/jobs/#")
	w.Next(t, wait)
	w.Drop()
	eventually(t, "both dead letters", func() bool {
		return adminGet(t, b, "/api/v1/queues/jobs")["dead_letters"].(float64) == 1 &&
			adminGet(t, b, "/api/v1/bridges/hooks")["dead_letters"].(float64) == 1
	})
	adminPost(t, b, "/api/v1/bridges/hooks/pause")
	pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	b = brokertest.StartIn(t, dir, cfg...)
	if q := adminGet(t, b, "/api/v1/queues/jobs/dead"); len(items(t, q)) != 1 {
		t.Fatalf("queue dead letters after the restart: %v", q)
	}
	br := adminGet(t, b, "/api/v1/bridges/hooks")
	if br["paused"] != true || br["dead_letters"].(float64) != 1 {
		t.Fatalf("bridge after the restart: %v", br)
	}
}

// The admin: section: defaults, values and the errors that name the key.
func TestAdminConfig(t *testing.T) {
	load := func(yaml string) (*broker.Config, error) {
		p := filepath.Join(t.TempDir(), "mote.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return broker.LoadConfig(broker.Overrides{Config: &p}, broker.Overrides{})
	}
	c, err := load("admin:\n  role: ops-admin\n  metrics_public: true\n  console: false\n  console_ws_url: wss://mqtt.example.com/mqtt\n")
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Admin; a.Role != "ops-admin" || !a.MetricsPublic || a.Console == nil || *a.Console || a.ConsoleWSURL != "wss://mqtt.example.com/mqtt" {
		t.Fatalf("admin: %+v", a)
	}
	if c, err := load("data_dir: ./d\n"); err != nil || c.Admin.Enabled != nil || c.Admin.Role != "" {
		t.Fatalf("defaults: %+v %v", c.Admin, err)
	}
	for _, tc := range []struct{ yaml, says string }{
		{"admin:\n  role: \"two words\"\n", "admin.role"},
		{"admin:\n  role: \"a,b\"\n", "admin.role"},
		{"admin:\n  console_ws_url: http://example.com/mqtt\n", "admin.console_ws_url"},
		{"admin:\n  console_ws_url: \"wss://\"\n", "admin.console_ws_url"},
		{"admin:\n  consle: true\n", "consle"},
	} {
		if _, err := load(tc.yaml); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%q: error %v, want one naming %s", tc.yaml, err, tc.says)
		}
	}
}

// admin.enabled: false leaves health, readiness and the publish API;
// admin.role and a custom console URL apply.
func TestAdminDisabledAndRole(t *testing.T) {
	off := false
	b := brokertest.Start(t, func(c *broker.Config) { c.Admin.Enabled = &off })
	for _, p := range []string{"/api/v1/clients", "/metrics", "/"} {
		if a := adminDo(t, b, "GET", p, ""); a.status != 404 {
			t.Fatalf("%s with the admin side off: %d", p, a.status)
		}
	}
	if a := adminDo(t, b, "GET", "/readyz", ""); a.status != 200 {
		t.Fatalf("readyz: %d", a.status)
	}

	dir := t.TempDir()
	users := writeUsers(t, filepath.Join(dir, "passwd"), user{"root", "root-pw", []string{"admin"}}, user{"ops", "ops-pw", []string{"operator"}})
	b = brokertest.Start(t, func(c *broker.Config) {
		c.Auth.UsersFile = users
		c.Admin.Role = "operator"
		c.Admin.ConsoleWSURL = "wss://mqtt.example.com/mqtt"
	})
	if a := adminDo(t, b, "GET", "/api/v1/clients", "ops:ops-pw"); a.status != 200 {
		t.Fatalf("operator: %d %s", a.status, a.raw)
	}
	if a := adminDo(t, b, "GET", "/api/v1/clients", "root:root-pw"); a.status != 403 || !strings.Contains(a.body["error"].(string), `"operator" role`) {
		t.Fatalf("admin without the operator role: %d %s", a.status, a.raw)
	}
	if cc := adminDo(t, b, "GET", "/api/v1/console-config", ""); cc.body["ws_url"] != "wss://mqtt.example.com/mqtt" || cc.body["role"] != "operator" {
		t.Fatalf("console-config: %s", cc.raw)
	}
}

// Rules through the admin API: listed with counters, disabled and enabled
// again, and the topic history their store action keeps.
func TestAdminRules(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Rules.Rules = []rules.Rule{{
			Name: "keep", Topics: []string{"sensors/+/temp"},
			Actions: []rules.Action{{Store: &rules.Store{Max: 10}}},
		}}
	})
	pub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "rules-pub", Clean: true})
	for _, v := range []string{"20", "21", "22"} {
		pub.MustPub(t, "sensors/k/temp", []byte(v), 1, false)
	}
	l := items(t, adminGet(t, b, "/api/v1/rules"))
	if len(l) != 1 || l[0]["name"] != "keep" || l[0]["enabled"] != true || l[0]["matched"].(float64) != 3 {
		t.Fatalf("rules: %v", l)
	}
	history := func(q string) []any {
		t.Helper()
		l, _ := adminGet(t, b, "/api/v1/history?topic=sensors/k/temp"+q)["messages"].([]any)
		return l
	}
	h := history("&limit=2")
	if len(h) != 2 || h[0].(map[string]any)["payload"] != "22" || h[1].(map[string]any)["payload"] != "21" {
		t.Fatalf("history (newest first, limit 2): %v", h)
	}
	if a := adminDo(t, b, "POST", "/api/v1/rules/keep/disable", ""); a.status != 200 {
		t.Fatalf("disable: %d %s", a.status, a.raw)
	}
	pub.MustPub(t, "sensors/k/temp", []byte("23"), 1, false)
	if h := history(""); len(h) != 3 {
		t.Fatalf("a disabled rule still stored: %v", h)
	}
	if l := items(t, adminGet(t, b, "/api/v1/rules")); l[0]["enabled"] != false {
		t.Fatalf("rules after disable: %v", l)
	}
	if a := adminDo(t, b, "POST", "/api/v1/rules/keep/enable", ""); a.status != 200 {
		t.Fatalf("enable: %d %s", a.status, a.raw)
	}
}
