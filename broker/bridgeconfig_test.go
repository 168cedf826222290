package broker

import (
	"strings"
	"testing"
)

// Every bad bridge entry is refused at load with the entry's index, the
// field and what to write instead.
func TestBridgeConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"no type", "bridges:\n  - name: a\n    filters: [x]\n    url: http://h/", []string{"bridges[0].type:", "missing: use http, amqp or mqtt"}},
		{"unknown type", "bridges:\n  - name: a\n    type: kafka\n    filters: [x]", []string{"bridges[0].type:", `"kafka"`, "use http, amqp or mqtt"}},
		{"amqp without section", "bridges:\n  - name: a\n    type: amqp\n    filters: [x]", []string{"bridges[0].amqp:", "missing"}},
		{"amqp url", "bridges:\n  - name: a\n    type: amqp\n    filters: [x]\n    amqp:\n      url: localhost:5672\n      exchange: {name: x}", []string{"bridges[0].amqp.url:"}},
		{"amqp exchange type", "bridges:\n  - name: a\n    type: amqp\n    filters: [x]\n    amqp:\n      url: amqp://h/\n      exchange: {name: x, type: fan}", []string{"bridges[0].amqp.exchange.type:", `"fan"`}},
		{"amqp in queue", "bridges:\n  - name: a\n    type: amqp\n    amqp:\n      url: amqp://h/\n      in: [{qos: 1}]", []string{"bridges[0].amqp.in[0].queue:"}},
		{"amqp does nothing", "bridges:\n  - name: a\n    type: amqp\n    amqp:\n      url: amqp://h/", []string{"bridges[0]:", "does nothing"}},
		{"amqp section on http", "bridges:\n  - name: a\n    type: http\n    filters: [x]\n    url: http://h/\n    amqp:\n      url: amqp://h/", []string{"bridges[0].amqp:", "use type: amqp"}},
		{"mqtt without section", "bridges:\n  - name: a\n    type: mqtt", []string{"bridges[0].mqtt:", "missing"}},
		{"mqtt filters", "bridges:\n  - name: a\n    type: mqtt\n    filters: [x]\n    mqtt:\n      url: tcp://h:1883\n      topics: [{pattern: x}]", []string{"bridges[0].filters:", "mqtt.topics"}},
		{"mqtt scheme", "bridges:\n  - name: a\n    type: mqtt\n    mqtt:\n      url: http://h:1883\n      topics: [{pattern: x}]", []string{"bridges[0].mqtt.url:"}},
		{"mqtt direction", "bridges:\n  - name: a\n    type: mqtt\n    mqtt:\n      url: tcp://h:1883\n      topics: [{pattern: x, direction: sideways}]", []string{"bridges[0].mqtt.topics[0].direction:", `"sideways"`}},
		{"mqtt version", "bridges:\n  - name: a\n    type: mqtt\n    mqtt:\n      url: tcp://h:1883\n      protocol_version: 3\n      topics: [{pattern: x}]", []string{"bridges[0].mqtt.protocol_version:"}},
		{"request on amqp", "bridges:\n  - name: a\n    type: amqp\n    mode: request\n    filters: [x]\n    amqp:\n      url: amqp://h/\n      exchange: {name: x}", []string{"bridges[0].mode:", "request is for http bridges"}},
		{"unknown amqp key", "bridges:\n  - name: a\n    type: amqp\n    amqp:\n      uri: amqp://h/", []string{"uri"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("bad.yaml", []byte(tc.yaml))
			wantErrContains(t, err, tc.want...)
		})
	}
}

// A valid amqp and mqtt bridge entry loads.
func TestBridgeConfigValid(t *testing.T) {
	c, err := ParseConfig("ok.yaml", []byte(`bridges:
  - name: rabbit
    type: amqp
    filters: ["sensors/#"]
    username: bridge
    amqp:
      url: amqp://guest:guest@127.0.0.1:5672/
      exchange: {name: mote, type: topic, declare: true}
      in:
        - queue: commands
          declare: true
          bindings: [{exchange: mote, key: "cmd.#"}]
  - name: cloud
    type: mqtt
    mqtt:
      url: tcp://127.0.0.1:1883
      topics:
        - {pattern: "up/#", direction: out, remote_prefix: "site1/"}
        - {pattern: "down/#", direction: in, local_prefix: "cloud/"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Bridges[1].outFilters(); strings.Join(got, ",") != "up/#" {
		t.Fatalf("mqtt out filters %v", got)
	}
}
