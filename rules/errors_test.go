package rules_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/motemq/mote/rules"
)

// Each on_error mode, with a transform that fails on a payload that is not
// JSON: the rule's other action runs (continue) or not, the original is
// delivered or not, a dead letter carries the error, and every failure is
// an event.
func TestOnError(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: keep-going
    topics: [c/#]
    actions:
      - transform: {fields: {v: json.value * 2}, merge: true}
      - republish: {topic: "after/{{ topic }}"}
  - name: stop
    topics: [d/#]
    on_error: drop
    actions:
      - transform: {fields: {v: json.value * 2}, merge: true}
      - republish: {topic: "after/{{ topic }}"}
  - name: deadly
    topics: [l/#]
    on_error: dead_letter
    actions:
      - transform: {fields: {v: json.value * 2}, merge: true}
      - republish: {topic: "after/{{ topic }}"}
  - name: bad-when
    topics: [w]
    on_error: drop
    when: json.value > 1
    actions: [republish: {topic: after/w}]
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 1, "c/#", "d/#", "l/#", "w", "after/#", "$rules/#", "$events/rule/error")
	pub := connect(t, b.addr, "pub")

	t.Run("continue", func(t *testing.T) {
		pub.pub(t, "c/x", "not json", 1, nil)
		got := sub.collect(t, "$events/rule/error", "after/c/x", "c/x")
		ev := jsonOf(t, got["$events/rule/error"].Payload)
		if ev["rule"] != "keep-going" || ev["action"] != "actions[0].transform" || ev["on_error"] != "continue" ||
			ev["topic"] != "c/x" || ev["client_id"] != "pub" || ev["event"] != "rule/error" || ev["timestamp"] == nil ||
			ev["error"] != "the payload is not JSON" {
			t.Fatalf("event %v", ev)
		}
		// The next action got the message as it was; the original is delivered.
		if m := got["after/c/x"]; string(m.Payload) != "not json" {
			t.Fatalf("after: %q", m.Payload)
		}
	})
	t.Run("drop", func(t *testing.T) {
		if code := pub.pub(t, "d/x", "not json", 1, nil); code != 0 {
			t.Fatalf("reason 0x%02x", code)
		}
		sub.nextOn(t, "$events/rule/error")
		pub.pub(t, "d/x", `{"value": 2}`, 1, nil)
		m := sub.nextOn(t, "after/d/x")
		if got := jsonOf(t, m.Payload); got["v"] != 4.0 {
			t.Fatalf("after: %s", m.Payload)
		}
		// The failed one never reached subscribers: the good one is the first on d/x.
		if m := sub.nextOn(t, "d/x"); !strings.Contains(string(m.Payload), "2") {
			t.Fatalf("delivered %q", m.Payload)
		}
	})
	t.Run("dead_letter", func(t *testing.T) {
		pub.pub(t, "l/x", "not json", 1, nil)
		m := sub.collect(t, "$rules/deadly/dead", "$events/rule/error")["$rules/deadly/dead"]
		if string(m.Payload) != "not json" || m.QoS != 1 || m.user("original-topic") != "l/x" || m.user("rule") != "deadly" ||
			!strings.Contains(m.user("error"), "actions[0].transform") {
			t.Fatalf("dead letter %q %+v", m.Payload, m.Props)
		}
		pub.pub(t, "l/x", `{"value": 1}`, 1, nil)
		sub.nextOn(t, "after/l/x")
		if m := sub.nextOn(t, "l/x"); !strings.Contains(string(m.Payload), "1") {
			t.Fatalf("delivered %q", m.Payload)
		}
	})
	t.Run("when fails", func(t *testing.T) {
		pub.pub(t, "w", "[]", 1, nil)
		ev := sub.nextOn(t, "$events/rule/error")
		if got := jsonOf(t, ev.Payload); got["action"] != "when" {
			t.Fatalf("event %s", ev.Payload)
		}
		pub.pub(t, "w", `{"value": 2}`, 1, nil)
		sub.nextOn(t, "after/w")
		if m := sub.nextOn(t, "w"); string(m.Payload) != `{"value": 2}` {
			t.Fatalf("delivered %q", m.Payload)
		}
	})
	st := map[string]rules.RuleStatus{}
	for _, s := range b.engine.Rules() {
		st[s.Name] = s
	}
	if s := st["deadly"]; s.Errors != 1 || s.Matched != 2 || !strings.Contains(s.LastError, "transform") || s.LastErrorAt.IsZero() {
		t.Fatalf("status %+v", s)
	}
	if n := b.engine.Counters.DeadLettered.Load(); n != 1 {
		t.Fatalf("dead lettered %d", n)
	}
}

// Compile reports every problem at once, naming the rule, the field and
// for expressions the line and column.
func TestCompileErrors(t *testing.T) {
	known := func(name string) (func(pk packetT) *batchT, bool) { return nil, name == "hook" }
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"expression", `
rules:
  - name: celsius
    topics: [t]
    when: json.temp > 1 && tempp < 3
    actions: [drop: true]`, []string{`rules[0] "celsius": when: line 1, column 18: unknown name tempp`}},
		{"not bool", `
rules:
  - name: x
    topics: [t]
    when: topic + "x"
    actions: [drop: true]`, []string{`rules[0] "x": when: expected bool, but got string`}},
		{"template", `
rules:
  - name: x
    topics: [t]
    actions:
      - republish: {topic: "a/{{ levels[0] }}/{{ nope }}"}`, []string{`rules[0] "x": actions[0].republish.topic: line 1, column 22: unknown name nope`}},
		{"unclosed template", `
rules:
  - name: x
    topics: [t]
    actions:
      - republish: {topic: "a/{{ topic"}`, []string{`actions[0].republish.topic: column 3: {{ without }}`}},
		{"several", `
rules:
  - name: ""
    topics: []
    actions: []
  - name: a/b
    topics: ["a/#/b", "$share/g/x"]
    on_error: explode
    actions:
      - {republish: {topic: x}, drop: true}
      - {}
      - bridge: nowhere
      - bridge: hook
      - aggregate: {}
      - split: {max: -1}
      - enrich: {table: t}
      - transform: {}
      - store: {max: -2}
      - scatter_gather: {targets: ["a/+"]}
  - name: dup
    topics: [x]
    actions: [drop: true]
  - name: dup
    topics: [x]
    actions: [drop: true]`, []string{
			`rules[0] "": name: missing`,
			`rules[0] "": topics: missing`,
			`rules[0] "": actions: missing`,
			`rules[1] "a/b": name: "a/b": letters`,
			`rules[1] "a/b": topics[0]: "a/#/b" is not a valid topic filter`,
			`rules[1] "a/b": topics[1]: "$share/g/x"`,
			`rules[1] "a/b": on_error: "explode": want continue, drop or dead_letter`,
			`rules[1] "a/b": actions[0]: one action per list item, not republish and drop`,
			`rules[1] "a/b": actions[1]: empty`,
			`rules[1] "a/b": actions[2].bridge: no bridge named "nowhere"`,
			`rules[1] "a/b": actions[4].aggregate: set count, window or both`,
			`rules[1] "a/b": actions[5].split.max: -1`,
			`rules[1] "a/b": actions[6].enrich.key: missing`,
			`rules[1] "a/b": actions[7].transform: nothing to do`,
			`rules[1] "a/b": actions[8].store.max: -2`,
			`rules[1] "a/b": actions[9].scatter_gather.targets[0]: topic "a/+": wildcards`,
			`rules[3] "dup": name: also the name of rules[2]`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := rules.Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			_, err = rules.Compile(rs, known)
			if err == nil {
				t.Fatal("compiled")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "actions[3]") {
				t.Errorf("a known bridge is an error:\n%v", err)
			}
		})
	}
}

