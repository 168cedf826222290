package rules_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/motemq/mote/bridge"
	httpbridge "github.com/motemq/mote/bridge/http"
	"github.com/motemq/mote/persistence"
	"github.com/motemq/mote/rules"
)

func TestEnrichTable(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: customers
    topics: [orders/+]
    actions:
      - enrich: {table: customers, key: json.customer, into: customer}
      - enrich: {table: regions, key: "json.customer.region", required: true}
      - republish: {topic: "enriched/{{ levels[1] }}"}
`})
	if err := b.engine.KVSet("customers", "c1", json.RawMessage(`{"name": "Ada", "region": "eu"}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.engine.KVSet("customers", "c2", json.RawMessage(`[1]`)); !errors.Is(err, rules.ErrBadKV) {
		t.Fatalf("array value: %v", err)
	}
	// Tables from files replace the table's contents.
	dir := t.TempDir()
	file := filepath.Join(dir, "regions.json")
	if err := b.engine.KVSet("regions", "stale", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`{"eu": {"vat": 0.2}, "us": {"vat": 0}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.engine.LoadTables(map[string]string{"regions": file}); err != nil {
		t.Fatal(err)
	}
	kvs, err := b.engine.KVList("regions")
	if err != nil || len(kvs) != 2 || kvs[0].Key != "eu" || string(kvs[0].Value) != `{"vat":0.2}` {
		t.Fatalf("regions %v %v", kvs, err)
	}
	if tables, _ := b.engine.KVTables(); !reflect.DeepEqual(tables, []string{"customers", "regions"}) {
		t.Fatalf("tables %v", tables)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"x": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.engine.LoadTables(map[string]string{"regions": bad}); err == nil || !strings.Contains(err.Error(), "tables.regions") {
		t.Fatalf("bad file: %v", err)
	}

	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "enriched/#", "$events/rule/error")
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "orders/1", `{"customer": "c1", "total": 5}`, 1, nil)
	m := sub.nextOn(t, "enriched/1")
	want := map[string]any{"customer": map[string]any{"name": "Ada", "region": "eu"}, "total": 5.0, "vat": 0.2}
	if got := jsonOf(t, m.Payload); !reflect.DeepEqual(got, want) {
		t.Fatalf("enriched %s", m.Payload)
	}
	// A missing entry merges nothing, unless required.
	if err := b.engine.KVDelete("regions", "eu"); err != nil {
		t.Fatal(err)
	}
	pub.pub(t, "orders/2", `{"customer": "c1"}`, 1, nil)
	got := sub.collect(t, "enriched/2", "$events/rule/error")
	if !strings.Contains(string(got["$events/rule/error"].Payload), `table regions key \"eu\": not found (required)`) {
		t.Fatalf("event %s", got["$events/rule/error"].Payload)
	}
}

