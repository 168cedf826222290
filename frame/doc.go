// Package frame checks client-to-server MQTT packets before mochi decodes them.
//
// mochi-mqtt/server v2.7.9 panics on some malformed input (a v5 SUBSCRIBE
// whose last filter has no options byte indexes past the end of the buffer,
// upstream issue #501) and accepts much that the MQTT specification says must
// close the connection (trailing bytes, duplicated properties, an empty topic
// with an unknown topic alias, CVE-2021-34432). Mote therefore wraps every
// client net.Conn: the wrapper cuts the inbound byte stream into whole packets
// with [Header] and asks a [Checker] about each one before mochi sees any byte
// of it.
//
//	c := frame.NewChecker(frame.Limits{MaxPacketSize: 1 << 20})
//	for {
//		// read until frame.Header(buf, max) reports complete (or an error),
//		// then until the buffer holds total bytes
//		if err := c.Check(buf[:total]); err != nil {
//			conn.Write(c.Reply(err)) // CONNACK or DISCONNECT, or nothing
//			conn.Close()
//			return
//		}
//		// hand buf[:total] to mochi
//	}
//
// # Contract
//
// Every packet Check accepts decodes through mochi's packets.Packet decoders
// (ConnectDecode, PublishDecode, SubscribeDecode, ... after
// FixedHeader.Decode, with ProtocolVersion set as mochi's Client.ReadPacket
// does) without a panic and without an error. FuzzCheck in this package
// asserts exactly that. Everything the MQTT 3.1, 3.1.1 and 5.0 specifications
// call a Malformed Packet or a Protocol Error is refused with an [*Error]
// carrying the MQTT 5 reason code the specification names; comments cite the
// conformance statements ([MQTT-x.y.z-n], MQTT 5.0 numbering unless a 3.1.1
// statement is named).
//
// Check does not refuse a SUBSCRIBE or UNSUBSCRIBE because a topic filter is
// semantically invalid (a/#/b, a+, $share/g): the broker answers those per
// filter in the SUBACK with 0x8F. [ValidFilter] and [ValidTopic] implement
// the filter and topic name rules for the broker to use.
//
// # Costs
//
// Check is allocation-free on the accepted path, except that the first topic
// alias a connection sets allocates a bitmap of TopicAliasMaximum bits (8 KiB
// at most) and a v5 CONNECT with an Authentication Method copies the method.
// A refused packet allocates its *Error.
//
// A Checker holds the state of one connection (protocol version, topic
// aliases set, CONNECT's Authentication Method and Session Expiry Interval)
// and is not safe for concurrent use; there are no locks in this package.
package frame
