// Package amqp bridges MQTT and RabbitMQ (AMQP 0-9-1) in both directions.
//
// MQTT → AMQP: a Sender (a bridge.Sender) publishes the messages of a
// bridge to one exchange, with publisher confirms and, by default, the
// mandatory flag, so that a message leaves the bridge's outbox only once
// RabbitMQ has taken it and routed it to a queue. AMQP → MQTT: a Consumer
// consumes one queue and publishes each message into the broker,
// acknowledging it only once the broker has it durably.
//
// # Mapping
//
// Routing keys and topics map by swapping '/' and '.' (TopicToKey,
// KeyToTopic), as RabbitMQ's MQTT plugin does; FilterToBindingKey maps an
// MQTT filter to a topic-exchange binding key. Templates can replace both
// mappings (Config.RoutingKey, Inbound.Topic).
//
// An MQTT message becomes an AMQP message with:
//
//	body            the payload
//	delivery_mode   2 (persistent) for QoS 1 and 2, 1 (transient) for QoS 0
//	message_id      bridge.MessageIDs: stable across retries, for deduplication
//	timestamp       when the broker received the message (seconds)
//	content_type    the MQTT 5 content type; none when the publisher set none
//	                (AMQP, like MQTT, then means opaque bytes)
//	correlation_id  the correlation data if UTF-8, else base64 with header
//	                mqtt-correlation-encoding: base64
//	reply_to        TopicToKey(response topic)
//	expiration      what is left of the message expiry interval, in ms
//	headers         the user properties (a repeated name becomes an array of
//	                strings), mqtt-topic, mqtt-qos, mqtt-client-id, and
//	                mqtt-retain when retained
//
// Values too long for AMQP's 255-byte fields go in headers instead
// (mqtt-correlation-data, mqtt-response-topic, mqtt-content-type). An AMQP
// message becomes an MQTT message the other way round: headers become user
// properties (stringified; Mote's own mqtt-* headers excepted), reply_to
// the response topic, expiration the message expiry interval (in seconds,
// rounded up). Its topic is the template's, or by default the mqtt-topic
// header when the message came from a Mote bridge (so it keeps its
// original topic whatever routing key it travelled with), or else
// KeyToTopic(routing key).
//
// # Exchange names
//
// exchange.name is required when the bridge has filters; amq.default names
// RabbitMQ's default exchange (""), which routes a message to the queue
// whose name is its routing key. An empty name is an error rather than the
// default exchange, because it is more likely a forgotten setting.
//
// # Concurrency
//
// A Sender may be used by several goroutines at once: each Send takes a
// publisher channel of its own from a pool. Sender.mu guards the current
// connection, its idle channels and the closed flag; Sender.dialing (a
// one-slot semaphore, taken before mu, never while holding it) lets one
// Send dial at a time while the others wait, honouring their contexts. A
// Consumer has one goroutine; Consumer.mu guards only its status. Calls
// into amqp091-go take no context: where they could block (a handshake, an
// RPC, a write stalled by TCP back-pressure) the connection's socket is
// closed when the caller's context ends, which makes them return.
package amqp
