package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"golang.org/x/time/rate"

	"github.com/motemq/mote/internal/hookset"
)

// Config configures the Hook.
type Config struct {
	// UsersFile is a password file (see the package documentation); empty
	// for none.
	UsersFile string
	// ACLFile is an ACL file; Rules are inline rules evaluated before it.
	ACLFile string
	Rules   []Rule
	// AllowAnonymous: nil accepts anonymous clients from loopback addresses
	// only (the secure default); true from anywhere; false from nowhere.
	AllowAnonymous *bool
	// JWT, when set, accepts a token as the CONNECT password.
	JWT *JWTConfig
	// CertUsername takes the username from a verified client certificate
	// when the client sends none: "cn", "san_dns", "san_email", "san_uri",
	// or "" (off).
	CertUsername string
	// ClientID, when set, is a pattern every client identifier must match
	// (CONNACK 0x85 otherwise).
	ClientID *regexp.Regexp
	// Limits against abuse.
	Limits Limits
	// Watch is how often the users and ACL files are checked for changes;
	// 0 turns watching off (SIGHUP still reloads).
	Watch time.Duration
}

// Counters count refusals, for metrics.
type Counters struct {
	BadCredentials    atomic.Uint64 // CONNACK 0x86
	NotAuthorized     atomic.Uint64 // CONNACK 0x87 (anonymous, will topic, session of another user)
	ClientIDRefused   atomic.Uint64 // CONNACK 0x85
	ConnectRate       atomic.Uint64 // CONNACK 0x9F: connection rate per address
	LoginThrottled    atomic.Uint64 // CONNACK 0x9F: too many failed logins from an address
	UserConnections   atomic.Uint64 // CONNACK 0x97: per-user connection limit
	PublishDenied     atomic.Uint64 // ACL refused a publish
	SubscribeDenied   atomic.Uint64 // ACL refused a subscription
	DeliveryDenied    atomic.Uint64 // ACL refused a delivery (subscriber lost access)
	PublishRate       atomic.Uint64 // publishes over the rate limit
	SubscriptionQuota atomic.Uint64 // filters refused with 0x97
	RetainedQuota     atomic.Uint64 // retained publishes refused by limits.max_retained_*
	TokenExpired      atomic.Uint64 // clients disconnected when their token expired
	Reloads           atomic.Uint64 // successful reloads
	ReloadErrors      atomic.Uint64
}

// state is what a reload replaces, as one unit.
type state struct {
	users *Users // nil: no password file
	acl   *ACL
	// verified caches the last password that passed bcrypt for each user
	// (as SHA-256 with a per-process key), so reconnect storms cost a hash,
	// not a bcrypt; it dies with the state on reload.
	verified sync.Map // username → [32]byte
}

type client struct {
	id      Identity
	pub     *rate.Limiter
	expiry  *time.Timer
	pending map[uint16][]int // SUBSCRIBE packet id → filter indexes refused for quota
}

