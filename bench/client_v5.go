package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// v5Conn is an MQTT v5 client on paho.golang's low-level paho.Client.
//
// paho.Client.Publish blocks until the PUBACK/PUBCOMP, so keeping several
// publishes in flight would need a goroutine per outstanding message, and the
// order in which those reach the wire would be up to the scheduler — useless
// for out-of-order counting. Instead a publisher uses PublishMethod_AsyncSend
// (returns once the packet is written, in call order) and ackSession routes
// the final acknowledgement of every PUBLISH to one channel read by one
// goroutine per client, which maps packet identifier → sequence number.
type v5Conn struct {
	cli     *paho.Client
	nc      net.Conn
	sess    *ackSession // nil unless the client publishes at QoS ≥ 1
	onAck   func(uint64, ackResult)
	closing atomic.Bool
	lost    sync.Once
	acks    sync.WaitGroup // the acknowledgement reader
}

// ackSession is paho's in-memory session state with PUBLISH responses
// redirected to acks. The state sends on that channel while holding its own
// lock, so a blocked send would stall the whole client; acks has room for
// every publish the caller may have outstanding (clientOpts.inflight), so the
// send never blocks.
type ackSession struct {
	*state.State
	acks chan packets.ControlPacket

	mu   sync.Mutex
	seqs map[uint16]uint64 // packet identifier → sequence number, while in flight
}

func (s *ackSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	pub, ok := p.(*packets.Publish)
	if !ok {
		return s.State.AddToSession(ctx, p, resp)
	}
	// AddToSession assigns the packet identifier; paho writes the packet only
	// after it returns, so the mapping exists before the acknowledgement can.
	if err := s.State.AddToSession(ctx, p, s.acks); err != nil {
		return err
	}
	h, err := parseHeader(pub.Payload)
	if err != nil {
		return err // cannot happen: publishers always write a header
	}
	s.mu.Lock()
	s.seqs[pub.PacketID] = h.seq
	s.mu.Unlock()
	return nil
}

func connectV5(ctx context.Context, o clientOpts) (mqttConn, error) {
	nc, err := dial(ctx, o.url, o.readBuf)
	if err != nil {
		return nil, err
	}
	c := &v5Conn{nc: nc, onAck: o.onAck}
	cc := paho.ClientConfig{
		Conn: nc,
		OnClientError: func(err error) {
			c.reportLost(o.onLost, err)
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			c.reportLost(o.onLost, fmt.Errorf("server sent DISCONNECT with reason code 0x%02x %s", d.ReasonCode, reasonString(d)))
		},
	}
	if o.onMessage != nil {
		onMessage := o.onMessage
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				onMessage(pr.Packet.Payload)
				return true, nil
			},
		}
	} else {
		// Without a handler paho installs a StandardRouter; an explicit no-op is cheaper.
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(paho.PublishReceived) (bool, error) { return true, nil },
		}
	}
	if o.onAck != nil {
		c.sess = &ackSession{
			State: state.NewInMemory(),
			acks:  make(chan packets.ControlPacket, o.inflight),
			seqs:  make(map[uint16]uint64, o.inflight),
		}
		cc.Session = c.sess
	}
	c.cli = paho.NewClient(cc)

	receiveMax := o.receiveMax
	cp := &paho.Connect{
		ClientID:   o.id,
		KeepAlive:  uint16(o.cfg.KeepAlive.Seconds()),
		CleanStart: o.cfg.Clean,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &receiveMax},
	}
	if !o.cfg.Clean {
		expiry := uint32(300)
		cp.Properties.SessionExpiryInterval = &expiry
	}
	if o.cfg.Username != "" {
		cp.Username, cp.UsernameFlag = o.cfg.Username, true
	}
	if o.cfg.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(o.cfg.Password), true
	}
	ca, err := c.cli.Connect(ctx, cp) // closes nc on failure
	if err != nil {
		if ca != nil {
			err = fmt.Errorf("CONNACK reason code 0x%02x: %w", ca.ReasonCode, err)
		}
		if c.sess != nil {
			_ = c.sess.State.Close() // nothing was published, so nothing is sent on acks
		}
		return nil, err
	}
	if c.sess != nil {
		c.acks.Go(c.readAcks)
	}
	return c, nil
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil && d.Properties.ReasonString != "" {
		return "(" + d.Properties.ReasonString + ")"
	}
	return ""
}

// reportLost passes the first error to onLost, unless close started first
// (paho reports the end of every connection, including one we closed).
func (c *v5Conn) reportLost(onLost func(error), err error) {
	if c.closing.Load() || onLost == nil {
		return
	}
	c.lost.Do(func() { onLost(err) })
}

// readAcks turns acknowledgements into onAck calls; it ends when close closes
// the channel.
func (c *v5Conn) readAcks() {
	for cp := range c.sess.acks {
		c.sess.mu.Lock()
		seq, known := c.sess.seqs[cp.PacketID()]
		delete(c.sess.seqs, cp.PacketID())
		c.sess.mu.Unlock()
		res := ackLost // a zero ControlPacket means paho dropped it on shutdown
		switch p := cp.Content.(type) {
		case *packets.Puback:
			res = okIf(p.ReasonCode < 0x80)
		case *packets.Pubcomp:
			res = okIf(p.ReasonCode < 0x80)
		case *packets.Pubrec: // only delivered here when its reason code is a failure
			res = ackRejected
		}
		if !known {
			seq = 0
		}
		c.onAck(seq, res)
	}
}

func okIf(ok bool) ackResult {
	if ok {
		return ackOK
	}
	return ackRejected
}

func (c *v5Conn) publish(ctx context.Context, topic string, qos byte, payload []byte, _ uint64) error {
	_, err := c.cli.PublishWithOptions(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload},
		paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	if errors.Is(err, paho.ErrNetworkErrorAfterStored) {
		// Stored in the session but not written: it will never be acknowledged
		// on this connection, and the connection is gone anyway.
		return fmt.Errorf("write: %w", err)
	}
	return err
}

func (c *v5Conn) subscribe(ctx context.Context, filter string, qos byte) error {
	_, err := c.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	return err
}

func (c *v5Conn) close() error {
	c.closing.Store(true)
	setCloseDeadline(c.nc)
	// Disconnect writes DISCONNECT, closes the connection and waits for paho's
	// workers, so no handler runs after it returns.
	err := c.cli.Disconnect(&paho.Disconnect{ReasonCode: packets.DisconnectNormalDisconnection})
	if c.sess != nil {
		// We own the session (paho closes only sessions it created). Close
		// answers every publish still in flight with a zero packet on acks;
		// after it nothing sends on acks, so the channel can be closed.
		_ = c.sess.State.Close()
		close(c.sess.acks)
		c.acks.Wait()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("disconnect: %w", err)
	}
	return nil
}