func TestParseUnknownKey(t *testing.T) {
	_, err := rules.Parse([]byte(`
rules:
  - name: x
    topics: [t]
    actions:
      - republish: {topic: x, window: 1s}
`))
	if err == nil || !strings.Contains(err.Error(), "line 6") || !strings.Contains(err.Error(), "field window not found") {
		t.Fatalf("err = %v", err)
	}
}

// A rules file that fails to load or compile leaves the rules in force; a
// good one replaces them, keeping counters and Enable's switch.
func TestReload(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: a
    topics: [in]
    actions: [republish: {topic: out/a}]
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "out/#")
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "in", "1", 0, nil)
	sub.nextOn(t, "out/a")

	path := filepath.Join(t.TempDir(), "rules.yaml")
	reload := func(content string) error {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return b.engine.Load(&rules.Config{File: path})
	}
	if err := reload("rules:\n  - name: a\n    topics: [in]\n    when: nope\n    actions: [drop: true]\n"); err == nil ||
		!strings.Contains(err.Error(), `rules[0] "a": when: line 1, column 1: unknown name nope`) {
		t.Fatalf("bad expression: %v", err)
	}
	if err := reload("rules:\n  - name: a\n    topic: [in]\n"); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("unknown key: %v", err)
	}
	pub.pub(t, "in", "2", 0, nil)
	sub.nextOn(t, "out/a") // the old rules still work

	if err := b.engine.Enable("a", false); err != nil {
		t.Fatal(err)
	}
	if err := b.engine.Enable("zz", false); !errors.Is(err, rules.ErrUnknownRule) {
		t.Fatalf("enable unknown: %v", err)
	}
	if err := reload(`
rules:
  - name: b
    topics: [in]
    actions: [republish: {topic: out/b}]
  - name: a
    topics: [in]
    actions: [republish: {topic: out/a2}]
`); err != nil {
		t.Fatal(err)
	}
	pub.pub(t, "in", "3", 0, nil)
	if got := sub.sync(t); len(got) != 1 || got[0].Topic != "out/b" {
		t.Fatalf("rule a was switched off, yet %v arrived", got)
	}
	st := b.engine.Rules()
	if len(st) != 2 || st[0].Name != "b" || st[1].Name != "a" || st[1].Enabled || st[1].Matched != 2 {
		t.Fatalf("status %+v", st)
	}
	if err := b.engine.Enable("a", true); err != nil {
		t.Fatal(err)
	}
	pub.pub(t, "in", "4", 0, nil)
	sub.nextOn(t, "out/b")
	sub.nextOn(t, "out/a2")
}