// Hook is Mote's mochi authentication and authorisation hook: it
// authenticates CONNECT (password file, JWT, client certificate or
// anonymous), applies the ACL to publishes, subscriptions and deliveries,
// and enforces the abuse limits. Register it first, so a refused publish
// reaches no later hook.
type Hook struct {
	mqtt.HookBase
	cfg    Config
	server *mqtt.Server
	jwt    *JWTVerifier
	key    [32]byte // keys the password cache

	st atomic.Pointer[state]

	mu      sync.RWMutex
	clients map[*mqtt.Client]*client
	perUser map[string]int

	connRate *addrLimiters
	failRate *addrLimiters
	retained *retainedOwners // nil without a retained cap
	refusals atomic.Uint64   // anonymous refusals logged so far (the hint is rate-limited)

	// denyLog bounds the log lines ACL denials write (a client can send
	// denied packets as fast as it likes); denials beyond it are only
	// counted, and the next line logged says how many were not.
	denyLog  *rate.Limiter
	unlogged atomic.Uint64

	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	files   map[string]fileStamp

	Counters Counters
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// New loads the files named in cfg and returns the hook. Errors name the
// configuration key and file at fault.
func New(cfg Config, server *mqtt.Server, log *slog.Logger) (*Hook, error) {
	h := &Hook{
		cfg:     cfg,
		server:  server,
		clients: map[*mqtt.Client]*client{},
		perUser: map[string]int{},
		stop:    make(chan struct{}),
		files:   map[string]fileStamp{},
		denyLog: rate.NewLimiter(denyLogRate, denyLogBurst),
	}
	h.Log = log
	if _, err := rand.Read(h.key[:]); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if cfg.JWT != nil {
		v, err := NewJWT(*cfg.JWT)
		if err != nil {
			return nil, err
		}
		h.jwt = v
	}
	st, err := h.load()
	if err != nil {
		return nil, err
	}
	h.st.Store(st)
	l := cfg.Limits
	if l.ConnectRate > 0 {
		h.connRate = newAddrLimiters(rate.Limit(l.ConnectRate), max(l.ConnectBurst, 1))
	}
	if l.FailedLoginBurst > 0 && l.FailedLoginEvery > 0 {
		h.failRate = newAddrLimiters(rate.Every(l.FailedLoginEvery), l.FailedLoginBurst)
	}
	if l.MaxRetainedPerUser > 0 || l.MaxRetainedBytesPerUser > 0 {
		h.retained = newRetainedOwners()
	}
	return h, nil
}

// ID is the hook's id.
func (h *Hook) ID() string { return "auth" }

var provides = hookset.Of(
	mqtt.OnConnect,
	mqtt.OnConnectAuthenticate,
	mqtt.OnACLCheck,
	mqtt.OnDisconnect,
	mqtt.OnSubscribe,
	mqtt.OnPacketEncode,
	mqtt.OnPublish,
	mqtt.OnRetainMessage,
	mqtt.OnRetainedExpired,
	mqtt.OnSysInfoTick,
)

// Provides reports the events the hook handles.
func (h *Hook) Provides(b byte) bool { return provides.Has(b) }

// Init starts watching the files (when configured).
func (h *Hook) Init(any) error {
	if h.cfg.Watch > 0 && (h.cfg.UsersFile != "" || h.cfg.ACLFile != "") {
		h.wg.Add(1)
		go h.watch()
	}
	return nil
}

// Stop stops the watcher and the token expiry timers.
func (h *Hook) Stop() error {
	h.stopped.Do(func() { close(h.stop) })
	h.wg.Wait()
	h.mu.Lock()
	for _, c := range h.clients {
		if c.expiry != nil {
			c.expiry.Stop()
		}
	}
	h.mu.Unlock()
	return nil
}

// load reads the users and ACL files into a new state.
func (h *Hook) load() (*state, error) {
	st := &state{}
	if f := h.cfg.UsersFile; f != "" {
		u, err := LoadUsers(f)
		if err != nil {
			return nil, fmt.Errorf("auth.users_file: %w", err)
		}
		st.users = u
		h.stamp(f)
	}
	rules := append([]Rule(nil), h.cfg.Rules...)
	if f := h.cfg.ACLFile; f != "" {
		r, err := LoadACL(f)
		if err != nil {
			return nil, fmt.Errorf("auth.acl_file: %w", err)
		}
		rules = append(rules, r...)
		h.stamp(f)
	}
	acl, err := NewACL(rules)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	st.acl = acl
	return st, nil
}

func (h *Hook) stamp(path string) {
	if fi, err := os.Stat(path); err == nil {
		h.files[path] = fileStamp{fi.ModTime(), fi.Size()}
	}
}

// Reload reads the users and ACL files again. On error the previous ones
// stay in force. Connected clients keep their identity; the new ACL applies
// to their next publish, subscription and delivery.
func (h *Hook) Reload() error {
	h.mu.Lock()
	st, err := h.load()
	h.mu.Unlock()
	if err != nil {
		h.Counters.ReloadErrors.Add(1)
		h.Log.Error("auth reload failed; keeping the previous users and ACL", "error", err)
		return err
	}
	h.st.Store(st)
	h.Counters.Reloads.Add(1)
	users := 0
	if st.users != nil {
		users = st.users.Len()
	}
	h.Log.Info("auth reloaded", "users", users, "acl_rules", st.acl.Len())
	return nil
}

// watch reloads when a file's modification time or size changes.
func (h *Hook) watch() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.Watch)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		changed := false
		h.mu.Lock()
		for _, f := range []string{h.cfg.UsersFile, h.cfg.ACLFile} {
			if f == "" {
				continue
			}
			fi, err := os.Stat(f)
			if err != nil {
				continue // being replaced; the next tick sees the new file
			}
			if old, ok := h.files[f]; !ok || !old.mod.Equal(fi.ModTime()) || old.size != fi.Size() {
				changed = true
			}
		}
		h.mu.Unlock()
		if changed {
			_ = h.Reload()
		}
	}
}

