package rules_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/fxamacker/cbor/v2"
	"github.com/vmihailenco/msgpack/v5"
)

func jsonOf(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("payload %q: %v", b, err)
	}
	return v
}

func TestRepublish(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: hot
    topics: [sensors/+/temp]
    when: json.value > 30
    actions:
      - republish:
          topic: "alerts/{{ levels[1] }}/hot"
          qos: 1
          payload: '{"device": levels[1], "value": json.value, "by": client_id}'
          user: {severity: "{{ json.value > 40 ? 'high' : 'low' }}"}
      - republish:
          topic: "copies/{{ topic }}"
          template: "{{ levels[1] }} is at {{ json.value }}"
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 1, "alerts/#", "copies/#", "sensors/#")
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "sensors/k1/temp", `{"value": 25}`, 1, nil)
	pub.pub(t, "sensors/k1/temp", `{"value": 45}`, 1, nil)

	if m := sub.next(t); m.Topic != "sensors/k1/temp" || string(m.Payload) != `{"value": 25}` {
		t.Fatalf("first message: %s %s", m.Topic, m.Payload)
	}
	// The rules run before the original is routed.
	m := sub.next(t)
	if m.Topic != "alerts/k1/hot" || m.QoS != 1 {
		t.Fatalf("alert: %s qos %d", m.Topic, m.QoS)
	}
	if got := jsonOf(t, m.Payload); got["device"] != "k1" || got["value"] != 45.0 || got["by"] != "pub" {
		t.Fatalf("alert payload %s", m.Payload)
	}
	if m.user("severity") != "high" {
		t.Fatalf("severity %q", m.user("severity"))
	}
	if m := sub.next(t); m.Topic != "copies/sensors/k1/temp" || string(m.Payload) != "k1 is at 45" {
		t.Fatalf("copy: %s %q", m.Topic, m.Payload)
	}
	if m := sub.next(t); m.Topic != "sensors/k1/temp" {
		t.Fatalf("original: %s", m.Topic)
	}
	if got := sub.sync(t); len(got) != 0 {
		t.Fatalf("more messages: %v", got)
	}
	st := b.engine.Rules()
	if len(st) != 1 || st[0].Matched != 1 || st[0].Errors != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestTransformChain(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: to-cbor
    topics: [in/json]
    actions:
      - transform:
          fields:
            id: json.device
            celsius: (json.f - 32) / 1.8
            tags: json.tags
      - transform: {to: cbor}
      - republish: {topic: out/cbor}
      - transform: {from: cbor, to: msgpack}
      - republish: {topic: out/msgpack}
      - transform: {to: base64}
      - republish: {topic: out/base64}
      - transform: {from: base64, to: hex}
      - republish: {topic: out/hex}
      - transform: {from: hex}
      - transform: {from: msgpack, to: json, merge: true, fields: {source: '"msgpack"'}, remove: [tags]}
      - republish: {topic: out/json}
      - transform: {template: "{{ json.id }}: {{ json.celsius }} C ({{ json.source }})"}
      - republish: {topic: out/text}
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "out/#")
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "in/json", `{"device": "k1", "f": 212, "tags": ["a", 1]}`, 0, nil)

	want := map[string]any{"id": "k1", "celsius": 100.0, "tags": []any{"a", uint64(1)}}
	m := sub.nextOn(t, "out/cbor")
	if m.Props == nil || m.Props.ContentType != "application/cbor" {
		t.Fatalf("content type %+v", m.Props)
	}
	var got map[string]any
	if err := cbor.Unmarshal(m.Payload, &got); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cbor %v, want %v", got, want)
	}
	m = sub.nextOn(t, "out/msgpack")
	got = nil
	if err := msgpack.Unmarshal(m.Payload, &got); err != nil {
		t.Fatal(err)
	}
	if got["id"] != "k1" || got["celsius"] != 100.0 {
		t.Fatalf("msgpack %v", got)
	}
	msgpackBytes := m.Payload
	m = sub.nextOn(t, "out/base64")
	if string(m.Payload) != base64.StdEncoding.EncodeToString(msgpackBytes) {
		t.Fatalf("base64 %q", m.Payload)
	}
	m = sub.nextOn(t, "out/hex")
	if string(m.Payload) != hex.EncodeToString(msgpackBytes) {
		t.Fatalf("hex %q", m.Payload)
	}
	m = sub.nextOn(t, "out/json")
	if g := jsonOf(t, m.Payload); !reflect.DeepEqual(g, map[string]any{"id": "k1", "celsius": 100.0, "source": "msgpack"}) {
		t.Fatalf("json %s", m.Payload)
	}
	m = sub.nextOn(t, "out/text")
	if string(m.Payload) != "k1: 100 C (msgpack)" {
		t.Fatalf("text %q", m.Payload)
	}
}

