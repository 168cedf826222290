package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// BenchmarkSendQoS1 measures Send of one QoS 1 message (published and
// PUBACKed) to an in-process mochi remote, with 1 and 8 Sends at once (the
// bridge's concurrency option). Reports msgs/s.
//
//	go test -run '^$' -bench SendQoS1 -benchtime 20000x ./bridge/mqtt/
func BenchmarkSendQoS1(b *testing.B) {
	r := startMochi(b, nil)
	payload := make([]byte, 256)
	for _, version := range []int{5, 4} {
		for _, conc := range []int{1, 8} {
			b.Run(fmt.Sprintf("v%d/concurrency=%d", version, conc), func(b *testing.B) {
				br, err := New("bench", testConfig(r.url(), version, Topic{Pattern: "bench/#", QoS: 1}), nil, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				br.Start()
				b.Cleanup(br.Stop)
				waitUp(b, br)
				pks := make([]packets.Packet, conc)
				for i := range pks {
					pks[i] = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: fmt.Sprintf("bench/%d", i), Payload: payload}
				}
				ctx := context.Background()
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				b.ResetTimer()
				var wg sync.WaitGroup
				for w := range conc {
					n := b.N / conc
					if w < b.N%conc {
						n++
					}
					wg.Go(func() {
						one := pks[w : w+1]
						for range n {
							if err := br.Send(ctx, one); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				if got := br.Status().Published; got != uint64(b.N) {
					b.Errorf("published %d of %d", got, b.N)
				}
			})
		}
	}
}