// refuse sends CONNACK with code and returns it as the error that ends the
// connection.
func (h *Hook) refuse(cl *mqtt.Client, code packets.Code, counter *atomic.Uint64, msg string, args ...any) error {
	counter.Add(1)
	h.Log.Info("connection refused: "+msg, append([]any{"client", cl.ID, "remote", cl.Net.Remote, "reason", code.Reason}, args...)...)
	if cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 has return codes 1-5 only; mochi would send 0x87,
		// 0x97 and 0x9F unchanged and 0x86 as 5 (not authorized).
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: v3ReturnCode(code)})
		return code
	}
	_ = h.server.SendConnack(cl, code, false, nil)
	return code
}

// v3ReturnCode is the MQTT 3.1.1 CONNACK return code for a refusal.
func v3ReturnCode(code packets.Code) byte {
	switch code.Code {
	case packets.ErrBadUsernameOrPassword.Code:
		return packets.ErrMalformedUsernameOrPassword.Code // 4: bad user name or password
	case packets.ErrClientIdentifierNotValid.Code:
		return packets.Err3ClientIdentifierNotValid.Code // 2
	case packets.ErrConnectionRateExceeded.Code, packets.ErrQuotaExceeded.Code:
		return packets.Err3ServerUnavailable.Code // 3
	}
	return packets.Err3NotAuthorized.Code // 5
}

// OnConnect authenticates the client and applies the connection limits.
func (h *Hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Inline {
		return nil
	}
	now := time.Now()
	addr := hostOf(cl.Net.Remote)
	// Loopback clients are local processes (bridges, load tests, sidecars):
	// the connect rate is for the network.
	if h.connRate != nil && !isLoopback(addr) && !h.connRate.allow(addr, now) {
		return h.refuse(cl, packets.ErrConnectionRateExceeded, &h.Counters.ConnectRate, "connection rate from this address exceeded (limits.connect_rate)")
	}
	st := h.st.Load()
	throttled := h.failRate != nil && !h.knownGood(st, pk)
	if throttled && !h.failRate.begin(addr) {
		// Refused before any bcrypt, so a password-guessing flood costs
		// little; a client whose credentials were verified before still
		// gets in from the same address.
		return h.refuse(cl, packets.ErrConnectionRateExceeded, &h.Counters.LoginThrottled, "too many failed logins from this address (limits.failed_logins)")
	}
	if h.cfg.ClientID != nil && !h.cfg.ClientID.MatchString(cl.ID) {
		if throttled {
			h.failRate.end(addr, false)
		}
		return h.refuse(cl, packets.ErrClientIdentifierNotValid, &h.Counters.ClientIDRefused, "client id does not match auth.client_id_pattern")
	}
	id, code, why := h.authenticate(cl, pk, st, addr, now)
	if throttled {
		// Spend one of the address's failures on a failure.
		h.failRate.end(addr, code == packets.ErrBadUsernameOrPassword)
	}
	switch code {
	case packets.CodeSuccess:
	case packets.ErrBadUsernameOrPassword:
		return h.refuse(cl, code, &h.Counters.BadCredentials, why, "username", string(pk.Connect.Username))
	default:
		return h.refuse(cl, code, &h.Counters.NotAuthorized, why)
	}
	if pk.Connect.WillFlag && !st.acl.CanPublish(id, pk.Connect.WillTopic) {
		return h.refuse(cl, packets.ErrNotAuthorized, &h.Counters.NotAuthorized, "the will topic is not writable by this client", "will_topic", pk.Connect.WillTopic)
	}
	if old, ok := h.server.Clients.Get(cl.ID); ok && string(old.Properties.Username) != id.Username {
		// Taking over a session, connected or not, is only for the user who
		// owns it: anyone else who knew the client id could read its queue.
		return h.refuse(cl, packets.ErrNotAuthorized, &h.Counters.NotAuthorized, "client id belongs to a session of another user", "username", id.Username)
	} else if ok && !old.Closed() {
		// The spec's take-over [MQTT-3.1.4-3]: the new connection wins.
		h.Log.Info("client id connected again: taking over its session", "client", cl.ID, "username", id.Username, "old_remote", old.Net.Remote, "new_remote", cl.Net.Remote)
	}

	c := &client{id: id}
	if l := h.cfg.Limits; l.PublishRate > 0 {
		c.pub = rate.NewLimiter(rate.Limit(l.PublishRate), max(l.PublishBurst, 1))
	}
	h.mu.Lock()
	if n := h.cfg.Limits.MaxConnectionsPerUser; n > 0 && h.perUser[id.Username] >= n && !h.connectedAs(cl.ID, id.Username) {
		h.mu.Unlock()
		return h.refuse(cl, packets.ErrQuotaExceeded, &h.Counters.UserConnections, "too many connections for this user (limits.max_connections_per_user)", "username", id.Username)
	}
	h.clients[cl] = c
	h.perUser[id.Username]++
	if !id.Expires.IsZero() {
		c.expiry = time.AfterFunc(time.Until(id.Expires), func() {
			h.Counters.TokenExpired.Add(1)
			h.Log.Info("token expired; disconnecting", "client", cl.ID, "username", id.Username)
			_ = h.server.DisconnectClient(cl, packets.ErrMaxConnectTime)
		})
	}
	h.mu.Unlock()
	// The session is bound to the authenticated name (a token's or a
	// certificate's name, not what the client typed).
	cl.Properties.Username = []byte(id.Username)
	return nil
}

