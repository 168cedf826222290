package listen

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/motemq/mote/frame"
)

// Conn wraps a client's network connection for mochi:
//
//   - Reads: the byte stream is cut into whole MQTT packets and each is
//     checked by a frame.Checker before mochi sees any of it. The packets
//     before a refused one are still delivered (and answered); then the
//     refused packet gets the spec's reply (CONNACK or DISCONNECT with a
//     reason code), nothing is written after it, Read fails and mochi
//     closes the client. Before CONNECT, a first byte that is not CONNECT's
//     is refused at once. mochi's decoder never sees a malformed packet
//     (it panics on some: upstream #501).
//   - Writes: every write has a deadline; a client that does not read is
//     disconnected instead of blocking publishers (mochi holds the client's
//     lock while it writes). Between Cork and Uncork, writes are gathered
//     and sent in one system call.
//   - SetDeadline from mochi (its keepalive) only sets the read deadline.
//   - AwaitWritten lets others follow the writer's progress
//     (the QoS 0 pacer waits for a subscriber to make room); the write
//     path pays an atomic add and a load for it.
//   - HoldWrites lets the next writes wait for something (a store commit)
//     without blocking the writer: they are queued in order and sent by a
//     short-lived goroutine once it happened.
//
// An idle connection holds no buffer of its own: reads go straight into
// mochi's buffer and only a partial packet is kept back.
type Conn struct {
	net.Conn
	chk          *frame.Checker
	maxSize      uint32
	writeTimeout time.Duration
	remote       net.Addr
	stats        *Stats
	log          *slog.Logger
	onClose      func()

	// read side (mochi's read goroutine only)
	buf   []byte // kept-back bytes: [rpos:ready) checked, [ready:len) partial
	rpos  int
	ready int
	rerr  error
	reply []byte // for rerr: sent when rerr reaches mochi, after the packets before it

	// write side
	wmu      sync.Mutex
	corked   int
	wbuf     []byte
	werr     error
	held     []heldWrite // writes waiting behind a hold, in order (see HoldWrites)
	flushing bool        // the goroutine sending held writes runs

	// progress of the write side, for AwaitWritten
	written  atomic.Uint64 // bytes accepted by Write (sent, gathered while corked or queued behind a hold)
	waiters  atomic.Int32  // AwaitWritten calls waiting
	pmu      sync.Mutex
	progress chan struct{} // closed by the next write while someone waits
	stallAt  atomic.Uint64 // written+1 when a wait saw no progress at all

	closed atomic.Bool
}

// Stats are counters shared by the connections of a broker.
type Stats struct {
	Accepted     atomic.Uint64
	Open         atomic.Int64
	Refused      [256]atomic.Uint64 // packets refused, by MQTT 5 reason code
	SlowClosed   atomic.Uint64      // connections closed because a write timed out
	BytesRead    atomic.Uint64
	BytesWritten atomic.Uint64
}

// ConnOptions configures wrapped connections.
type ConnOptions struct {
	Limits         frame.Limits
	WriteTimeout   time.Duration // 0: no write deadline
	ConnectTimeout time.Duration // time allowed from accept to a complete CONNECT
	Stats          *Stats
	Log            *slog.Logger
}

// Wrap returns c wrapped for mochi. remote overrides c.RemoteAddr (a
// client address forwarded by a trusted proxy); nil keeps it.
func Wrap(c net.Conn, o ConnOptions, remote net.Addr) *Conn {
	if o.Stats == nil {
		o.Stats = new(Stats)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	w := &Conn{
		Conn:         c,
		chk:          frame.NewChecker(o.Limits),
		maxSize:      o.Limits.MaxPacketSize,
		writeTimeout: o.WriteTimeout,
		remote:       remote,
		stats:        o.Stats,
		log:          o.Log,
	}
	o.Stats.Accepted.Add(1)
	o.Stats.Open.Add(1)
	if o.ConnectTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(o.ConnectTimeout))
	}
	return w
}

// RemoteAddr is the client's address (as forwarded by a trusted proxy).
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// TLSState returns the TLS state for a TLS connection (handshake done), or nil.
func (c *Conn) TLSState() *tls.ConnectionState {
	type stater interface{ ConnectionState() tls.ConnectionState }
	if t, ok := c.Conn.(stater); ok {
		st := t.ConnectionState()
		if st.HandshakeComplete {
			return &st
		}
	}
	return nil
}

// ProtocolVersion is the MQTT version of the accepted CONNECT, or 0.
func (c *Conn) ProtocolVersion() byte { return c.chk.Version() }

const minRead = 512

