package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	topics "github.com/motemq/mote/internal/topic"
	"github.com/motemq/mote/persistence"
)

// BridgeLookup finds an outbound bridge by name and returns its Offer: it
// takes a message and returns the batch that makes a QoS 1/2 message
// durable in the bridge's outbox (nil for QoS 0). bridge.Bridge.Offer has
// this shape.
type BridgeLookup func(name string) (offer func(packets.Packet) *persistence.Batch, ok bool)

// On-error modes.
const (
	OnErrorContinue   = "continue"
	OnErrorDrop       = "drop"
	OnErrorDeadLetter = "dead_letter"
)

// Limits on what a rule may ask for.
const (
	defaultSplitMax    = 1000
	maxSplitMax        = 100000
	defaultAggKeys     = 10000
	maxAggCount        = 100000
	defaultSGTimeout   = 5 * time.Second
	maxTimeout         = time.Hour
	defaultHTTPTimeout = 2 * time.Second
	defaultCacheTTL    = time.Minute
	defaultCacheSize   = 1000
	defaultStoreMax    = 100
	maxStoreMax        = 100000
	maxTargets         = 100
)

// Set is a compiled, immutable rule set; Engine.Reload puts it in force.
// Compiling the same rules twice gives independent sets (aggregations and
// caches belong to the set).
type Set struct {
	rules    []*rule
	trie     trie
	anyChain bool // some rule acts on rules' own output
	dollar   bool // some filter starts with $ (events, dead letters)
	aggs     []*aggregateAction
}

// Len is the number of rules.
func (s *Set) Len() int { return len(s.rules) }

// Names are the rules' names in order.
func (s *Set) Names() []string {
	out := make([]string, len(s.rules))
	for i, r := range s.rules {
		out[i] = r.name
	}
	return out
}

// listens reports whether a rule has a filter matching topic.
func (s *Set) listens(topic string) bool {
	var buf [8]int32
	return len(s.trie.match(topic, buf[:0])) > 0
}

// rule is a compiled Rule.
type rule struct {
	name     string
	topics   []string
	when     *program
	actions  []action
	onError  string
	disabled bool // as configured
	chain    bool
	st       *ruleState // shared by the rules of this name across reloads; set by Reload
}

// action is a compiled action. do runs it on m and returns the message for
// the next action; nil means the action took over the rest of the rule
// (split, aggregate and scatter-gather run the following actions
// themselves, later or once per element).
type action interface {
	do(x *exec, m *msg) (*msg, error)
	where() string // "actions[1].republish", for errors and events
}

// base is what every action knows about its place.
type base struct {
	r     *rule
	i     int
	label string
}

func (b *base) where() string { return b.label }

// next runs the actions after this one on m.
func (b *base) next(x *exec, m *msg) { b.r.runFrom(x, b.i+1, m) }