func TestSplit(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: each
    topics: [batch/+]
    actions:
      - split: {}
      - republish: {topic: "item/{{ levels[1] }}/{{ index }}"}
  - name: readings
    topics: [report]
    actions:
      - split: {expr: 'map(json.readings, {{"n": #, "device": json.device}})'}
      - republish: {topic: "reading/{{ json.device }}/{{ index }}"}
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "item/#", "reading/#")
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "batch/x", `[1, "two", {"three": 3}]`, 0, nil)
	for i, want := range []string{`1`, `"two"`, `{"three":3}`} {
		m := sub.next(t)
		if m.Topic != fmt.Sprintf("item/x/%d", i) || string(m.Payload) != want {
			t.Fatalf("element %d: %s %s, want %s", i, m.Topic, m.Payload, want)
		}
	}
	pub.pub(t, "report", `{"device": "d", "readings": [10, 20]}`, 0, nil)
	for i, n := range []float64{10, 20} {
		m := sub.next(t)
		if m.Topic != fmt.Sprintf("reading/d/%d", i) || jsonOf(t, m.Payload)["n"] != n {
			t.Fatalf("reading %d: %s %s", i, m.Topic, m.Payload)
		}
	}
}

func TestAggregate(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: by-three
    topics: [meter/+]
    actions:
      - aggregate: {key: "levels[1]", count: 3, window: 1m}
      - transform: {expr: '{"meter": json.key, "total": sum(json.items, #.kwh), "complete": json.complete}'}
      - republish: {topic: "totals/{{ json.meter }}"}
  - name: window
    topics: [tick]
    actions:
      - aggregate: {window: 100ms}
      - republish: {topic: ticks}
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "totals/#", "ticks")
	pub := connect(t, b.addr, "pub")
	for i := 1; i <= 3; i++ {
		pub.pub(t, "meter/a", fmt.Sprintf(`{"kwh": %d}`, i), 0, nil)
		pub.pub(t, "meter/b", `{"kwh": 100}`, 0, nil)
	}
	for _, want := range []map[string]any{
		{"meter": "a", "total": 6.0, "complete": true},
		{"meter": "b", "total": 300.0, "complete": true},
	} {
		m := sub.next(t)
		if got := jsonOf(t, m.Payload); !reflect.DeepEqual(got, want) || m.Topic != "totals/"+want["meter"].(string) {
			t.Fatalf("%s %s, want %v", m.Topic, m.Payload, want)
		}
	}
	// A window completes with what arrived.
	pub.pub(t, "tick", `1`, 0, nil)
	pub.pub(t, "tick", `"two"`, 0, nil)
	m := sub.nextOn(t, "ticks")
	got := jsonOf(t, m.Payload)
	if got["count"] != 2.0 || got["complete"] != true || !reflect.DeepEqual(got["items"], []any{1.0, "two"}) {
		t.Fatalf("window: %s", m.Payload)
	}
	// An aggregation open at a reload is emitted, incomplete.
	pub.pub(t, "meter/c", `{"kwh": 7}`, 0, nil)
	sub.sync(t)
	set, err := b.engine.Compile(mustParse(t, `
rules:
  - name: other
    topics: [x]
    actions: [drop: true]
`))
	if err != nil {
		t.Fatal(err)
	}
	b.engine.Reload(set)
	m = sub.nextOn(t, "totals/c")
	if got := jsonOf(t, m.Payload); got["total"] != 7.0 || got["complete"] != false {
		t.Fatalf("flushed: %s", m.Payload)
	}
}