// Read returns bytes of whole, checked packets.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if c.rpos < c.ready {
			n := copy(p, c.buf[c.rpos:c.ready])
			c.rpos += n
			c.compact()
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.fail()
		}
		if len(c.buf) == 0 {
			// Nothing kept back: read straight into mochi's buffer.
			n, err := c.Conn.Read(p)
			if n > 0 {
				c.stats.BytesRead.Add(uint64(n))
				k, cerr := c.scan(p[:n])
				if k < n && cerr == nil {
					c.buf = append(getBuf(n-k), p[k:n]...)
				}
				if cerr != nil {
					c.rerr = cerr
				}
				if k > 0 {
					return k, nil
				}
				if cerr != nil {
					return 0, c.fail()
				}
				continue
			}
			if err != nil {
				return 0, err
			}
			continue
		}
		// A partial packet is kept back: read more after it.
		need := minRead
		if total, complete, _ := frame.Header(c.buf[c.ready:], c.maxSize); complete && total > len(c.buf)-c.ready {
			need = total - (len(c.buf) - c.ready)
		}
		c.grow(need)
		n, err := c.Conn.Read(c.buf[len(c.buf):cap(c.buf)])
		if n > 0 {
			c.stats.BytesRead.Add(uint64(n))
			end := len(c.buf) + n
			c.buf = c.buf[:end]
			k, cerr := c.scan(c.buf[c.ready:])
			c.ready += k
			if cerr != nil {
				c.rerr = cerr
			}
			continue
		}
		if err != nil {
			return 0, err
		}
	}
}

// AwaitConnect reads until the connection's first packet, which must be a
// CONNECT, has arrived whole and been checked, and keeps it (and whatever
// arrived with it) for Read. On a refusal it sends the reply and returns
// the refusal; on a read error (the connect timeout's deadline, a close)
// it returns that. The caller closes the connection on any error.
//
// The listeners call it before handing a connection to mochi, so a socket
// that sends nothing, drips a CONNECT a byte at a time or announces a huge
// one costs one goroutine and this wrapper until the connect timeout, and
// no mochi client (two goroutines, its buffers and maps): a connect flood
// or a slowloris of thousands of sockets stays cheap. Until the first byte
// arrives no buffer is held at all.
func (c *Conn) AwaitConnect() error {
	var first [1]byte
	for {
		n, err := c.Conn.Read(first[:])
		if n == 1 {
			break
		}
		if err != nil {
			return err
		}
	}
	c.stats.BytesRead.Add(1)
	c.buf = append(getBuf(minRead), first[0])
	for {
		k, cerr := c.scan(c.buf[c.ready:])
		c.ready += k
		if cerr != nil {
			c.rerr = cerr
		}
		if c.ready > 0 {
			// The CONNECT is whole; a refusal of a packet after it waits
			// until mochi has read (and answered) the CONNECT.
			return nil
		}
		if c.rerr != nil {
			return c.fail()
		}
		need := minRead
		if total, complete, _ := frame.Header(c.buf, c.maxSize); complete && total > len(c.buf) {
			need = total - len(c.buf)
		}
		c.grow(need)
		n, err := c.Conn.Read(c.buf[len(c.buf):cap(c.buf)])
		if n > 0 {
			c.stats.BytesRead.Add(uint64(n))
			c.buf = c.buf[:len(c.buf)+n]
			continue
		}
		if err != nil {
			return err
		}
	}
}

// scan checks the whole packets at the start of b and returns how many bytes
// they span. The error is the refusal of the packet after them, if any.
func (c *Conn) scan(b []byte) (int, error) {
	off := 0
	for off < len(b) {
		if c.chk.Version() == 0 && b[off]>>4 != 1 {
			// Not a CONNECT: no need to wait for (and buffer) the rest.
			err := &frame.Error{Code: frame.CodeProtocolError, Type: b[off] >> 4, Reason: "first packet must be CONNECT"}
			c.refuse(err)
			return off, err
		}
		total, complete, err := frame.Header(b[off:], c.maxSize)
		if err == nil && (!complete || total > len(b)-off) {
			return off, nil
		}
		if err == nil {
			err = c.chk.Check(b[off : off+total])
		}
		if err != nil {
			c.refuse(err)
			return off, err
		}
		off += total
	}
	return off, nil
}

// refuse counts and logs a refusal and keeps the reply the spec asks for;
// fail sends it once mochi has read the packets before the refused one
// (and so answered them: CONNACK comes before a DISCONNECT, a PUBACK
// never after one).
func (c *Conn) refuse(err error) {
	var fe *frame.Error
	if errors.As(err, &fe) {
		c.stats.Refused[fe.Code].Add(1)
	}
	c.log.Info("refused packet", "remote", c.RemoteAddr().String(), "error", err)
	c.reply = c.chk.Reply(err)
}

