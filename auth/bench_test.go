package auth

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// benchACL is a typical ACL file: deny rules first, then per-user and
// per-client patterns.
const benchACL = `
deny  anonymous  all  #
allow role ops   all  $SYS/#
allow user admin all  #
deny  any        all  devices/+/secret/#
allow any        all  devices/%u/#
allow any        pub  logs/%c-out
allow any        sub  $share/%u/jobs/#
allow any        sub  cmd/%c/+
allow any        sub  jobs/#
`

// BenchmarkACL measures the checks made for every publish (CanPublish) and
// for every delivery (CanSubscribe with the message's topic), and for a
// SUBSCRIBE with wildcards.
func BenchmarkACL(b *testing.B) {
	a := mustACL(b, benchACL)
	id := Identity{Username: "bob", ClientID: "bob-1"}
	tok := Identity{Username: "bob", ClientID: "bob-1", TokenPublish: []string{"devices/%u/#", "logs/#"}, TokenSubscribe: []string{"devices/%u/#"}}
	for _, tc := range []struct {
		name  string
		id    Identity
		pub   bool
		topic string
		want  bool
	}{
		{"publish/%u-rule", id, true, "devices/bob/telemetry/temp", true},
		{"publish/%c-in-level", id, true, "logs/bob-1-out", true},
		{"publish/no-rule-matches", id, true, "other/topic/x", false},
		{"publish/token-scope", tok, true, "devices/bob/telemetry/temp", true},
		{"deliver/%u-rule", id, false, "devices/bob/telemetry/temp", true},
		{"subscribe/wildcards", id, false, "devices/bob/telemetry/+", true},
		{"subscribe/shared", id, false, "$share/bob/jobs/+", true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			check := func() bool {
				if tc.pub {
					return a.CanPublish(tc.id, tc.topic)
				}
				return a.CanSubscribe(tc.id, tc.topic)
			}
			if got := check(); got != tc.want {
				b.Fatalf("%q: got %v, want %v", tc.topic, got, tc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				check()
			}
		})
	}
}

// BenchmarkOnACLCheck measures the hook as mochi calls it for a publish
// and for a delivery of a connected client.
func BenchmarkOnACLCheck(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	server := mqtt.New(&mqtt.Options{Logger: log})
	rules, err := ParseACL(strings.NewReader(benchACL), "bench.acl")
	if err != nil {
		b.Fatal(err)
	}
	h, err := New(Config{Rules: rules}, server, log)
	if err != nil {
		b.Fatal(err)
	}
	cl := server.NewClient(nil, "t", "bob-1", false)
	h.clients[cl] = &client{id: Identity{Username: "bob", ClientID: "bob-1"}}
	for _, write := range []bool{true, false} {
		name := "deliver"
		if write {
			name = "publish"
		}
		b.Run(name, func(b *testing.B) {
			if !h.OnACLCheck(cl, "devices/bob/telemetry/temp", write) {
				b.Fatal("denied")
			}
			b.ReportAllocs()
			for b.Loop() {
				h.OnACLCheck(cl, "devices/bob/telemetry/temp", write)
			}
		})
	}
}