func TestScatterGatherOneMissing(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: quote
    topics: [quote/request]
    actions:
      - scatter_gather:
          targets: [svc/a/quote, svc/b/quote, "svc/{{ json.extra }}/quote"]
          timeout: 300ms
          qos: 1
      - republish: {topic: quote/log}
`})
	// Two services answer; c never does.
	for _, name := range []string{"a", "b"} {
		svc := connect(t, b.addr, "svc-"+name)
		svc.sub(t, 1, "svc/"+name+"/quote")
		go func() {
			for {
				var m msg
				select {
				case m = <-svc.in:
				case <-svc.Done():
					return
				}
				if m.Props == nil || m.Props.ResponseTopic == "" {
					continue
				}
				_, _ = svc.Publish(t.Context(), &paho.Publish{
					Topic: m.Props.ResponseTopic, QoS: 1, Payload: fmt.Appendf(nil, `{"price": %d}`, len(name)*10+int(name[0]-'a')),
					Properties: &paho.PublishProperties{CorrelationData: m.Props.CorrelationData},
				})
			}
		}()
	}
	req := connect(t, b.addr, "req")
	req.sub(t, 1, "quote/reply", "quote/log")
	start := time.Now()
	req.pub(t, "quote/request", `{"extra": "c"}`, 1, &paho.PublishProperties{
		ResponseTopic: "quote/reply", CorrelationData: []byte("corr-1"),
	})
	m := req.nextOn(t, "quote/reply")
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("answered after %v, before the timeout", took)
	}
	if m.Props == nil || string(m.Props.CorrelationData) != "corr-1" {
		t.Fatalf("correlation data %+v", m.Props)
	}
	got := jsonOf(t, m.Payload)
	want := map[string]any{
		"complete": false,
		"replies":  map[string]any{"svc/a/quote": map[string]any{"price": 10.0}, "svc/b/quote": map[string]any{"price": 11.0}},
		"missing":  []any{"svc/c/quote"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("answer %s", m.Payload)
	}
	if m := req.nextOn(t, "quote/log"); !reflect.DeepEqual(jsonOf(t, m.Payload), want) {
		t.Fatalf("the rest of the rule got %s", m.Payload)
	}
}

func TestScatterGatherAllAnswer(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: ask
    topics: [ask]
    actions:
      - scatter_gather: {targets: [svc/x], timeout: 1m, reply_topic: answers}
`})
	svc := connect(t, b.addr, "svc")
	svc.sub(t, 0, "svc/x")
	req := connect(t, b.addr, "req")
	req.sub(t, 0, "answers")
	req.pub(t, "ask", "?", 0, nil)
	m := svc.next(t)
	// An MQTT 3-style answer: the reply topic alone identifies the request.
	svc.pub(t, m.Props.ResponseTopic, "yes", 0, nil)
	a := req.next(t)
	if got := jsonOf(t, a.Payload); got["complete"] != true || !reflect.DeepEqual(got["replies"], map[string]any{"svc/x": "yes"}) {
		t.Fatalf("answer %s", a.Payload)
	}
	// A late or unknown reply is taken and ignored.
	if code := svc.pub(t, m.Props.ResponseTopic, "late", 1, nil); code != 0 {
		t.Fatalf("late reply acknowledged with 0x%02x", code)
	}
	if n := b.engine.Counters.LateReplies.Load(); n != 1 {
		t.Fatalf("late replies %d", n)
	}
}

// A rule can answer scatter-gather requests itself.
func TestScatterGatherRuleReplier(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: ask
    topics: [ask]
    actions:
      - scatter_gather: {targets: [svc/double], timeout: 1m, reply_topic: answers}
  - name: doubler
    topics: [svc/double]
    chain: true
    actions:
      - republish: {topic: "{{ properties.response_topic }}", payload: "json.n * 2"}
`})
	c := connect(t, b.addr, "c")
	c.sub(t, 0, "answers")
	c.pub(t, "ask", `{"n": 21}`, 1, nil)
	if got := jsonOf(t, c.next(t).Payload); !reflect.DeepEqual(got["replies"], map[string]any{"svc/double": 42.0}) {
		t.Fatalf("answer %v", got)
	}
}

func TestDropAcksPublisher(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: no-debug
    topics: [logs/#]
    when: json?.level == "debug"
    actions:
      - republish: {topic: debug-copies}
      - drop: true
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 1, "logs/#", "debug-copies")
	pub := connect(t, b.addr, "pub")
	for _, qos := range []byte{0, 1, 2} {
		if code := pub.pub(t, "logs/app", `{"level": "debug"}`, qos, nil); code != 0 {
			t.Fatalf("QoS %d: reason 0x%02x, want success", qos, code)
		}
		if m := sub.next(t); m.Topic != "debug-copies" {
			t.Fatalf("got %s", m.Topic)
		}
	}
	pub.pub(t, "logs/app", `{"level": "info"}`, 1, nil)
	if m := sub.next(t); m.Topic != "logs/app" || !strings.Contains(string(m.Payload), "info") {
		t.Fatalf("got %s %s", m.Topic, m.Payload)
	}
	if n := b.engine.Counters.Dropped.Load(); n != 3 {
		t.Fatalf("dropped %d", n)
	}
	// A dropped message is not retained either.
	if _, err := pub.Publish(t.Context(), &paho.Publish{Topic: "logs/retained", QoS: 1, Retain: true, Payload: []byte(`{"level": "debug"}`)}); err != nil {
		t.Fatal(err)
	}
	late := connect(t, b.addr, "late")
	late.sub(t, 1, "logs/#")
	if got := late.sync(t); len(got) != 0 {
		t.Fatalf("retained: %v", got)
	}
}

func TestDropMQTT3(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: drop-all
    topics: [gone/#]
    actions: [drop: true]
`})
	pub := connectV3(t, b.addr, "v3pub")
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 1, "gone/#")
	pub.pub(t, "gone/x", "a", 1) // waits for PUBACK
	pub.pub(t, "gone/x", "b", 2) // waits for PUBCOMP
	if got := sub.sync(t); len(got) != 0 {
		t.Fatalf("dropped messages delivered: %v", got)
	}
}
