// Package rules routes messages by content: each rule names topic filters,
// an optional condition and a list of actions (republish, transform, split,
// aggregate, scatter-gather, enrich, store, bridge, drop), so publishers and
// subscribers need not know of each other. It also publishes broker events
// as JSON messages under $events/.
//
// # Rules
//
// A rules file (and the broker configuration's rules: key) holds a list:
//
//	rules:
//	  - name: celsius
//	    topics: [sensors/+/temp]
//	    when: json.unit == "F"
//	    on_error: dead_letter
//	    actions:
//	      - transform:
//	          fields: {device: levels[1], celsius: (json.value - 32) / 1.8}
//	      - republish: {topic: "metrics/{{ levels[1] }}/celsius", qos: 1}
//
// Expressions are expr-lang (github.com/expr-lang/expr), compiled when the
// rules load: a bad one is an error naming the rule, the field, and the
// line and column. They see topic, levels (the topic split at '/'),
// payload (text), json (the payload parsed, nil when it is not JSON; after
// a transform, the value it produced), qos, retain, client_id, username,
// properties (content_type, response_topic, correlation_data,
// payload_format, message_expiry, user: {name: value}), timestamp (when the
// rules took the message in hand, microseconds after its receipt) and
// index (the element's position after a split). Templates (topics, URLs,
// text) are text with {{ expression }} interpolations. Fetching a field of
// nil fails (json.a.b when a is missing), and comparing nil with a number
// fails: where a field may be missing, write (json?.temp ?? 0) > 30.
//
// Every rule whose filters match a message runs, in file order, on the
// publisher's goroutine before the publisher's acknowledgement. The
// actions of a rule form a pipeline: each gets the message as the previous
// one left it. Transforms change the message for the following actions
// only; subscribers of the original topic get it as it was published,
// unless a drop action (or on_error) stops it. split, aggregate and
// scatter_gather run the rest of the rule themselves: once per element, or
// on the combined message when it is complete (on a timer's goroutine,
// after the inputs were acknowledged: those runs cannot drop an original).
//
// # Errors
//
// An action that fails on a message (an expression error, a payload that is
// not what a transform expects, a failed lookup) is counted, logged and
// published as $events/rule/error, and then on_error decides: continue (the
// default) passes the message as it was to the next action; drop stops the
// rule and the message is not delivered; dead_letter stops the rule,
// publishes the original to $rules/{name}/dead with user properties error,
// original-topic and rule, and does not deliver it. A failing condition
// (when) means the rule's actions do not run.
//
// # Loops
//
// The engine publishes through inline clients whose ids carry the number
// of rules' outputs a message has passed (OriginRules + "/1" to "/8").
// Rules do not act on these messages unless they set chain: true, so a
// rule can never feed itself by accident; chain rules are bounded by
// MaxHops. The check costs one string comparison per message.
//
// # Trust
//
// Rules publish as the broker: the ACL does not apply to what they publish
// (whoever writes the rules decides), but a rule may not publish to the
// broker's $ topics, except answers to scatter-gather requests.
//
// # Durability
//
// The engine is a mochi hook placed before persistence. What a rule does
// for a QoS 1/2 message is durable before the publisher's PUBACK:
// republished messages pass the persistence hooks themselves (InjectPacket
// returns once they are durable), history and bridge outbox writes join
// the publish's durability point (persistence.Hook.WaitFor; for a dropped
// message the engine waits itself, since mochi skips the later hooks).
// Aggregations and scatter-gathers in progress live in memory: a crash
// loses them, although their inputs were acknowledged. Reload emits the
// old set's open aggregations at once, marked incomplete (a message the old
// set was still handling is then emitted on its own); scatter-gathers keep
// waiting for their replies. Stop emits the aggregations and answers the
// scatter-gathers with what came.
//
// # Cost
//
// A message no rule's filters match costs one walk of a topic trie. For
// one that matches, the payload is parsed once (a hand-written JSON parser,
// held to encoding/json by FuzzParseJSON) and only if a matching rule reads
// json, and conditions made of comparisons, &&, ||, !, ?? and field access
// run as Go closures over the parsed payload instead of on expr's VM (held
// to the VM by FuzzNative). BenchmarkRules measures 100 rules, 10 matching
// each message, against none. An enrich http lookup that misses its cache
// waits, up to its timeout, on the publisher's goroutine: a slow lookup
// service slows the publishers whose messages need it.
//
// # Store
//
// The engine keeps in the broker's store (persistence.Store, no file of its
// own) the history of store actions under h␀{topic}␀{seq} and the enrich
// tables under e␀{table}␀{key}.
//
// # Events
//
// Events (on by default) are published by the client OriginEvents, QoS 0,
// not retained, to $events/client/connected, $events/client/disconnected,
// $events/session/subscribed, $events/session/unsubscribed,
// $events/message/dropped, $events/message/delivery_failed,
// $events/bridge/error and $events/rule/error. An event nobody subscribed
// to and no rule listens for is not even encoded. Clients may not publish
// under $events/ or $rules/ (except scatter-gather replies to
// $rules/reply/...); who may subscribe is the ACL's business, as for $SYS.
package rules
