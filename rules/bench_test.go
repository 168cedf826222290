package rules_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"
)

// BenchmarkRules measures what rules cost a message: a real broker (auth,
// guard, rules, persistence), messages injected on sensors/{n}/{device}/temp
// at QoS 0 and received by one paho subscriber over TCP, with at most
// benchWindow messages in flight (so none is dropped). Each op is one
// message published and received.
//
//	none:   no rules loaded
//	100/10: 100 rules loaded, 10 of them match each message (topic filter)
//	        and evaluate a condition on the parsed JSON payload that is false
//	100/10-fire: the same, with the 10 conditions true and each rule
//	        transforming the payload (no republish: the output stays inside)
//	inject: the publish path alone, no subscriber (OnPublish cost)
//
//	go test -run '^$' -bench Rules -benchtime 200000x ./rules/
func BenchmarkRules(b *testing.B) {
	for _, c := range []struct {
		name  string
		rules string
		sub   bool
	}{
		{"none", "rules: []", true},
		{"100/10", benchRules(false), true},
		{"100/10-fire", benchRules(true), true},
		{"inject/none", "rules: []", false},
		{"inject/100/10", benchRules(false), false},
	} {
		b.Run(c.name, func(b *testing.B) { runRulesBench(b, c.rules, c.sub) })
	}
}

// benchRules makes 100 rules over ten topic groups: a message on
// sensors/{g}/... matches the ten rules of group g.
func benchRules(fire bool) string {
	var s strings.Builder
	s.WriteString("rules:\n")
	for i := range 100 {
		cond := fmt.Sprintf("json.temp > %d", 1000+i)
		if fire {
			cond = fmt.Sprintf("json.temp < %d", 1000+i)
		}
		fmt.Fprintf(&s, `  - name: r%d
    topics: ["sensors/%d/+/temp"]
    when: %s && json.device != ""
    actions:
      - transform: {fields: {device: json.device, f: json.temp * 1.8 + 32}}
`, i, i%10, cond)
	}
	return s.String()
}

const benchWindow = 64

func runRulesBench(b *testing.B, rulesYAML string, withSub bool) {
	br := startBroker(b, brokerOpts{rules: rulesYAML, noEvent: true})
	var got atomic.Int64
	kick := make(chan struct{}, 1)
	if withSub {
		sub := dial(b, br.addr, "sub", &client{}, func(paho.PublishReceived) (bool, error) {
			got.Add(1)
			select {
			case kick <- struct{}{}:
			default:
			}
			return true, nil
		})
		sub.sub(b, 0, "sensors/#")
	}
	cl := br.server.NewClient(nil, mqtt.LocalListener, "bench-pub", true)
	payload := []byte(`{"device":"d1","temp":21.5,"hum":40}`)
	topics := make([]string, 10)
	for g := range topics {
		topics[g] = fmt.Sprintf("sensors/%d/d1/temp", g)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := range b.N {
		for withSub && int64(i)-got.Load() >= benchWindow {
			select {
			case <-kick:
			case <-time.After(10 * time.Second):
				b.Fatalf("subscriber stuck at %d of %d", got.Load(), i)
			}
		}
		pk := mpackets.Packet{
			FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish},
			TopicName:   topics[i%10],
			Payload:     payload,
		}
		if err := br.server.InjectPacket(cl, pk); err != nil {
			b.Fatal(err)
		}
	}
	for withSub && got.Load() < int64(b.N) {
		select {
		case <-kick:
		case <-time.After(10 * time.Second):
			b.Fatalf("received %d of %d", got.Load(), b.N)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	// CPU time of the whole process (publisher, broker, subscriber) per
	// message: steadier than wall time on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/msg")
	if st := br.engine.Rules(); len(st) > 0 {
		var matched uint64
		for _, r := range st {
			matched += r.Matched
		}
		b.ReportMetric(float64(matched)/float64(b.N), "fired/msg")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
