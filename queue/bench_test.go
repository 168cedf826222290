package queue

import (
	"io"
	"log/slog"
	"strconv"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/persistence"
)

// benchManager returns a manager on a fresh store whose server holds 10,000
// ordinary subscriptions (one per device, plus 100 wildcard ones matching
// every device) and, as restored sessions, the given shared subscriptions;
// entries declare queues. The dispatcher is stopped at the end.
func benchManager(b *testing.B, shared []string, entries []Settings) *Manager {
	b.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := persistence.Open(persistence.Config{Dir: b.TempDir(), Fsync: persistence.FsyncEverySecond}, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	server := mqtt.New(&mqtt.Options{Logger: log})
	for i := range 10_000 {
		filter := "devices/" + strconv.Itoa(i) + "/telemetry"
		if i < 100 {
			filter = "devices/+/telemetry"
		}
		server.Topics.Subscribe("plain-"+strconv.Itoa(i), packets.Subscription{Filter: filter, Qos: 1})
	}
	for i, filter := range shared {
		for j := range 2 {
			cl := server.NewClient(nil, "tcp", "member-"+strconv.Itoa(i)+"-"+strconv.Itoa(j), false)
			cl.Properties.ProtocolVersion = 5
			sub := packets.Subscription{Filter: filter, Qos: 1}
			server.Topics.Subscribe(cl.ID, sub)
			cl.State.Subscriptions.Add(filter, sub)
			server.Clients.Add(cl)
		}
	}
	persist := persistence.NewHook(store, server, persistence.Options{})
	mg := New(server, store, persist, entries, Defaults(), log)
	if err := mg.Restore(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mg.Stop() })
	return mg
}

// BenchmarkGroupsFor measures the per-publish lookup of the queues a
// message goes to, on a server with 10,000 ordinary subscriptions.
func BenchmarkGroupsFor(b *testing.B) {
	few := []string{"$share/g1/devices/+/telemetry", "$share/g2/alerts/#", "$share/g3/devices/42/#", "$share/g4/other/+"}
	var many []string // a group per device
	for i := range 1000 {
		many = append(many, "$share/dev"+strconv.Itoa(i)+"/devices/"+strconv.Itoa(i)+"/#")
	}
	for _, tc := range []struct {
		name    string
		shared  []string
		entries []Settings
		want    int
	}{
		{"none", nil, nil, 0},
		{"few-groups", few, nil, 2},
		{"few-groups+declared", few, []Settings{{Name: "d1", Filter: "devices/#"}, {Name: "d2", Filter: "billing/#"}}, 3},
		{"1000-groups", many, nil, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			mg := benchManager(b, tc.shared, tc.entries)
			if got := mg.routes.match("devices/42/telemetry"); len(got) != tc.want {
				b.Fatalf("routes.match = %v, want %d groups", got, tc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				mg.routes.match("devices/42/telemetry")
			}
		})
	}
}

// BenchmarkOnPublishNoQueues measures the queue hook's whole OnPublish for
// a publish no queue takes (the plain pub/sub case).
func BenchmarkOnPublishNoQueues(b *testing.B) {
	mg := benchManager(b, nil, nil)
	cl := mg.server.NewClient(nil, "tcp", "pub", false)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "devices/42/telemetry", Payload: []byte("x")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mg.OnPublish(cl, pk); err != nil {
			b.Fatal(err)
		}
	}
}