// Compile checks and compiles rules. Every problem is reported, joined,
// each naming the rule and the field:
//
//	rules[3] "celsius": when: line 1, column 12: unknown name tempp
//
// bridges resolves bridge actions; nil means no bridges exist.
func Compile(rules []Rule, bridges BridgeLookup) (*Set, error) {
	s := &Set{}
	var errs []error
	seen := map[string]int{}
	for i := range rules {
		rc := &rules[i]
		errf := func(field, format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			if field != "" {
				msg = field + ": " + msg
			}
			errs = append(errs, fmt.Errorf("rules[%d] %q: %s", i, rc.Name, msg))
		}
		r := &rule{name: rc.Name, topics: slices.Clone(rc.Topics), disabled: rc.Disabled, chain: rc.Chain}
		if err := checkName(rc.Name); err != nil {
			errf("name", "%v", err)
		} else if j, dup := seen[rc.Name]; dup {
			errf("name", "also the name of rules[%d]; names must be unique", j)
		} else {
			seen[rc.Name] = i
		}
		if len(rc.Topics) == 0 {
			errf("topics", "missing: list at least one topic filter")
		}
		for k, f := range rc.Topics {
			switch {
			case !topics.ValidFilter(f) || !utf8.ValidString(f) || strings.ContainsRune(f, 0):
				errf(fmt.Sprintf("topics[%d]", k), "%q is not a valid topic filter", f)
			case strings.HasPrefix(f, "$share/"):
				errf(fmt.Sprintf("topics[%d]", k), "%q: rules see every message; use the plain filter", f)
			}
		}
		switch rc.OnError {
		case "":
			r.onError = OnErrorContinue
		case OnErrorContinue, OnErrorDrop, OnErrorDeadLetter:
			r.onError = rc.OnError
		default:
			errf("on_error", "%q: want continue, drop or dead_letter", rc.OnError)
		}
		if rc.When != "" {
			p, err := compileExpr(rc.When, true, 0)
			if err != nil {
				errf("when", "%v", err)
			}
			r.when = p
		}
		if len(rc.Actions) == 0 {
			errf("actions", "missing: a rule needs at least one action")
		}
		for k := range rc.Actions {
			a, err := compileAction(r, k, &rc.Actions[k], bridges)
			for _, e := range err {
				errf("", "%v", e)
			}
			if a != nil {
				r.actions = append(r.actions, a)
				if agg, ok := a.(*aggregateAction); ok {
					s.aggs = append(s.aggs, agg)
				}
			}
		}
		s.rules = append(s.rules, r)
		for _, f := range rc.Topics {
			s.trie.insert(f, int32(len(s.rules)-1))
			if strings.HasPrefix(f, "$") {
				s.dollar = true
			}
		}
		s.anyChain = s.anyChain || rc.Chain
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// checkName: a rule's name is one topic level of $rules/{name}/dead.
func checkName(n string) error {
	switch {
	case n == "":
		return errors.New("missing")
	case len(n) > 128:
		return errors.New("longer than 128 bytes")
	case !utf8.ValidString(n):
		return errors.New("not UTF-8")
	case n == replyLevel:
		return fmt.Errorf("%q is reserved (scatter-gather replies use $rules/%s/)", n, replyLevel)
	}
	for _, c := range n {
		if c == '/' || c == '+' || c == '#' || unicode.IsSpace(c) || unicode.IsControl(c) {
			return fmt.Errorf("%q: letters, digits and punctuation other than / + # only", n)
		}
	}
	return nil
}

// compileAction compiles one action; errors name the action's field.
func compileAction(r *rule, i int, a *Action, bridges BridgeLookup) (action, []error) {
	var kinds []string
	for _, k := range []struct {
		set  bool
		name string
	}{
		{a.Republish != nil, "republish"}, {a.Transform != nil, "transform"}, {a.Split != nil, "split"},
		{a.Aggregate != nil, "aggregate"}, {a.ScatterGather != nil, "scatter_gather"}, {a.Enrich != nil, "enrich"},
		{a.Store != nil, "store"}, {a.Bridge != "", "bridge"}, {a.Drop, "drop"},
	} {
		if k.set {
			kinds = append(kinds, k.name)
		}
	}
	at := fmt.Sprintf("actions[%d]", i)
	if len(kinds) != 1 {
		if len(kinds) == 0 {
			return nil, []error{fmt.Errorf("%s: empty: give one of republish, transform, split, aggregate, scatter_gather, enrich, store, bridge, drop", at)}
		}
		return nil, []error{fmt.Errorf("%s: one action per list item, not %s", at, strings.Join(kinds, " and "))}
	}
	b := base{r: r, i: i, label: at + "." + kinds[0]}
	c := &compiler{prefix: b.label}
	var act action
	switch {
	case a.Republish != nil:
		act = c.republish(b, a.Republish)
	case a.Transform != nil:
		act = c.transform(b, a.Transform)
	case a.Split != nil:
		act = c.split(b, a.Split)
	case a.Aggregate != nil:
		act = c.aggregate(b, a.Aggregate)
	case a.ScatterGather != nil:
		act = c.scatterGather(b, a.ScatterGather)
	case a.Enrich != nil:
		act = c.enrich(b, a.Enrich)
	case a.Store != nil:
		act = c.store(b, a.Store)
	case a.Bridge != "":
		var offer func(packets.Packet) *persistence.Batch
		ok := false
		if bridges != nil {
			offer, ok = bridges(a.Bridge)
		}
		if !ok {
			c.fail("", "no bridge named %q (see bridges: in the configuration)", a.Bridge)
		}
		act = &bridgeAction{base: b, name: a.Bridge, offer: offer}
	case a.Drop:
		act = &dropAction{base: b}
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return act, nil
}

// compiler collects an action's errors.
type compiler struct {
	prefix string
	errs   []error
}

func (c *compiler) fail(field, format string, args ...any) {
	at := c.prefix
	if field != "" {
		at += "." + field
	}
	c.errs = append(c.errs, fmt.Errorf("%s: %s", at, fmt.Sprintf(format, args...)))
}

func (c *compiler) expr(field, src string, asBool bool) *program {
	if src == "" {
		return nil
	}
	p, err := compileExpr(src, asBool, 0)
	if err != nil {
		c.fail(field, "%v", err)
	}
	return p
}

func (c *compiler) template(field, src string) *template {
	if src == "" {
		return nil
	}
	t, err := compileTemplate(src)
	if err != nil {
		c.fail(field, "%v", err)
	}
	return t
}

// topicTemplate compiles a topic template; a constant one is checked now.
func (c *compiler) topicTemplate(field, src string) *template {
	if src == "" {
		c.fail(field, "missing")
		return nil
	}
	t := c.template(field, src)
	if t != nil && t.constant() {
		if err := topics.CheckName(src); err != nil {
			c.fail(field, "%v", err)
		}
	}
	return t
}

func (c *compiler) qos(field string, q *int) int {
	if q == nil {
		return -1
	}
	if *q < 0 || *q > 2 {
		c.fail(field, "%d: want 0, 1 or 2", *q)
	}
	return *q
}

func (c *compiler) duration(field string, d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0 || d > maxTimeout:
		c.fail(field, "%v: want a duration between 1ms and %v", d, maxTimeout)
	}
	return d
}

func (c *compiler) republish(b base, r *Republish) action {
	a := &republishAction{base: b, retain: r.Retain}
	a.topic = c.topicTemplate("topic", r.Topic)
	a.qos = c.qos("qos", r.QoS)
	if r.Payload != "" && r.Template != "" {
		c.fail("", "payload and template both set: choose one")
	}
	a.payload = c.expr("payload", r.Payload, false)
	a.tpl = c.template("template", r.Template)
	for _, k := range sortedKeys(r.User) {
		a.user = append(a.user, userTemplate{key: k, val: c.template("user."+k, r.User[k])})
	}
	return a
}

func (c *compiler) format(field, f string, allowEmpty bool) string {
	switch f {
	case "":
		if !allowEmpty {
			c.fail(field, "missing")
		}
	case fmtJSON, fmtCBOR, fmtMsgpack, fmtBase64, fmtHex, fmtText:
	default:
		c.fail(field, "%q: want json, cbor, msgpack, base64, hex or text", f)
	}
	return f
}

func (c *compiler) transform(b base, t *Transform) action {
	a := &transformAction{base: b, merge: t.Merge, remove: slices.Clone(t.Remove)}
	a.from = c.format("from", t.From, true)
	a.to = c.format("to", t.To, true)
	a.expr = c.expr("expr", t.Expr, false)
	a.tpl = c.template("template", t.Template)
	for _, k := range sortedKeys(t.Fields) {
		a.fields = append(a.fields, field{name: k, p: c.expr("fields."+k, t.Fields[k], false)})
	}
	computes := len(t.Fields) > 0 || t.Expr != "" || len(t.Remove) > 0
	switch {
	case t.Expr != "" && len(t.Fields) > 0:
		c.fail("", "expr and fields both set: choose one")
	case t.Merge && len(t.Fields) == 0:
		c.fail("merge", "needs fields")
	case t.Template != "" && t.To != "" && t.To != fmtText:
		c.fail("template", "writes text: leave to empty or set it to text")
	case t.To == "" && t.From == "" && !computes && t.Template == "":
		c.fail("", "nothing to do: set to, fields, expr, remove or template")
	}
	if t.Template != "" {
		a.to = fmtText
	}
	return a
}

func (c *compiler) split(b base, s *Split) action {
	a := &splitAction{base: b, max: s.Max}
	a.expr = c.expr("expr", s.Expr, false)
	switch {
	case s.Max == 0:
		a.max = defaultSplitMax
	case s.Max < 0 || s.Max > maxSplitMax:
		c.fail("max", "%d: want 1 to %d", s.Max, maxSplitMax)
	}
	return a
}

func (c *compiler) aggregate(b base, g *Aggregate) action {
	a := &aggregateAction{base: b, count: g.Count, maxKeys: g.MaxKeys, open: map[string]*bucket{}}
	a.key = c.expr("key", g.Key, false)
	if g.Count < 0 || g.Count > maxAggCount {
		c.fail("count", "%d: want 1 to %d", g.Count, maxAggCount)
	}
	if g.Window != 0 {
		a.window = c.duration("window", g.Window, 0)
	}
	if g.Count == 0 && g.Window == 0 {
		c.fail("", "set count, window or both: when is an aggregation complete?")
	}
	switch {
	case g.MaxKeys == 0:
		a.maxKeys = defaultAggKeys
	case g.MaxKeys < 0:
		c.fail("max_keys", "%d: want a positive number", g.MaxKeys)
	}
	return a
}

func (c *compiler) scatterGather(b base, g *ScatterGather) action {
	a := &sgAction{base: b}
	if len(g.Targets) == 0 {
		c.fail("targets", "missing: list the topics to send the request to")
	}
	if len(g.Targets) > maxTargets {
		c.fail("targets", "%d targets: at most %d", len(g.Targets), maxTargets)
	}
	for k, t := range g.Targets {
		a.targets = append(a.targets, c.topicTemplate(fmt.Sprintf("targets[%d]", k), t))
	}
	a.timeout = c.duration("timeout", g.Timeout, defaultSGTimeout)
	a.qos = c.qos("qos", g.QoS)
	if g.ReplyTopic != "" {
		a.replyTopic = c.topicTemplate("reply_topic", g.ReplyTopic)
	}
	return a
}

func (c *compiler) enrich(b base, g *Enrich) action {
	a := &enrichAction{base: b, table: g.Table, into: g.Into, required: g.Required}
	switch {
	case g.Table != "" && g.HTTP != nil:
		c.fail("", "table and http both set: choose one")
	case g.Table == "" && g.HTTP == nil:
		c.fail("", "set table (with key) or http")
	case g.Table != "":
		if err := checkKVName(g.Table); err != nil {
			c.fail("table", "%v", err)
		}
		if g.Key == "" {
			c.fail("key", "missing: an expression yielding the table key")
		}
		a.key = c.expr("key", g.Key, false)
	default:
		if g.Key != "" {
			c.fail("key", "only with table (http takes the key from its url template)")
		}
		h := g.HTTP
		l := &httpLookup{headers: h.Headers, size: h.CacheSize, ttl: h.CacheTTL}
		l.url = c.template("http.url", h.URL)
		if h.URL == "" {
			c.fail("http.url", "missing")
		} else if !strings.HasPrefix(h.URL, "http://") && !strings.HasPrefix(h.URL, "https://") {
			c.fail("http.url", "%q: want an http:// or https:// URL", h.URL)
		}
		l.timeout = c.duration("http.timeout", h.Timeout, defaultHTTPTimeout)
		switch {
		case h.CacheTTL == 0:
			l.ttl = defaultCacheTTL
		case h.CacheTTL > 0:
			l.ttl = c.duration("http.cache_ttl", h.CacheTTL, defaultCacheTTL)
		}
		switch {
		case h.CacheSize == 0:
			l.size = defaultCacheSize
		case h.CacheSize < 0:
			c.fail("http.cache_size", "%d: want a positive number", h.CacheSize)
		}
		l.cache = newLRU(l.size)
		a.http = l
	}
	return a
}

func (c *compiler) store(b base, s *Store) action {
	a := &storeAction{base: b, max: s.Max, maxAge: s.MaxAge}
	switch {
	case s.Max < 0 || s.Max > maxStoreMax:
		c.fail("max", "%d: want 1 to %d", s.Max, maxStoreMax)
	case s.Max == 0 && s.MaxAge == 0:
		a.max = defaultStoreMax
	}
	if s.MaxAge < 0 {
		c.fail("max_age", "%v: want a positive duration", s.MaxAge)
	}
	return a
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