// A rule never acts on its own output unless it opts in with chain, and
// then a loop ends at MaxHops.
func TestLoops(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: echo
    topics: [loop/#]
    actions: [republish: {topic: "loop/again"}]
  - name: chained
    topics: [chain/#]
    chain: true
    actions: [republish: {topic: "chain/again"}]
  - name: second
    topics: [loop/again]
    chain: true
    actions: [republish: {topic: "seen/{{ client_id }}"}]
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "loop/#", "chain/#", "seen/#", "$events/rule/error")
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "loop/x", "1", 0, nil)
	if m := sub.next(t); m.Topic != "seen/mote-rules/1" {
		t.Fatalf("got %s", m.Topic)
	}
	sub.nextOn(t, "loop/again")
	sub.nextOn(t, "loop/x")
	sub.sync(t)

	pub.pub(t, "chain/x", "1", 1, nil) // acknowledged once the rules ran
	n := 0
	var ev *msg
	for _, m := range sub.sync(t) {
		switch m.Topic {
		case "chain/again":
			n++
		case "$events/rule/error":
			ev = &m
		}
	}
	if n != rules.MaxHops {
		t.Fatalf("%d chained outputs, want %d", n, rules.MaxHops)
	}
	if ev == nil {
		m := sub.nextOn(t, "$events/rule/error")
		ev = &m
	}
	if got := jsonOf(t, ev.Payload); !strings.Contains(got["error"].(string), "passed 8 rules") {
		t.Fatalf("event %s", ev.Payload)
	}
}

// Clients may not publish where only the broker writes.
func TestReservedTopics(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 1, "$events/#", "$rules/#")
	pub := connect(t, b.addr, "pub")
	for _, topic := range []string{"$events/client/connected", "$rules/x/dead"} {
		if code := pub.pub(t, topic, "forged", 1, nil); code != 0x87 {
			t.Fatalf("%s: reason 0x%02x, want 0x87", topic, code)
		}
		pub.pub(t, topic, "forged", 0, nil)
	}
	v3 := connectV3(t, b.addr, "v3")
	tok := v3.Publish("$events/x", 1, false, "forged")
	tok.WaitTimeout(wait)
	eventually(t, "the MQTT 3 client to be disconnected", func() bool { return !v3.IsConnectionOpen() })
	for _, m := range sub.sync(t) {
		if string(m.Payload) == "forged" {
			t.Fatalf("forged message on %s delivered", m.Topic)
		}
	}
	if n := b.engine.Counters.Refused.Load(); n != 5 {
		t.Fatalf("refused %d", n)
	}
}