// connectedAs reports whether clientID is connected now as user (a
// take-over does not count against the user's limit). h.mu must be held.
func (h *Hook) connectedAs(clientID, user string) bool {
	for cl, c := range h.clients {
		if cl.ID == clientID && c.id.Username == user && !cl.Closed() {
			return true
		}
	}
	return false
}

// authenticate decides who the client is. It returns CodeSuccess, 0x86 or
// 0x87 with a reason for the log.
func (h *Hook) authenticate(cl *mqtt.Client, pk packets.Packet, st *state, addr string, now time.Time) (Identity, packets.Code, string) {
	c := pk.Connect
	user := string(c.Username)
	switch {
	case h.jwt != nil && c.PasswordFlag && LooksLikeJWT(c.Password):
		id, err := h.jwt.Verify(string(c.Password), now)
		if err != nil {
			return Identity{}, packets.ErrBadUsernameOrPassword, "token refused: " + err.Error()
		}
		id.ClientID = cl.ID
		if id.Username != "" && st.users != nil {
			id.Roles = append(id.Roles, st.users.rolesOf(id.Username)...)
		}
		return id, packets.CodeSuccess, ""
	case st.users != nil && c.UsernameFlag && c.PasswordFlag:
		roles, ok := h.checkPassword(st, user, c.Password)
		if !ok {
			return Identity{}, packets.ErrBadUsernameOrPassword, "bad username or password"
		}
		return Identity{Username: user, ClientID: cl.ID, Roles: roles}, packets.CodeSuccess, ""
	case (st.users != nil || h.jwt != nil) && (c.UsernameFlag || c.PasswordFlag):
		return Identity{}, packets.ErrBadUsernameOrPassword, "credentials incomplete: send a username and password (or a token as the password)"
	}
	if name := h.certName(cl); name != "" {
		return Identity{Username: name, ClientID: cl.ID, Roles: st.users.rolesOf(name)}, packets.CodeSuccess, ""
	}
	if h.anonymousAllowed(addr) {
		return Identity{ClientID: cl.ID, Anonymous: true}, packets.CodeSuccess, ""
	}
	if n := h.refusals.Add(1); n <= 10 || n%1000 == 0 {
		return Identity{}, packets.ErrNotAuthorized, "anonymous clients are accepted from loopback only; set auth.allow_anonymous: true or add users (auth.users_file)"
	}
	return Identity{}, packets.ErrNotAuthorized, "anonymous client refused"
}

// passwordSum keys the cache of verified passwords.
func (h *Hook) passwordSum(user string, password []byte) [32]byte {
	mac := sha256.New()
	mac.Write(h.key[:])
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write(password)
	var sum [32]byte
	mac.Sum(sum[:0])
	return sum
}