func TestEnrichHTTP(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("X-Token") != "secret" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/items/a1":
			_, _ = io.WriteString(w, `{"name": "bolt", "stock": 12}`)
		case "/items/broken":
			http.Error(w, "oops", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	b := startBroker(t, brokerOpts{rules: fmt.Sprintf(`
rules:
  - name: items
    topics: [orders/+]
    on_error: dead_letter
    actions:
      - enrich:
          http: {url: "%s/items/{{ json.sku }}", cache_ttl: 1m, headers: {X-Token: secret}}
          into: item
      - republish: {topic: "enriched/{{ levels[1] }}"}
`, srv.URL)})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "enriched/#", "$rules/items/dead")
	pub := connect(t, b.addr, "pub")
	for i := range 3 {
		pub.pub(t, fmt.Sprintf("orders/%d", i), `{"sku": "a1"}`, 1, nil)
		m := sub.next(t)
		if got := jsonOf(t, m.Payload); !reflect.DeepEqual(got["item"], map[string]any{"name": "bolt", "stock": 12.0}) {
			t.Fatalf("%s %s", m.Topic, m.Payload)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d lookups, want 1 (cached)", n)
	}
	// Not found: nothing merged (and cached).
	pub.pub(t, "orders/x", `{"sku": "zz"}`, 1, nil)
	pub.pub(t, "orders/y", `{"sku": "zz"}`, 1, nil)
	for range 2 {
		if m := sub.next(t); string(m.Payload) != `{"sku": "zz"}` {
			t.Fatalf("not found: %s", m.Payload)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d lookups, want 2", n)
	}
	// A failing lookup applies on_error.
	pub.pub(t, "orders/z", `{"sku": "broken"}`, 1, nil)
	m := sub.next(t)
	if m.Topic != "$rules/items/dead" || !strings.Contains(m.user("error"), "500 Internal Server Error") {
		t.Fatalf("%s %+v", m.Topic, m.Props)
	}
}

func TestStoreHistory(t *testing.T) {
	dir := t.TempDir()
	y := `
rules:
  - name: keep
    topics: [audit/#]
    actions:
      - transform: {fields: {n: json.n}}
      - store: {max: 3}
  - name: short
    topics: [brief]
    actions: [store: {max_age: 200ms}]
`
	b := startBroker(t, brokerOpts{rules: y, dir: dir})
	pub := connect(t, b.addr, "pub")
	for i := range 5 {
		pub.pub(t, "audit/a", fmt.Sprintf(`{"n": %d, "x": true}`, i), 1, nil)
	}
	pub.pub(t, "audit/b", `{"n": 9}`, 0, nil)
	pub.pub(t, "brief", `1`, 1, nil)
	h, err := b.engine.History("audit/a", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, m := range h {
		ns = append(ns, string(m.Payload))
		if m.Rule != "keep" || m.ClientID != "pub" || m.QoS != 1 || m.ContentType != "application/json" || m.Time.IsZero() {
			t.Fatalf("stored %+v", m)
		}
	}
	if !reflect.DeepEqual(ns, []string{`{"n":4}`, `{"n":3}`, `{"n":2}`}) {
		t.Fatalf("history %v", ns)
	}
	if h, _ := b.engine.History("audit/a", 1); len(h) != 1 || string(h[0].Payload) != `{"n":4}` {
		t.Fatalf("limit 1: %v", h)
	}
	if h, _ := b.engine.History("brief", 0); len(h) != 1 {
		t.Fatalf("brief: %v", h)
	}
	eventually(t, "the brief message to expire", func() bool {
		h, _ := b.engine.History("brief", 0)
		return len(h) == 0
	})
	// Kept messages survive a restart, and trimming goes on from there.
	b.stop(t)
	b = startBroker(t, brokerOpts{rules: y, dir: dir})
	pub = connect(t, b.addr, "pub2")
	pub.pub(t, "audit/a", `{"n": 5}`, 1, nil)
	h, _ = b.engine.History("audit/a", 0)
	if len(h) != 3 || string(h[0].Payload) != `{"n":5}` || string(h[2].Payload) != `{"n":3}` {
		t.Fatalf("after restart: %v", h)
	}
	keys := 0
	_ = b.store.Scan("h\x00audit/a\x00", func(string, string) bool { keys++; return true })
	if keys != 3 {
		t.Fatalf("%d records kept for audit/a, want 3", keys)
	}
	if got := b.engine.HistoryTopics(); !reflect.DeepEqual(got, []string{"audit/a", "audit/b"}) {
		t.Fatalf("topics %v", got)
	}
}

// The bridge action hands the message to a real outbound bridge (an HTTP
// webhook), whatever the bridge's own filters.
func TestBridgeAction(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.URL.Path+" "+string(b))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)

	var br *bridge.Bridge
	var store *persistence.Store
	lookup := func(name string) (func(packetT) *batchT, bool) {
		if name != "hook" {
			return nil, false
		}
		return func(pk packetT) *batchT { return br.Offer(pk) }, true
	}
	b := startBroker(t, brokerOpts{bridges: lookup, rules: `
rules:
  - name: to-hook
    topics: [orders/+]
    actions:
      - transform: {fields: {id: "levels[1]", total: json.total}}
      - bridge: hook
      - drop: true
`})
	store = b.store
	sender, err := httpbridge.NewWebhook(httpbridge.WebhookConfig{URL: srv.URL + "/{{topic}}"})
	if err != nil {
		t.Fatal(err)
	}
	br, err = bridge.New(bridge.Config{Name: "hook", Filters: []string{"bridge-only/#"}}, store, sender, nil, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	br.Start()
	t.Cleanup(br.Stop)

	pub := connect(t, b.addr, "pub")
	if code := pub.pub(t, "orders/7", `{"total": 3, "secret": "x"}`, 1, nil); code != 0 {
		t.Fatalf("0x%02x", code)
	}
	pub.pub(t, "orders/8", `{"total": 4}`, 0, nil)
	eventually(t, "the webhook to receive both", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bodies) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if bodies[0] != `/orders/7 {"id":"7","total":3}` && bodies[1] != `/orders/7 {"id":"7","total":3}` {
		t.Fatalf("webhook got %q", bodies)
	}
}
