package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/motemq/mote/auth"
	"github.com/motemq/mote/bridge"
	httpbridge "github.com/motemq/mote/bridge/http"
	"github.com/motemq/mote/frame"
	"github.com/motemq/mote/guard"
	"github.com/motemq/mote/internal/retaingate"
	"github.com/motemq/mote/listen"
	"github.com/motemq/mote/persistence"
	"github.com/motemq/mote/queue"
	"github.com/motemq/mote/rules"
)

// Version is the broker version, set at build time with
// -ldflags "-X github.com/motemq/mote/broker.Version=v1.2.3".
var Version = "dev"

// Listener ids, as used in logs and by Addr.
const (
	ListenerMQTT  = "mqtt"
	ListenerMQTTS = "mqtts"
	ListenerWS    = "ws"
	ListenerWSS   = "wss"
	ListenerHTTP  = "http"
)

// Broker is a running Mote: the mochi server, its hooks and listeners, the
// store and the HTTP endpoint.
type Broker struct {
	cfg     *Config
	log     *slog.Logger
	server  *mqtt.Server
	store   *persistence.Store
	persist *persistence.Hook
	guard   *guard.Hook
	pacer   *guard.Pacer
	auth    *auth.Hook
	queues  *queue.Manager
	bridges *bridge.Hook
	rules   *rules.Engine
	conns   *listen.Stats
	inbound []inbound // bridges' inbound sides, started with the listeners
	closers []func()  // run after the hooks stopped (bridge connections)

	httpLn  net.Listener
	httpSrv *http.Server

	ready    atomic.Bool
	fatal    chan error
	stopOnce sync.Once
	stopErr  error
	wg       sync.WaitGroup
	restored persistence.RestoreStats
}

// New builds a broker from cfg: it opens the store, binds every listener
// (so a port in use fails here, naming the listener) and restores the
// stored state. Run starts serving.
func New(cfg *Config, log *slog.Logger) (*Broker, error) {
	b := &Broker{cfg: cfg, log: log, conns: new(listen.Stats), fatal: make(chan error, 1)}
	store, err := persistence.Open(persistence.Config{
		Dir:            cfg.DataDir,
		Fsync:          cfg.Fsync,
		ShrinkMinSize:  int64(cfg.Persistence.ShrinkMinSize),
		ShrinkRatio:    cfg.Persistence.ShrinkRatio,
		ShrinkInterval: cfg.Persistence.ShrinkInterval.Std(),
	}, log.With("component", "store"))
	if err != nil {
		return nil, err
	}
	b.store = store
	store.OnFatal(func(err error) {
		select {
		case b.fatal <- err:
		default:
		}
	})
	if err := b.build(); err != nil {
		b.closeEarly()
		return nil, err
	}
	return b, nil
}