// cached reports whether password is the user's last verified password.
func (st *state) cached(user string, sum [32]byte) bool {
	v, ok := st.verified.Load(user)
	if !ok {
		return false
	}
	good := v.([32]byte)
	return subtle.ConstantTimeCompare(good[:], sum[:]) == 1
}

// knownGood reports whether the CONNECT carries a username and password
// verified before (no bcrypt needed).
func (h *Hook) knownGood(st *state, pk packets.Packet) bool {
	c := pk.Connect
	return c.UsernameFlag && c.PasswordFlag && h.verifiedBefore(st, string(c.Username), c.Password)
}

// verifiedBefore reports whether password is user's last verified one (a
// cache hit: no bcrypt, and no failed-login budget spent).
func (h *Hook) verifiedBefore(st *state, user string, password []byte) bool {
	return st.users != nil && st.cached(user, h.passwordSum(user, password))
}

// checkPassword runs bcrypt, or compares with the cached last good password.
func (h *Hook) checkPassword(st *state, user string, password []byte) ([]string, bool) {
	sum := h.passwordSum(user, password)
	if st.cached(user, sum) {
		return st.users.rolesOf(user), true
	}
	roles, ok := st.users.Check(user, string(password))
	if ok {
		st.verified.Store(user, sum)
	}
	return roles, ok
}

// certName is the username from the client's verified certificate, or "".
func (h *Hook) certName(cl *mqtt.Client) string {
	if h.cfg.CertUsername == "" {
		return ""
	}
	tc, ok := cl.Net.Conn.(interface {
		TLSState() *tls.ConnectionState
	})
	if !ok {
		return ""
	}
	cs := tc.TLSState()
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return ""
	}
	cert := cs.PeerCertificates[0]
	var name string
	switch h.cfg.CertUsername {
	case "cn":
		name = cert.Subject.CommonName
	case "san_dns":
		if len(cert.DNSNames) > 0 {
			name = cert.DNSNames[0]
		}
	case "san_email":
		if len(cert.EmailAddresses) > 0 {
			name = cert.EmailAddresses[0]
		}
	case "san_uri":
		if len(cert.URIs) > 0 {
			name = cert.URIs[0].String()
		}
	}
	if ValidateUsername(name) != nil {
		return "" // a name that could widen %u patterns is not an identity
	}
	return name
}

func (h *Hook) anonymousAllowed(addr string) bool {
	if h.cfg.AllowAnonymous != nil {
		return *h.cfg.AllowAnonymous
	}
	return isLoopback(addr)
}

func isLoopback(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	return err == nil && ip.Unmap().IsLoopback()
}

// OnConnectAuthenticate admits the clients OnConnect authenticated.
func (h *Hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	if cl.Net.Inline {
		return true
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, ok := h.clients[cl]
	return ok
}

// OnDisconnect forgets the connection.
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.clients[cl]
	if !ok {
		return
	}
	delete(h.clients, cl)
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if h.perUser[c.id.Username]--; h.perUser[c.id.Username] <= 0 {
		delete(h.perUser, c.id.Username)
	}
}

// identity is who cl is: its connection's identity, or for a session
// restored from the store and not yet reconnected, its username's.
func (h *Hook) identity(cl *mqtt.Client) Identity {
	h.mu.RLock()
	c, ok := h.clients[cl]
	h.mu.RUnlock()
	if ok {
		return c.id
	}
	name := string(cl.Properties.Username)
	if name == "" {
		return Identity{ClientID: cl.ID, Anonymous: true}
	}
	return Identity{Username: name, ClientID: cl.ID, Roles: h.st.Load().users.rolesOf(name)}
}

// OnACLCheck applies the ACL: write is a publish to topic; otherwise topic
// is a subscription filter or the topic of a delivery to cl.
func (h *Hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	acl := h.st.Load().acl
	if acl.Empty() && h.jwt == nil {
		return true // nothing can restrict anyone: skip the identity lookup
	}
	id := h.identity(cl)
	if acl.Empty() && id.TokenPublish == nil && id.TokenSubscribe == nil {
		return true
	}
	if write {
		if acl.CanPublish(id, topic) {
			return true
		}
		h.Counters.PublishDenied.Add(1)
		h.logDenied(cl, id, "publish", topic)
		return false
	}
	if acl.CanSubscribe(id, topic) {
		return true
	}
	if mqtt.IsValidFilter(topic, true) && !bytes.ContainsAny([]byte(topic), "+#") {
		h.Counters.DeliveryDenied.Add(1)
		h.logDenied(cl, id, "deliver", topic)
	} else {
		h.Counters.SubscribeDenied.Add(1)
		h.logDenied(cl, id, "subscribe", topic)
	}
	return false
}

