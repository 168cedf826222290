package listen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// WSOptions configures a WebSocket listener.
type WSOptions struct {
	Path string // default /mqtt
	// AllowedOrigins lists origins (scheme://host[:port]) a browser page may
	// connect from, "*" for any. A request without Origin (not a browser) and
	// a same-origin request are always allowed.
	AllowedOrigins []string
	// TrustedProxies are addresses or CIDR prefixes whose X-Forwarded-For
	// header names the real client.
	TrustedProxies []netip.Prefix
}

// WS is an MQTT-over-WebSocket listener (binary frames, subprotocol "mqtt").
// It binds in Init so that port 0 can be read back.
type WS struct {
	id      string
	address string
	tls     *tls.Config
	opts    WSOptions
	common  Common
	log     *slog.Logger
	ln      net.Listener
	srv     *http.Server
	up      websocket.Upgrader
	end     atomic.Bool
	track   tracker
	serveWG sync.WaitGroup
	pages   []string // ports whose pages on this host count as same-origin (AllowPagesOnPort)

	establish listeners.EstablishFn
}

var _ listeners.Listener = (*WS)(nil)

// NewWS returns a WebSocket listener; tlsConfig nil means plain ws://.
func NewWS(id, address string, tlsConfig *tls.Config, opts WSOptions, common Common) *WS {
	if opts.Path == "" {
		opts.Path = "/mqtt"
	}
	l := &WS{id: id, address: address, tls: tlsConfig, opts: opts, common: common, track: tracker{conns: map[*Conn]struct{}{}}}
	l.up = websocket.Upgrader{
		Subprotocols:    []string{"mqtt", "mqttv3.1"},
		CheckOrigin:     l.checkOrigin,
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
	}
	return l
}

// ID is the listener's id.
func (l *WS) ID() string { return l.id }

// Address is the bound address once Init succeeded.
func (l *WS) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Protocol is "ws" or "wss".
func (l *WS) Protocol() string {
	if l.tls != nil {
		return "wss"
	}
	return "ws"
}

// originPort is the port of an origin, explicit or the scheme's default.
func originPort(u *url.URL) string {
	switch {
	case u.Port() != "":
		return u.Port()
	case u.Scheme == "https":
		return "443"
	}
	return "80"
}

// AllowPagesOnPort makes a page served by this host on port (the broker's
// own HTTP listener, which serves the console) count as same-origin. Call
// it before Serve.
func (l *WS) AllowPagesOnPort(port string) { l.pages = append(l.pages, port) }

// Init binds the address.
func (l *WS) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return bindError(l.id, l.address, err)
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc(l.opts.Path, l.handle)
	l.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return nil
}

// Serve accepts connections until Close.
func (l *WS) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	l.serveWG.Add(1)
	defer l.serveWG.Done()
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener stopped", "listener", l.id, "error", err)
	}
}

func (l *WS) handle(w http.ResponseWriter, r *http.Request) {
	if l.end.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	remote := l.clientAddr(r)
	ws, err := l.up.Upgrade(w, r, nil)
	if err != nil {
		l.log.Debug("websocket upgrade refused", "listener", l.id, "remote", r.RemoteAddr, "error", err)
		return
	}
	serveConn(l.id, &wsConn{Conn: ws}, remote, l.common, &l.track, l.log, l.establish)
}

// checkOrigin allows non-browser clients (no Origin), same-origin pages and
// the configured origins. gorilla's default would refuse cross-origin pages;
// mochi's listener accepts every origin, which lets any web page a user
// visits talk to the broker with the user's network position.
func (l *WS) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if host, _, err := net.SplitHostPort(r.Host); err == nil && strings.EqualFold(u.Hostname(), host) && slices.Contains(l.pages, originPort(u)) {
		return true
	}
	for _, a := range l.opts.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	l.log.Info("websocket origin refused", "listener", l.id, "origin", origin,
		"hint", "add it to listeners.ws.allowed_origins")
	return false
}

// clientAddr is the client's address: the peer, or — when the peer is a
// trusted proxy — the right-most X-Forwarded-For address that is not itself
// a trusted proxy. nil means "the peer".
func (l *WS) clientAddr(r *http.Request) net.Addr {
	if len(l.opts.TrustedProxies) == 0 {
		return nil
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !l.trusted(peer.Addr()) {
		return nil
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return nil
		}
		if !l.trusted(a) {
			return net.TCPAddrFromAddrPort(netip.AddrPortFrom(a.Unmap(), 0))
		}
	}
	return nil
}

func (l *WS) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Close stops accepting, lets mochi disconnect its clients, then closes
// every connection still open. http.Server.Shutdown does not track
// hijacked (WebSocket) connections, so the listener does.
func (l *WS) Close(closeClients listeners.CloseFn) {
	if !l.end.CompareAndSwap(false, true) {
		return
	}
	if l.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = l.srv.Shutdown(ctx)
		cancel()
	}
	l.serveWG.Wait()
	closeClients(l.id)
	l.track.closeAll()
	l.track.wg.Wait()
}

// wsConn presents a WebSocket as a byte stream: reads run across binary
// messages, each write is one binary message.
type wsConn struct {
	*websocket.Conn
	r  io.Reader
	wm sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, fmt.Errorf("websocket: %w: MQTT needs binary frames", errTextFrame)
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

var errTextFrame = errors.New("text frame")

func (c *wsConn) Write(p []byte) (int, error) {
	c.wm.Lock()
	defer c.wm.Unlock()
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *wsConn) Close() error { return c.Conn.Close() }