// fail sends the refusal's reply, if any, and returns the read error.
// Nothing is written after the reply [MQTT-3.14.4-1].
func (c *Conn) fail() error {
	if reply := c.reply; reply != nil {
		c.reply = nil
		c.wmu.Lock()
		if c.werr == nil {
			if c.flushLocked() == nil {
				_, _ = c.writeLocked(reply)
			}
			if c.werr == nil {
				c.werr = errRefused
			}
		}
		c.wmu.Unlock()
	}
	return c.rerr
}

// errRefused fails writes after the reply to a refused packet.
var errRefused = errors.New("listen: connection closing after a refused packet")

func (c *Conn) grow(n int) {
	if cap(c.buf)-len(c.buf) >= n {
		return
	}
	nb := getBuf(len(c.buf) + n)
	nb = append(nb, c.buf...)
	putBuf(c.buf)
	c.buf = nb
}

// compact drops delivered bytes and gives the buffer back when empty.
func (c *Conn) compact() {
	if c.rpos < c.ready {
		return
	}
	if c.ready == len(c.buf) {
		putBuf(c.buf)
		c.buf, c.rpos, c.ready = nil, 0, 0
		return
	}
	rest := copy(c.buf, c.buf[c.rpos:])
	c.buf = c.buf[:rest]
	c.ready -= c.rpos
	c.rpos = 0
}

// Write writes b with a deadline, gathers it while corked, or queues it
// behind a hold.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.write(b)
	if n > 0 {
		// The hot path: an add and a load; only a waiter makes it signal.
		c.written.Add(uint64(n))
		if c.waiters.Load() > 0 {
			c.wake()
		}
	}
	return n, err
}

func (c *Conn) write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.corked > 0 {
		c.wbuf = append(c.wbuf, b...)
		if len(c.wbuf) >= 64<<10 {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		return len(b), nil
	}
	return c.emitLocked(b)
}

// heldWrite is a hold (until is set) or bytes to send after the holds
// before them.
type heldWrite struct {
	until <-chan struct{}
	check func() error
	data  []byte
}

// maxHeld bounds the bytes queued behind holds; a writer beyond it waits
// (as it would for a slow socket).
const maxHeld = 1 << 20

// HoldWrites makes every later write wait until until is closed; check
// then says whether to go on: an error closes the connection instead, so
// nothing written after the hold reaches the client. Writes return at once
// (queued in order); the queued bytes are sent by a goroutine that lives
// while something is held. The broker acknowledges a QoS 1 PUBLISH this
// way once the store has it, without stopping mochi from reading and
// handling the client's next packets meanwhile.
func (c *Conn) HoldWrites(until <-chan struct{}, check func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	if len(c.held) == 0 {
		select {
		case <-until:
			if err := check(); err == nil {
				return // nothing to wait for
			}
		default:
		}
	}
	c.held = append(c.held, heldWrite{until: until, check: check})
	if !c.flushing {
		c.flushing = true
		go c.sendHeld()
	}
}

// emitLocked writes b now, or queues it behind the holds.
func (c *Conn) emitLocked(b []byte) (int, error) {
	if len(c.held) == 0 {
		return c.writeLocked(b)
	}
	if n := len(c.held); c.held[n-1].until == nil && len(c.held[n-1].data) < 64<<10 {
		c.held[n-1].data = append(c.held[n-1].data, b...)
	} else {
		c.held = append(c.held, heldWrite{data: append([]byte(nil), b...)})
	}
	// Bound memory: past maxHeld, wait (without the lock) for the queue
	// to shrink, as a write to a full socket would.
	for c.heldBytes() > maxHeld && c.werr == nil && !c.closed.Load() {
		c.wmu.Unlock()
		time.Sleep(time.Millisecond)
		c.wmu.Lock()
	}
	if c.werr != nil {
		return 0, c.werr
	}
	return len(b), nil
}

func (c *Conn) heldBytes() int {
	n := 0
	for _, h := range c.held {
		n += len(h.data)
	}
	return n
}