// The example file in testdata loads, compiles and works.
func TestExampleFile(t *testing.T) {
	rs, err := rules.LoadFile("testdata/example-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	known := func(name string) (func(pk packetT) *batchT, bool) { return nil, name == "orders-webhook" }
	set, err := rules.Compile(rs, known)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 11 {
		t.Fatalf("%d rules", set.Len())
	}
	b := startBroker(t, brokerOpts{})
	b.engine.Reload(set)
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 1, "alerts/#", "sensors/#", "cbor/#", "display/#", "$rules/#")
	pub := connect(t, b.addr, "pub")

	pub.pub(t, "sensors/k9/temp", `{"celsius": 101}`, 1, nil)
	got := sub.collect(t, "alerts/k9/overheat", "display/k9")
	if m := got["alerts/k9/overheat"]; m.user("severity") != "critical" {
		t.Fatalf("alert %+v", m.Props)
	}
	if m := got["display/k9"]; string(m.Payload) != "k9: 101 °C" {
		t.Fatalf("display %q", m.Payload)
	}
	late := connect(t, b.addr, "display")
	late.sub(t, 0, "display/#")
	if m := late.next(t); !m.Retain || string(m.Payload) != "k9: 101 °C" {
		t.Fatalf("retained display %q %v", m.Payload, m.Retain)
	}
	pub.pub(t, "legacy/k1/temp", `{"f": 212}`, 1, nil)
	got = sub.collect(t, "sensors/k1/temp", "cbor/sensors/k1/temp")
	if v := jsonOf(t, got["sensors/k1/temp"].Payload); v["celsius"] != 100.0 || v["device"] != "k1" || v["at"] == nil {
		t.Fatalf("converted %v", v)
	}
	pub.pub(t, "legacy/k2/temp", `"broken"`, 1, nil)
	if m := sub.nextOn(t, "$rules/fahrenheit-to-celsius/dead"); string(m.Payload) != `"broken"` {
		t.Fatalf("dead letter %q", m.Payload)
	}
	pub.pub(t, "gateways/g1/batch", `{"readings": [{"device": "a", "celsius": 20}, {"device": "b", "celsius": 30}]}`, 1, nil)
	sub.collect(t, "sensors/a/temp", "sensors/b/temp")
}

// The rules file for `mote bench`: 100 rules, ten matching its topics.
func TestBenchRulesFile(t *testing.T) {
	rs, err := rules.LoadFile("testdata/bench-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Compile(rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 100 {
		t.Fatalf("%d rules", set.Len())
	}
	b := startBroker(t, brokerOpts{rules: "rules: []"})
	b.engine.Reload(set)
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "mote-bench/0000abcd/3", "\x00\x01binary", 1, nil)
	matched := 0
	for _, st := range b.engine.Rules() {
		if st.Errors != 0 {
			t.Fatalf("%s: %s", st.Name, st.LastError)
		}
		matched += int(st.Matched)
	}
	if matched != 0 {
		t.Fatalf("%d rules fired", matched)
	}
}

// The broker embeds Config inline: its keys sit at the top level of the
// broker's file, unknown keys still refused.
func TestConfigYAML(t *testing.T) {
	type brokerFile struct {
		DataDir      string `yaml:"data_dir"`
		rules.Config `yaml:",inline"`
	}
	decode := func(y string) (brokerFile, error) {
		var f brokerFile
		dec := yaml.NewDecoder(strings.NewReader(y))
		dec.KnownFields(true)
		err := dec.Decode(&f)
		return f, err
	}
	f, err := decode(`
data_dir: /var/lib/mote
rules_file: /etc/mote/rules.yaml
events: false
tables: {customers: /etc/mote/customers.json}
rules:
  - name: a
    topics: [x]
    actions:
      - aggregate: {count: 2, window: 1m30s}
`)
	if err != nil {
		t.Fatal(err)
	}
	if f.File != "/etc/mote/rules.yaml" || f.EventsEnabled() || f.Tables["customers"] == "" || len(f.Rules) != 1 ||
		f.Rules[0].Actions[0].Aggregate.Window != 90*time.Second {
		t.Fatalf("%+v", f)
	}
	if (&rules.Config{}).EventsEnabled() != true {
		t.Fatal("events are on by default")
	}
	if _, err := decode("rule:\n  - name: a\n"); err == nil || !strings.Contains(err.Error(), "field rule not found") {
		t.Fatalf("unknown key: %v", err)
	}
}
