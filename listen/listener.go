package listen

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// ErrAddressInUse wraps a bind failure on an address another process holds.
var ErrAddressInUse = errors.New("address already in use")

// Gate decides whether a new connection may proceed (connection limits,
// per-address rate limits). It returns a non-nil error to refuse it.
type Gate func(remote net.Addr) error

// Common holds what every listener of a broker shares.
type Common struct {
	Conn ConnOptions
	Gate Gate // optional
}

// tracker remembers a listener's open connections so Close can close those
// mochi does not know yet (still before CONNECT) as well.
type tracker struct {
	mu    sync.Mutex
	conns map[*Conn]struct{}
	wg    sync.WaitGroup // connection goroutines
}

func (t *tracker) add(c *Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		return false // closed
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1) // released by the connection goroutine (serveConn)
	c.onClose = func() { t.remove(c) }
	return true
}

func (t *tracker) remove(c *Conn) {
	t.mu.Lock()
	if t.conns != nil {
		delete(t.conns, c)
	}
	t.mu.Unlock()
}

func (t *tracker) closeAll() {
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// TCP is an MQTT listener on TCP, optionally with TLS. It binds in Init, so
// an address with port 0 can be read back from Address.
type TCP struct {
	id      string
	address string
	tls     *tls.Config
	common  Common
	log     *slog.Logger
	ln      net.Listener
	end     atomic.Bool
	track   tracker
}

var _ listeners.Listener = (*TCP)(nil)

// NewTCP returns a TCP listener; tlsConfig nil means plain TCP.
func NewTCP(id, address string, tlsConfig *tls.Config, common Common) *TCP {
	return &TCP{id: id, address: address, tls: tlsConfig, common: common, track: tracker{conns: map[*Conn]struct{}{}}}
}

// ID is the listener's id.
func (l *TCP) ID() string { return l.id }

// Address is the bound address once Init succeeded.
func (l *TCP) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Protocol is "tcp" or "tls".
func (l *TCP) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

// Init binds the address.
func (l *TCP) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return bindError(l.id, l.address, err)
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	return nil
}

// bindError names the listener and address of a failed bind.
func bindError(id, address string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listener %s: %s: %w (another process listens there; choose another address)", id, address, ErrAddressInUse)
	}
	return fmt.Errorf("listener %s: listen on %s: %w", id, address, err)
}

// Serve accepts connections until Close.
func (l *TCP) Serve(establish listeners.EstablishFn) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.end.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("accept failed", "listener", l.id, "error", err)
			continue
		}
		serveConn(l.id, c, nil, l.common, &l.track, l.log, establish)
	}
}

// serveConn gates, wraps and hands a new connection to mochi.
func serveConn(id string, c net.Conn, remote net.Addr, common Common, track *tracker, log *slog.Logger, establish listeners.EstablishFn) {
	addr := remote
	if addr == nil {
		addr = c.RemoteAddr()
	}
	if common.Gate != nil {
		if err := common.Gate(addr); err != nil {
			log.Debug("connection refused", "listener", id, "remote", addr.String(), "error", err)
			_ = c.Close()
			return
		}
	}
	w := Wrap(c, common.Conn, remote)
	if !track.add(w) {
		_ = w.Close()
		return
	}
	go func() {
		defer track.wg.Done()
		// mochi gets the connection once its CONNECT is whole and checked:
		// until then it costs this goroutine and no mochi client.
		if err := w.AwaitConnect(); err != nil {
			log.Debug("connection closed before CONNECT", "listener", id, "remote", addr.String(), "error", err)
			_ = w.Close()
			return
		}
		if err := establish(id, w); err != nil {
			log.Debug("client connection ended", "listener", id, "remote", addr.String(), "error", err)
		}
		_ = w.Close()
	}()
}

// Close stops accepting, lets mochi disconnect its clients, then closes
// every connection still open (those that never completed CONNECT).
func (l *TCP) Close(closeClients listeners.CloseFn) {
	if !l.end.CompareAndSwap(false, true) {
		return
	}
	if l.ln != nil {
		_ = l.ln.Close()
	}
	closeClients(l.id)
	l.track.closeAll()
	l.track.wg.Wait()
}
