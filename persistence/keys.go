package persistence

import (
	"fmt"
	"strconv"
	"strings"
)

// Key layout. Every key starts with a one-letter namespace and NUL; parts
// that come from clients (client ids, topics, filters) never contain NUL
// (the frame checker refuses U+0000), so NUL separates them unambiguously
// and a prefix scan of one client never sees another's keys.
//
//	c␀{client}                session
//	s␀{client}␀{filter}       subscription
//	q␀{client}␀{seq:16x}      message queued for (or in flight to) a session
//	i␀{client}␀{id:4x}{wal:16x} inbound QoS 2 message awaiting PUBREL (the WAL id keeps
//	                          a reused packet id from matching an older record)
//	r␀{topic}                 retained message (or a tombstone)
//	w␀{seq:16x}               write-ahead record of a message being routed
//	l␀{log}␀{id:16x}          durable log entry (queues, bridge outboxes)
//	y␀sys                     $SYS counters
//
// Namespaces other packages own in the same store (they write through
// Store.Write like everyone else):
//
//	b␀paused␀{bridge}         a paused bridge (bridge)
//	h␀{topic}␀{seq}           topic history of the rules' store action (rules)
//	e␀{table}␀{key}           enrich tables (rules)
const (
	nsSession  = "c\x00"
	nsSub      = "s\x00"
	nsQueue    = "q\x00"
	nsInbound  = "i\x00"
	nsRetained = "r\x00"
	nsWAL      = "w\x00"
	nsLog      = "l\x00"
	keySysInfo = "y\x00sys"
)

func hex16(v uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}

func parseHex(s string) (uint64, error) { return strconv.ParseUint(s, 16, 64) }

func sessionKey(client string) string     { return nsSession + client }
func subKey(client, filter string) string { return nsSub + client + "\x00" + filter }
func subPrefix(client string) string      { return nsSub + client + "\x00" }
func queueKey(client string, seq uint64) string {
	return nsQueue + client + "\x00" + hex16(seq)
}
func queuePrefix(client string) string { return nsQueue + client + "\x00" }
func inboundKey(client string, id uint16, wal uint64) string {
	return nsInbound + client + "\x00" + hex16(uint64(id))[12:] + hex16(wal)
}
func inboundPrefix(client string) string { return nsInbound + client + "\x00" }
func retainedKey(topic string) string    { return nsRetained + topic }
func walKey(seq uint64) string           { return nsWAL + hex16(seq) }
func logPrefix(name string) string       { return nsLog + name + "\x00" }

// splitClientKey splits "{ns}{client}␀{rest}" into client and rest.
func splitClientKey(key, ns string) (client, rest string, err error) {
	body := strings.TrimPrefix(key, ns)
	i := strings.LastIndexByte(body, 0)
	if i < 0 {
		return "", "", fmt.Errorf("%w: key %q", ErrCorruptRecord, key)
	}
	return body[:i], body[i+1:], nil
}