// At most denyLogRate ACL denials a second are logged (after a burst of
// denyLogBurst); every denial is counted (Counters, mote_acl_denied_total).
const (
	denyLogRate  = 10
	denyLogBurst = 20
)

// logDenied logs an ACL denial at Info, within the rate above: a denied
// topic is what an operator looks for when a device misbehaves or probes.
// The log is bounded so that a client sending denied packets in a loop
// cannot flood it; the denials not logged are reported with the next line.
func (h *Hook) logDenied(cl *mqtt.Client, id Identity, action, topic string) {
	if !h.denyLog.Allow() {
		h.unlogged.Add(1)
		return
	}
	args := []any{"client", cl.ID, "username", id.Username, "action", action, "topic", topic}
	if n := h.unlogged.Swap(0); n > 0 {
		args = append(args, "not_logged", n)
	}
	h.Log.Info("acl denied", args...)
}

// CanDeliver reports whether cl may still read topic (checked again when a
// resumed session's stored messages are sent).
func (h *Hook) CanDeliver(cl *mqtt.Client, topic string) bool {
	return h.OnACLCheck(cl, topic, false)
}

// OnSubscribe refuses the filters beyond limits.max_subscriptions (SUBACK
// 0x97, set in OnPacketEncode; mochi itself only knows 0x8F and 0x87).
func (h *Hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	limit := h.cfg.Limits.MaxSubscriptions
	if limit <= 0 || cl.Net.Inline {
		return pk
	}
	have := cl.State.Subscriptions.Len()
	var refused []int
	filters := make(packets.Subscriptions, len(pk.Filters))
	copy(filters, pk.Filters)
	for i, f := range filters {
		if _, exists := cl.State.Subscriptions.Get(f.Filter); exists || f.Filter == "" {
			continue
		}
		if have >= limit {
			refused = append(refused, i)
			filters[i].Filter = "" // invalid: mochi refuses it and subscribes nothing
			continue
		}
		have++
	}
	if len(refused) == 0 {
		return pk
	}
	h.Counters.SubscriptionQuota.Add(uint64(len(refused)))
	h.mu.Lock()
	if c := h.clients[cl]; c != nil {
		if c.pending == nil {
			c.pending = map[uint16][]int{}
		}
		c.pending[pk.PacketID] = refused
	}
	h.mu.Unlock()
	pk.Filters = filters
	return pk
}

// OnPacketEncode puts the quota reason code into SUBACKs.
func (h *Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Suback || h.cfg.Limits.MaxSubscriptions <= 0 {
		return pk
	}
	h.mu.Lock()
	var refused []int
	if c := h.clients[cl]; c != nil && c.pending != nil {
		refused = c.pending[pk.PacketID]
		delete(c.pending, pk.PacketID)
	}
	h.mu.Unlock()
	if len(refused) == 0 || cl.Properties.ProtocolVersion < 5 {
		return pk // MQTT 3.1.1 has only 0x80, which mochi already sent
	}
	codes := append([]byte(nil), pk.ReasonCodes...)
	for _, i := range refused {
		if i < len(codes) {
			codes[i] = packets.ErrQuotaExceeded.Code
		}
	}
	pk.ReasonCodes = codes
	return pk
}