// sendHeld sends the held writes in order, waiting for each hold, until
// the queue is empty or the connection failed.
func (c *Conn) sendHeld() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(c.held) > 0 && c.werr == nil {
		h := c.held[0]
		if h.until != nil {
			c.wmu.Unlock()
			<-h.until // a store commit: it always ends, also at shutdown
			err := h.check()
			c.wmu.Lock()
			if err != nil && c.werr == nil {
				c.werr = err
				c.log.Error("closing client: what it sent could not be stored", "remote", c.RemoteAddr().String(), "error", err)
				_ = c.Close()
			}
		} else if _, err := c.writeLocked(h.data); err != nil {
			break
		}
		c.held[0] = heldWrite{}
		c.held = c.held[1:]
	}
	c.held = nil
	c.flushing = false
}

func (c *Conn) writeLocked(b []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	if c.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	n, err := c.Conn.Write(b)
	c.stats.BytesWritten.Add(uint64(n))
	if err != nil {
		c.werr = err
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.stats.SlowClosed.Add(1)
			c.log.Warn("closing client that does not read", "remote", c.RemoteAddr().String(), "write_timeout", c.writeTimeout)
		}
		_ = c.Close()
	}
	return n, err
}

func (c *Conn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.emitLocked(c.wbuf)
	if cap(c.wbuf) > 64<<10 {
		c.wbuf = nil
	} else {
		c.wbuf = c.wbuf[:0]
	}
	return err
}

// Cork starts gathering writes.
func (c *Conn) Cork() {
	c.wmu.Lock()
	c.corked++
	c.wmu.Unlock()
}

// Uncork sends what was gathered since the matching Cork.
func (c *Conn) Uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.corked > 0 {
		c.corked--
	}
	if c.corked > 0 {
		return nil
	}
	err := c.flushLocked()
	if len(c.wbuf) == 0 {
		c.wbuf = nil
	}
	if err == nil {
		err = c.werr
	}
	return err
}

// SetDeadline sets only the read deadline: mochi uses it for keepalive,
// and write deadlines are per write.
func (c *Conn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored: every write has its own deadline.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// Close closes the connection once.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.stats.Open.Add(-1)
	c.wake()
	err := c.Conn.Close()
	if c.onClose != nil {
		c.onClose()
	}
	return err
}

// AwaitWritten waits until Write has accepted room more bytes, the
// connection is closed or d has passed, and reports whether it waited at
// all and whether the room was made (closed counts as made: nobody needs to
// wait for it any more).
//
// A wait that ends by d with no byte written at all, while the socket's
// send queue did not shrink either (the peer read nothing; Linux tells,
// elsewhere no write means stalled), marks the connection stalled: later
// calls return at once (waited false) until it writes again. So a peer
// that never reads costs its waiters d once, not d per call.
//
// The writer signals only while someone waits (Write checks a counter),
// and wakes every waiter, each of which checks its own target again.
func (c *Conn) AwaitWritten(room uint64, d time.Duration) (waited, made bool) {
	start := c.written.Load()
	if c.closed.Load() {
		return false, true
	}
	if c.stallAt.Load() == start+1 {
		return false, false
	}
	target := start + room
	queued, canTell := sendQueued(c.Conn)
	c.waiters.Add(1)
	defer c.waiters.Add(-1)
	var timer *time.Timer
	for {
		// Write adds, then loads waiters; here waiters was raised before
		// written is loaded under pmu, so either this load sees the write
		// or the writer's wake (which takes pmu) sees the channel.
		c.pmu.Lock()
		if c.written.Load() >= target || c.closed.Load() {
			c.pmu.Unlock()
			return true, true
		}
		if c.progress == nil {
			c.progress = make(chan struct{})
		}
		ch := c.progress
		c.pmu.Unlock()
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			w := c.written.Load()
			if w >= target || c.closed.Load() {
				return true, true
			}
			if w == start {
				// Write is blocked on a full socket; the kernel wakes it
				// only once a third of the send buffer has drained, which
				// for a slow reader can take far longer than d. A send
				// queue that shrank means the peer reads: not stalled.
				if q, ok := sendQueued(c.Conn); !canTell || !ok || q >= queued {
					c.stallAt.Store(w + 1)
				}
			}
			return true, false
		}
	}
}

// wake releases the goroutines in AwaitWritten.
func (c *Conn) wake() {
	c.pmu.Lock()
	if c.progress != nil {
		close(c.progress)
		c.progress = nil
	}
	c.pmu.Unlock()
}

var bufPool = sync.Pool{New: func() any { return make([]byte, 0, 4096) }}

func getBuf(n int) []byte {
	if n <= 4096 {
		return bufPool.Get().([]byte)[:0]
	}
	return make([]byte, 0, n)
}

func putBuf(b []byte) {
	if cap(b) == 4096 {
		bufPool.Put(b[:0]) //nolint:staticcheck // a slice header allocation per put is cheaper than the buffer
	}
}
