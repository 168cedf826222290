// Package bench is Mote's MQTT load generator; `mote bench` is a thin wrapper
// around [Main].
//
// # Scenarios
//
//   - pubsub: N publishers and M subscribers in one of three topic layouts
//     (fanin: N→1 topic→M, fanout: 1→1 topic→M, pairs: N pairs on N topics).
//   - latency: pubsub with 1 publisher and 1 subscriber, paced (5000 msg/s, QoS 1).
//   - queue: N publishers → one topic, M consumers in a $share group.
//   - conns: N idle connections held open with keepalive; optionally the broker's
//     resident memory per connection, read from /proc/PID/status.
//
// MQTT v5 uses paho.golang (package paho, not autopaho: no reconnects, so a lost
// connection is reported instead of hidden); MQTT 3.1.1 uses paho.mqtt.golang
// with auto-reconnect and connect-retry off for the same reason.
//
// # What is measured
//
// Every payload starts with a 24-byte header (see header.go): run id, producer
// id, sequence number and send time (monotonic nanoseconds since the run
// began). Receivers decode it to compute end-to-end latency (a fixed-size
// log-linear histogram, not a slice of samples), duplicates, out-of-order
// deliveries and, after the drain, loss.
//
//   - The clock starts only after every client has connected and subscribed.
//   - For QoS ≥ 1 a message counts as sent only when its PUBACK (QoS 1) or
//     PUBCOMP (QoS 2) arrived with a success reason code. For QoS 0 it counts
//     when it was written to the connection (QoS 0 has no acknowledgement).
//   - When --duration ends, publishers stop, wait (within --drain) for the
//     acknowledgements of what is still in flight, and the receivers get the
//     rest of --drain to receive everything that was sent. A message that was
//     sent but never reached a receiver that should have had it is lost.
//   - Send rate is sent / (last acknowledgement − start); delivery rate is
//     deliveries / (last delivery − start); neither includes idle drain time.
//
// # Keeping the generator out of the way
//
// The generator usually shares the machine with the broker, so its own CPU
// is taken from the broker. --pid reports both over the measured window
// (MessageStats.CPU); --cpuprofile writes the generator's profile. Reads
// are buffered (see tcpConn), and GOGC defaults to 400 for the generator
// (about a fifth of its CPU went to the garbage collector at 100). What
// remains is mostly paho.golang's one write system call per
// acknowledgement, which only a different client library would remove.
//
// # Goroutines and shutdown
//
// [Run] owns everything it starts. Publishers, connectors and the per-client
// acknowledgement readers are started with sync.WaitGroup.Go and stopped by
// context cancellation; every client is disconnected and every WaitGroup is
// waited for before Run returns, on success, on error and on cancellation.
// Nothing sleeps to synchronise: waits select on a context, a timer or a
// channel. Locks are leaves (no lock is held while taking another), except
// that paho's session lock is held while it sends on the acknowledgement
// channel, which is sized so that send never blocks (see ackSession).
package bench