func (b *Broker) build() error {
	cfg := b.cfg
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MQTT.MaxPacketSize)
	caps.ReceiveMaximum = uint16(cfg.MQTT.ReceiveMaximum)
	caps.TopicAliasMaximum = uint16(cfg.MQTT.TopicAliasMaximum)
	caps.MaximumSessionExpiryInterval = uint32(cfg.MQTT.MaxSessionExpiry.Std() / time.Second)
	caps.MaximumMessageExpiryInterval = int64(cfg.MQTT.MaxMessageExpiry.Std() / time.Second)
	caps.MaximumClientWritesPending = int32(cfg.MQTT.WriteQueue)
	caps.MaximumInflight = 65535 // sessions bound themselves (max_inflight, max_queued_messages)
	if cfg.MQTT.MaxClients > 0 {
		caps.MaximumClients = int64(cfg.MQTT.MaxClients)
	}
	b.server = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 b.log,
		SysTopicResendInterval: int64(cfg.MQTT.SysInterval.Std() / time.Second),
		InlineClient:           true,
		// Small per-client buffers keep idle connections cheap; mochi
		// flushes at this size while it has more queued.
		ClientNetReadBufferSize:  1024,
		ClientNetWriteBufferSize: 2048,
	})

	// mochi copies a QoS 1/2 PUBLISH's properties into its PUBACK/PUBREC
	// and then sends its "granted QoS" code (0x01, 0x02) with them: not a
	// valid PUBACK/PUBREC reason code [MQTT-3.4.2-1], and MQTT.js drops the
	// connection on it. Without inherited properties a successful ack
	// carries no reason code at all.
	b.server.Options.Capabilities.Compatibilities.NoInheritedPropertiesOnAck = true

	b.guard = guard.New(b.server, guard.Options{
		MaxKeepalive:  uint16(cfg.MQTT.MaxKeepalive.Std() / time.Second),
		MaxPacketSize: uint32(cfg.MQTT.MaxPacketSize),
	})
	ac, err := cfg.authConfig()
	if err != nil {
		return err
	}
	b.auth, err = auth.New(ac, b.server, b.log.With("hook", "auth"))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	b.persist = persistence.NewHook(b.store, b.server, persistence.Options{
		MaxInflight:  cfg.MQTT.MaxInflight,
		MaxQueued:    cfg.MQTT.MaxQueuedMessages,
		OnEvent:      b.onEvent,
		CanDeliver:   b.auth.CanDeliver,
		Backpressure: cfg.MQTT.Backpressure.Std(),
	})
	b.queues = queue.New(b.server, b.store, b.persist, cfg.queueSettings(), queue.Defaults(), b.log.With("hook", "queue"))
	b.bridges = bridge.NewHook(b.server, b.persist, b.log.With("hook", "bridge"))
	b.rules = rules.New(rules.Options{
		Server:  b.server,
		Store:   b.store,
		Persist: b.persist,
		Bridges: b.bridgeLookup,
		Log:     b.log.With("hook", "rules"),
		Events:  cfg.Rules.EventsEnabled(),
	})
	b.bridges.MaxPayload = int(cfg.MQTT.MaxPacketSize)
	for i, bc := range cfg.Bridges {
		if err := b.addBridge(bc); err != nil {
			return fmt.Errorf("config: bridges[%d]: %w", i, err)
		}
	}
	// mochi reads its retained index unlocked; the gate keeps those reads
	// apart from the writes (internal/retaingate).
	gate, err := retaingate.New(b.server, retaingate.Options{CanDeliver: b.auth.CanDeliver, Log: b.log.With("hook", "retain-gate")})
	if err != nil {
		return err
	}
	b.pacer = guard.NewPacer(b.server, guard.PaceOptions{Wait: cfg.MQTT.QoS0Backpressure.Std()})
	// Order matters for OnPublish: features first, the barrier (which waits
	// for the durability point) last.
	for _, h := range []mqtt.Hook{
		gate.Head(), // before all: it releases the gate once mochi is done (and refuses nothing)
		b.auth,      // first: a refused client or publish reaches no other hook
		b.guard,
		b.pacer,
		b.rules, // before persistence: a dropped message is not stored for anyone
		b.persist,
		b.queues,  // after persistence (its appends join the publish's durability point)
		b.bridges, // the same for the bridges' outboxes
		persistence.NewBarrier(b.persist),
		gate.Tail(), // after all: it takes the gate for the packet mochi goes on with
	} {
		if err := b.server.AddHook(h, nil); err != nil {
			return fmt.Errorf("broker: add hook %s: %w", h.ID(), err)
		}
	}

	if err := b.addListeners(); err != nil {
		return err
	}
	st, err := b.persist.Restore()
	if err != nil {
		return err
	}
	b.restored = st
	if err := b.queues.Restore(); err != nil {
		return err
	}
	b.bridges.Start()
	if err := b.rules.Load(&cfg.Rules); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := b.rules.Start(); err != nil {
		return err
	}
	b.log.Info("store restored", "file", b.store.Path(), "fsync", string(cfg.Fsync),
		"sessions", st.Sessions, "subscriptions", st.Subscriptions, "queued", st.Queued,
		"retained", st.Retained, "replayed", st.Replayed, "expired_sessions", st.Expired)
	return nil
}

func (b *Broker) addListeners() error {
	cfg := b.cfg
	common := listen.Common{Conn: listen.ConnOptions{
		Limits: frame.Limits{
			MaxPacketSize:     uint32(cfg.MQTT.MaxPacketSize),
			TopicAliasMaximum: uint16(cfg.MQTT.TopicAliasMaximum),
			MaxUserProperties: cfg.MQTT.MaxUserProperties,
			MaxTopicLength:    cfg.MQTT.MaxTopicLength,
			MaxTopicLevels:    cfg.MQTT.MaxTopicLevels,
		},
		WriteTimeout:   cfg.MQTT.WriteTimeout.Std(),
		ConnectTimeout: cfg.MQTT.ConnectTimeout.Std(),
		Stats:          b.conns,
		Log:            b.log,
	}}
	var ls []listeners.Listener
	if a := cfg.Listeners.MQTT.Address; a != "" {
		ls = append(ls, listen.NewTCP(ListenerMQTT, a, nil, common))
	}
	if a := cfg.Listeners.MQTTS.Address; a != "" {
		t, err := cfg.Listeners.MQTTS.tlsConfig("listeners.mqtts")
		if err != nil {
			return err
		}
		ls = append(ls, listen.NewTCP(ListenerMQTTS, a, t, common))
	}
	for _, w := range []struct {
		id  string
		key string
		l   WSListener
	}{{ListenerWS, "listeners.ws", cfg.Listeners.WS}, {ListenerWSS, "listeners.wss", cfg.Listeners.WSS}} {
		if w.l.Address == "" {
			continue
		}
		var t *tls.Config
		if w.id == ListenerWSS {
			c, err := w.l.tlsConfig(w.key)
			if err != nil {
				return err
			}
			t = c
		}
		opts := listen.WSOptions{Path: w.l.Path, AllowedOrigins: w.l.AllowedOrigins}
		for _, p := range w.l.TrustedProxies {
			pr, err := parsePrefix(p)
			if err != nil {
				return fmt.Errorf("config: %s.trusted_proxies: %q: %v", w.key, p, err)
			}
			opts.TrustedProxies = append(opts.TrustedProxies, pr)
		}
		ls = append(ls, listen.NewWS(w.id, w.l.Address, t, opts, common))
	}
	for _, l := range ls {
		if err := b.server.AddListener(l); err != nil {
			return err
		}
	}
	if a := cfg.Listeners.HTTP.Address; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("listener %s: %s: %w (another process listens there; choose another address)", ListenerHTTP, a, listen.ErrAddressInUse)
			}
			return fmt.Errorf("listener %s: listen on %s: %w", ListenerHTTP, a, err)
		}
		b.httpLn = ln
		b.httpSrv = &http.Server{Handler: b.routes(), ReadHeaderTimeout: 10 * time.Second}
		b.log.Info("attached listener", "id", ListenerHTTP, "protocol", "http", "address", ln.Addr().String())
	}
	return nil
}

