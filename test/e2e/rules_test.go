package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// The rules file is read again on SIGHUP: a new valid file takes over; a
// broken one is refused with the reason in the log and the rules in force
// stay.
func TestRulesReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(rulesFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`rules:
  - name: forward
    topics: [in/+]
    actions:
      - republish: {topic: "out/{{ levels[1] }}", qos: 1}
`)
	cfg := filepath.Join(dir, "mote.yaml")
	if err := os.WriteFile(cfg, []byte("rules_file: "+rulesFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := brokertest.Spawn(t, moteBin, filepath.Join(dir, "data"), "--config", cfg)
	addr := p.Addr(broker.ListenerMQTT)
	sub := brokertest.MustV5(t, addr, brokertest.Options{ID: "sub", Clean: true})
	sub.Sub(t, 1, "out/#", "loud/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})

	expect := func(topic, payload string) {
		t.Helper()
		m := sub.Next(t, 10*time.Second)
		if m.Topic != topic || string(m.Payload) != payload {
			t.Fatalf("got %q %q, want %q %q", m.Topic, m.Payload, topic, payload)
		}
	}
	pub.MustPub(t, "in/a", []byte("1"), 1, false)
	expect("out/a", "1")

	// A new file: its rule replaces the old one.
	write(`rules:
  - name: shout
    topics: [in/+]
    actions:
      - transform: {template: "{{ upper(payload) }}!"}
      - republish: {topic: "loud/{{ levels[1] }}", qos: 1}
`)
	reload := func() {
		t.Helper()
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	reload()
	waitLog(t, p, "rules loaded", 2)
	pub.MustPub(t, "in/b", []byte("hey"), 1, false)
	expect("loud/b", "HEY!")
	if m, ok := sub.Try(200 * time.Millisecond); ok {
		t.Fatalf("the old rule still ran: %q %q", m.Topic, m.Payload)
	}

	// A broken file: refused, with the rule, line and column; the rules in
	// force stay.
	write(`rules:
  - name: broken
    topics: [in/+]
    when: json.temp >>> 3
    actions:
      - drop: true
`)
	reload()
	waitLog(t, p, "rules not reloaded; the previous rules stay in force", 1)
	if log := p.Log(); !strings.Contains(log, "broken") {
		t.Fatalf("the refusal does not name the rule:\n%s", log)
	}
	pub.MustPub(t, "in/c", []byte("still"), 1, false)
	expect("loud/c", "STILL!")
}