// OnPublish applies the retained-message caps and the publish rate limit.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if h.retained != nil && pk.FixedHeader.Retain && len(pk.Payload) > 0 {
		l := h.cfg.Limits
		user := h.identity(cl).Username
		if !h.retained.allows(user, pk.TopicName, retainedSize(pk), l.MaxRetainedPerUser, l.MaxRetainedBytesPerUser) {
			h.Counters.RetainedQuota.Add(1)
			if h.denyLog.Allow() {
				h.Log.Info("retained message refused: the user holds its limit (limits.max_retained_per_user, max_retained_bytes_per_user)",
					"client", cl.ID, "username", user, "topic", pk.TopicName)
			}
			return h.quotaRefusal(cl, pk)
		}
	}
	if h.cfg.Limits.PublishRate <= 0 {
		return pk, nil
	}
	h.mu.RLock()
	c := h.clients[cl]
	h.mu.RUnlock()
	if c == nil || c.pub == nil || c.pub.Allow() {
		return pk, nil
	}
	h.Counters.PublishRate.Add(1)
	if h.cfg.Limits.PublishDisconnect {
		h.Log.Info("publish rate exceeded; disconnecting", "client", cl.ID, "limit", h.cfg.Limits.PublishRate)
		_ = h.server.DisconnectClient(cl, packets.ErrMessageRateTooHigh)
		return pk, packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1 {
		return pk, packets.ErrQuotaExceeded // mochi answers PUBACK 0x97 and does not route it
	}
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 2 {
		// mochi would answer a QoS 2 refusal with a PUBACK; PUBREC is right.
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.ErrQuotaExceeded.Code,
		})
	}
	return pk, packets.ErrRejectPacket // dropped
}

// quotaRefusal refuses a publish over a retained cap: MQTT 5 QoS 1/2 with
// 0x97; MQTT 3.1.1 QoS 1/2 by disconnecting (3.1.1 has no refusal code and
// an unacknowledged publish would be resent for ever; the ACL does the
// same); QoS 0 by dropping it.
func (h *Hook) quotaRefusal(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch {
	case pk.FixedHeader.Qos == 0:
	case cl.Properties.ProtocolVersion < 5:
		_ = h.server.DisconnectClient(cl, packets.ErrQuotaExceeded)
	case pk.FixedHeader.Qos == 1:
		return pk, packets.ErrQuotaExceeded // PUBACK 0x97, not routed
	default:
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.ErrQuotaExceeded.Code,
		})
	}
	return pk, packets.ErrRejectPacket
}

// retainedSize is what a retained message counts against
// limits.max_retained_bytes_per_user: its topic and payload.
func retainedSize(pk packets.Packet) int64 { return int64(len(pk.TopicName) + len(pk.Payload)) }

// OnRetainMessage keeps the retained caps' books: a message set counts for
// its publisher's user (one set by the broker itself, e.g. a bridge or the
// admin API, for no one), a cleared one for no one.
func (h *Hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if h.retained == nil {
		return
	}
	switch {
	case r > 0:
		h.retained.set(h.identity(cl).Username, pk.TopicName, retainedSize(pk), !cl.Net.Inline)
	case len(pk.Payload) == 0:
		h.retained.clear(pk.TopicName)
	}
}

// OnRetainedExpired forgets an expired retained message.
func (h *Hook) OnRetainedExpired(topic string) {
	if h.retained != nil {
		h.retained.clear(topic)
	}
}

// OnSysInfoTick publishes the counters under $SYS/broker/auth/ (QoS 0, not
// retained), beside mochi's own $SYS topics.
func (h *Hook) OnSysInfoTick(*system.Info) {
	c := &h.Counters
	for _, v := range []struct {
		name string
		n    *atomic.Uint64
	}{
		{"refused/bad_credentials", &c.BadCredentials},
		{"refused/not_authorized", &c.NotAuthorized},
		{"refused/client_id", &c.ClientIDRefused},
		{"refused/connect_rate", &c.ConnectRate},
		{"refused/login_throttled", &c.LoginThrottled},
		{"refused/user_connections", &c.UserConnections},
		{"denied/publish", &c.PublishDenied},
		{"denied/subscribe", &c.SubscribeDenied},
		{"denied/delivery", &c.DeliveryDenied},
		{"limited/publish_rate", &c.PublishRate},
		{"limited/subscriptions", &c.SubscriptionQuota},
		{"limited/retained", &c.RetainedQuota},
		{"token_expired", &c.TokenExpired},
		{"reloads", &c.Reloads},
		{"reload_errors", &c.ReloadErrors},
	} {
		_ = h.server.Publish("$SYS/broker/auth/"+v.name, strconv.AppendUint(nil, v.n.Load(), 10), false, 0)
	}
}

// rolesOf returns the roles of a user in the file (nil when unknown).
func (u *Users) rolesOf(name string) []string {
	if u == nil {
		return nil
	}
	e, ok := u.users[name]
	if !ok {
		return nil
	}
	return append([]string(nil), e.roles...)
}

// hostOf is the address part of a remote "host:port".
func hostOf(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}