// onEvent receives events from the session engine.
func (b *Broker) onEvent(e persistence.Event) {
	b.log.Debug("event", "kind", e.Kind, "client", e.Client, "dropped", e.Dropped)
	if e.Kind == "queue_overflow" && b.rules != nil {
		b.rules.Emit(rules.EventMessageDropped, map[string]any{
			"client_id": e.Client, "topic": e.Topic, "reason": "session queue full",
			"queued": e.Queued, "limit": e.Limit, "dropped_total": e.Dropped,
		})
	}
}

// Server is the underlying mochi server.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Store is the broker's store.
func (b *Broker) Store() *persistence.Store { return b.store }

// Persistence is the storage hook.
func (b *Broker) Persistence() *persistence.Hook { return b.persist }

// ConnStats are the listeners' connection counters.
func (b *Broker) ConnStats() *listen.Stats { return b.conns }

// Bridges is the outbound bridge hook (each bridge's Status).
func (b *Broker) Bridges() *bridge.Hook { return b.bridges }

// Queues is the workload queue manager.
func (b *Broker) Queues() *queue.Manager { return b.queues }

// Auth is the authentication and authorisation hook.
func (b *Broker) Auth() *auth.Hook { return b.auth }

// Restored says what the store held at start-up.
func (b *Broker) Restored() persistence.RestoreStats { return b.restored }

// Addr returns the bound address of a listener (ListenerMQTT, ...), or "".
func (b *Broker) Addr(id string) string {
	if id == ListenerHTTP {
		if b.httpLn != nil {
			return b.httpLn.Addr().String()
		}
		return ""
	}
	if l, ok := b.server.Listeners.Get(id); ok {
		return l.Address()
	}
	return ""
}

// Start starts serving and returns at once.
func (b *Broker) Start() error {
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	if b.httpSrv != nil {
		b.wg.Go(func() {
			if err := b.httpSrv.Serve(b.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.log.Error("http listener stopped", "error", err)
			}
		})
	}
	for _, in := range b.inbound {
		in.Start()
	}
	b.ready.Store(true)
	return nil
}

// Run serves until ctx is done (or the store fails), then shuts down.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.Start(); err != nil {
		b.closeEarly()
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		b.log.Info("shutting down", "reason", context.Cause(ctx))
	case err := <-b.fatal:
		runErr = fmt.Errorf("broker: store failed, stopping: %w", err)
		b.log.Error("store failed, stopping", "error", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Shutdown(sctx); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// Shutdown stops accepting, disconnects clients (letting in-flight writes
// finish), stops the hooks, then flushes and closes the store. It is
// idempotent.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.ready.Store(false)
		if b.httpSrv != nil {
			_ = b.httpSrv.Shutdown(ctx)
		}
		// Nothing new from the far sides: what they sent and the broker
		// did not take yet stays unacknowledged there.
		for _, in := range b.inbound {
			in.Stop()
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = b.server.Close()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			b.log.Warn("clients did not disconnect in time; closing the store anyway")
		}
		b.wg.Wait()
		for _, c := range b.closers {
			c()
		}
		if err := b.store.Close(); err != nil {
			b.stopErr = err
			b.log.Error("store close failed", "error", err)
			return
		}
		b.log.Info("stopped", "store", b.store.Path())
	})
	return b.stopErr
}

// closeEarly releases what New opened when it fails half way.
func (b *Broker) closeEarly() {
	if b.httpLn != nil {
		_ = b.httpLn.Close()
	}
	if b.server != nil {
		b.server.Listeners.CloseAll(func(string) {})
	}
	if b.persist != nil {
		_ = b.persist.Stop()
	}
	for _, c := range b.closers {
		c()
	}
	_ = b.store.Close()
}

func (b *Broker) routes() http.Handler {
	mux := http.NewServeMux()
	api := httpbridge.NewPublishAPI(b.server, b.auth, int64(b.cfg.MQTT.MaxPacketSize), b.log.With("api", "publish"))
	api.Ready = b.ready.Load
	api.Register(mux)
	b.registerAdmin(mux)
	return mux
}
