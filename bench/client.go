package bench

import (
	"context"
	"net"
	"net/url"
	"time"
)

// mqttConn is one benchmark client over MQTT v5 (paho.golang) or 3.1.1
// (paho.mqtt.golang). There is no reconnect: a lost connection is reported
// through clientOpts.onLost and ends the run.
type mqttConn interface {
	// publish sends one PUBLISH. QoS 0 returns once the message is written (v5)
	// or handed to the library's writer (3.1.1). QoS ≥ 1 returns once it is
	// written or queued, and the outcome reaches clientOpts.onAck later; the
	// caller keeps at most clientOpts.inflight outstanding. seq is passed back
	// to onAck. An error means the message was not sent.
	publish(ctx context.Context, topic string, qos byte, payload []byte, seq uint64) error
	// subscribe subscribes to one filter and waits for a successful SUBACK.
	subscribe(ctx context.Context, filter string, qos byte) error
	// close sends DISCONNECT, closes the connection, and waits for the
	// client's goroutines; once it returns no callback runs any more. It is
	// bounded: writes get a deadline of closeTimeout.
	close() error
}

// ackResult is the outcome of a QoS ≥ 1 publish.
type ackResult uint8

const (
	ackOK       ackResult = iota // PUBACK / PUBCOMP with a success reason code
	ackRejected                  // reason code ≥ 0x80 (v5 only)
	ackLost                      // the connection ended first
)

// closeTimeout bounds the writes of DISCONNECT and of anything still queued
// when a client closes, so a broker that stopped reading cannot hang Run.
const closeTimeout = 2 * time.Second

// clientOpts configures one client.
type clientOpts struct {
	cfg *Config
	url *url.URL
	id  string
	// receiveMax is the v5 Receive Maximum sent in CONNECT. paho.golang
	// allocates a channel of that many pointers per connection (512 KiB at
	// the default 65535), so idle and publish-only clients send a small value.
	receiveMax uint16
	// inflight sizes the acknowledgement queue (publishers only).
	inflight int
	// readBuf is the read buffer size for TCP; 0 leaves reads unbuffered
	// (idle connections, where a buffer per connection would dominate our memory).
	readBuf int
	// onMessage receives each delivered payload on the client's delivery
	// goroutine, one at a time; nil for clients that do not subscribe.
	onMessage func(payload []byte)
	// onAck receives the outcome of each QoS ≥ 1 publish, in a goroutine the
	// client owns; for ackLost seq may be unknown (0). nil for non-publishers.
	onAck func(seq uint64, res ackResult)
	// onLost is called at most once if the connection ends before close.
	onLost func(error)
}

// connect dials the broker and completes CONNECT/CONNACK within the
// configured connect timeout.
func connect(ctx context.Context, o clientOpts) (mqttConn, error) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.ConnectTimeout)
	defer cancel()
	if o.cfg.Protocol == 5 {
		return connectV5(ctx, o)
	}
	return connectV3(ctx, o)
}

// setCloseDeadline makes pending and future writes on nc fail after
// closeTimeout; used right before DISCONNECT.
func setCloseDeadline(nc net.Conn) {
	if nc != nil {
		// An error means the connection is already closed, which is what we want.
		_ = nc.SetWriteDeadline(time.Now().Add(closeTimeout))
	}
}
