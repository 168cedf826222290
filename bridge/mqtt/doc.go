// Package mqtt is a Mosquitto-style bridge from the local broker to a
// remote MQTT broker, over MQTT 5 (paho.golang) or MQTT 3.1.1
// (paho.mqtt.golang).
//
// Each entry of topics reads like a Mosquitto "topic pattern direction qos
// local_prefix remote_prefix" line:
//
//   - out: a local message on LocalPrefix+X (X matching Pattern) is
//     published on the remote as RemotePrefix+X at min(its QoS, the
//     topic's QoS); the first matching topic in config order decides. The
//     retain flag, the payload and, on MQTT 5, the properties cross (a
//     response topic with the local prefix gets the remote one, and the
//     message expiry is what is left of it). The outbound side is a
//     bridge.Sender: the bridge package keeps the messages in its durable
//     outbox and retries; Send returns nil only once the remote
//     acknowledged every message (PUBACK, PUBCOMP).
//   - in: the bridge subscribes on the remote to RemotePrefix+Pattern at
//     the topic's QoS, and publishes each message received on
//     RemotePrefix+X locally as LocalPrefix+X (same QoS and retain flag,
//     properties mapped back). It acknowledges the remote only once the
//     local publish returned nil, that is once the message is durable
//     here; until then the remote keeps it, and sends it again after a
//     reconnect.
//   - both: the two.
//
// # Sessions and connections
//
// By default the session on the remote is persistent (clean start off,
// with a session expiry on MQTT 5): while the bridge is away the remote
// keeps its subscriptions and queues QoS 1/2 messages for it. The bridge
// subscribes again after every connect anyway (on MQTT 5 with Retain
// Handling 1, so retained messages come only with a new subscription), and
// asks again with backoff for subscriptions the remote refused. It
// reconnects with jittered exponential backoff (reconnect_min to
// reconnect_max) until Stop; Stop sends DISCONNECT and keeps the session.
//
// # Loops
//
// A message the inbound side published locally is not sent back out: the
// broker skips, for this bridge's outbound side, messages whose origin is
// bridge.InboundOrigin(name). The other way round, when the directions
// overlap the remote would send the bridge's own messages back to its
// subscription. On MQTT 5 the bridge subscribes with No Local. MQTT 3.1.1
// has no such option: the bridge remembers for 30 s a fingerprint (topic
// and payload hash) of each message it published to a topic it subscribes
// to, at most 65536 of them, and drops one incoming message per
// fingerprint (Status.Echoed). The limits of that: a message that another
// client publishes on the remote with the same topic and payload within
// the 30 s, before the echo, is dropped instead of the echo (which then
// comes in); an echo delayed by more than 30 s, or pushed out by more than
// 65536 newer fingerprints, comes back in once. Prefer MQTT 5 when the
// directions overlap.
//
// # Delivery
//
// At least once, both ways: a reconnect may repeat messages. A message
// the local broker refuses for good (bridge.Permanent: ACL, invalid topic)
// is logged, counted in Status.Refused and acknowledged, since the remote
// cannot dead-letter it. Transient local failures are retried with the
// reconnect backoff. Incoming messages are published locally one at a
// time, in order.
//
// Known limit: packet identifiers of an MQTT 5 QoS 2 exchange are tracked
// in memory. If Mote restarts between the remote's PUBREC and its own
// PUBREL, the remote may take a new QoS 2 message that reuses the
// identifier as a duplicate [MQTT-4.3.3-10]. Topics with qos 1 (the
// default) are not affected.
//
// # Locks
//
// Bridge.mu guards the current connection and the last error and is never
// held across I/O; v4Remote.mu guards the connection being made; echoes.mu
// is a leaf. paho's locks are taken only inside paho calls, never while
// holding one of these.
package mqtt
