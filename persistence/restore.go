package persistence

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// RestoreStats says what Restore brought back.
type RestoreStats struct {
	Sessions      int // persistent sessions restored
	Expired       int // sessions found expired and deleted
	Subscriptions int
	Queued        int // messages waiting for sessions (in flight or not)
	Inbound       int // inbound QoS 2 messages awaiting PUBREL
	Retained      int
	Replayed      int // messages whose routing a crash interrupted, routed again
	Dropped       int // expired messages dropped
	Orphans       int // records of sessions that no longer exist, deleted
}

// Restore loads the store into the broker: sessions (as disconnected
// clients with their subscriptions, in-flight and queued messages, original
// packet ids kept), retained messages and $SYS counters; then it routes again
// every message whose routing a crash interrupted. Call it after every hook
// is added and before the server's Serve.
//
// mochi's own restore path (the Stored* hooks) is not used: it restores a
// session's in-flight messages but its resume clones them into the new
// connection with the quota reset and resends them in random order, and it
// has no write-ahead records to replay.
func (h *Hook) Restore() (RestoreStats, error) {
	var st RestoreStats
	now := time.Now().Unix()
	var maxSeq uint64
	seen := func(v uint64) {
		if v > maxSeq {
			maxSeq = v
		}
	}
	var firstErr error
	fail := func(key string, err error) bool {
		if firstErr == nil {
			firstErr = fmt.Errorf("persistence: restore %q: %w (the store was written by an incompatible version or damaged; move %s aside to start empty)", key, err, h.store.Path())
		}
		return false
	}
	var del []Op

	// Sessions.
	clients := map[string]*mqtt.Client{}
	err := h.store.Scan(nsSession, func(k, v string) bool {
		var rec sessionRecord
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return fail(k, err)
		}
		if rec.Disconnected > 0 && rec.Disconnected+int64(rec.Expiry) < now {
			st.Expired++
			del = append(del, Del(k))
			return true
		}
		cl := h.server.NewClient(nil, rec.Listener, rec.ID, false)
		cl.Properties.Username = rec.Username
		cl.Properties.ProtocolVersion = rec.Protocol
		cl.Properties.Clean = rec.Clean
		cl.Properties.Props.ReceiveMaximum = rec.ReceiveMaximum
		if rec.Protocol == 5 {
			cl.Properties.Props.SessionExpiryInterval = rec.Expiry
			cl.Properties.Props.SessionExpiryIntervalFlag = true
		}
		cl.Stop(packets.ErrServerShuttingDown) // not connected; starts mochi's expiry clock
		forceQuota(cl)
		h.server.Clients.Add(cl)
		clients[rec.ID] = cl
		s := newSession(h, rec.ID)
		s.cl, s.username, s.listener, s.proto, s.clean, s.expiry = cl, rec.Username, rec.Listener, rec.Protocol, rec.Clean, rec.Expiry
		s.window = h.opts.MaxInflight
		s.have = map[uint64]bool{}
		h.setPersistent(s, true)
		h.addSession(s)
		st.Sessions++
		return true
	})
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return st, err
	}

	// Subscriptions.
	err = h.store.Scan(nsSub, func(k, v string) bool {
		client, _, err := splitClientKey(k, nsSub)
		if err != nil {
			return fail(k, err)
		}
		cl := clients[client]
		if cl == nil {
			st.Orphans++
			del = append(del, Del(k))
			return true
		}
		var rec subRecord
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return fail(k, err)
		}
		sub := packets.Subscription{
			Filter: rec.Filter, Qos: rec.Qos, Identifier: rec.Identifier, NoLocal: rec.NoLocal,
			RetainAsPublished: rec.RetainAsPublished, RetainHandling: rec.RetainHandling,
		}
		if h.server.Topics.Subscribe(client, sub) {
			atomic.AddInt64(&h.server.Info.Subscriptions, 1)
		}
		cl.State.Subscriptions.Add(sub.Filter, sub)
		st.Subscriptions++
		return true
	})
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return st, err
	}

	// Write-ahead records: messages whose routing may not have finished.
	type replay struct {
		key  string
		stub string
		rec  *record
	}
	var replays []replay
	walSet := map[uint64]bool{}
	err = h.store.Scan(nsWAL, func(k, v string) bool {
		rec, err := decodeRecord(v)
		if err != nil {
			return fail(k, err)
		}
		seen(rec.WAL)
		walSet[rec.WAL] = true
		replays = append(replays, replay{key: k, rec: rec})
		return true
	})
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return st, err
	}

	// Inbound QoS 2 messages from persistent sessions.
	err = h.store.Scan(nsInbound, func(k, v string) bool {
		client, _, err := splitClientKey(k, nsInbound)
		if err != nil {
			return fail(k, err)
		}
		rec, err := decodeRecord(v)
		if err != nil {
			return fail(k, err)
		}
		seen(rec.WAL)
		s := h.session(client)
		if s == nil {
			st.Orphans++
			del = append(del, Del(k))
			return true
		}
		if rec.State == inUnrouted {
			walSet[rec.WAL] = true
			stub := record{WAL: rec.WAL, Seq: rec.Seq, State: inRouted, PacketID: rec.PacketID}
			stub.Packet.FixedHeader.Qos = 2
			replays = append(replays, replay{key: k, stub: string(encodeRecord(nil, &stub)), rec: rec})
		}
		s.inbound[rec.PacketID] = rec.WAL
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: rec.PacketID, Created: now}
		if s.cl.State.Inflight.Set(ack) {
			atomic.AddInt64(&h.server.Info.Inflight, 1)
		}
		st.Inbound++
		return true
	})
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return st, err
	}

	// Queued and in-flight messages, in order.
	err = h.store.Scan(nsQueue, func(k, v string) bool {
		client, _, err := splitClientKey(k, nsQueue)
		if err != nil {
			return fail(k, err)
		}
		rec, err := decodeRecord(v)
		if err != nil {
			return fail(k, err)
		}
		seen(rec.Seq)
		seen(rec.WAL)
		s := h.session(client)
		if s == nil {
			st.Orphans++
			del = append(del, Del(k))
			return true
		}
		if expired(&rec.Packet, now) {
			st.Dropped++
			del = append(del, Del(k))
			return true
		}
		if walSet[rec.WAL] {
			s.have[rec.WAL] = true
		}
		e := &entry{seq: rec.Seq, wal: rec.WAL, pk: rec.Packet}
		if (rec.State == qSent || rec.State == qPubrel) && rec.PacketID != 0 && s.outstanding[rec.PacketID] == nil {
			e.id = rec.PacketID
			e.owner = s.cl
			e.state = stSent
			p := e.pk
			p.PacketID = e.id
			if rec.State == qPubrel {
				e.state = stPubrel
				p = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: e.id, Created: now}
			}
			if s.cl.State.Inflight.Set(p) {
				atomic.AddInt64(&h.server.Info.Inflight, 1)
			}
			s.outstanding[e.id] = e
			s.byID[e.id] = e
		} else {
			e.state = stPending
			s.pending = append(s.pending, e)
		}
		st.Queued++
		return true
	})
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return st, err
	}

	// Retained messages.
	retainedSeq := map[string]uint64{}
	var tombstones []Op
	err = h.store.Scan(nsRetained, func(k, v string) bool {
		rec, err := decodeRecord(v)
		if err != nil {
			return fail(k, err)
		}
		seen(rec.Seq)
		topic := k[len(nsRetained):]
		retainedSeq[topic] = rec.Seq
		if rec.State == retTombstone {
			tombstones = append(tombstones, Del(k))
			return true
		}
		pk := rec.Packet
		pk.TopicName = topic
		pk.FixedHeader.Retain = true
		if expired(&pk, now) {
			tombstones = append(tombstones, Del(k))
			return true
		}
		h.server.Topics.RetainMessage(pk)
		st.Retained++
		return true
	})
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return st, err
	}
	atomic.StoreInt64(&h.server.Info.Retained, int64(h.server.Topics.Retained.Len()))

	// $SYS counters that describe the broker's whole life.
	if v, ok, err := h.store.Get(keySysInfo); err == nil && ok {
		var info system.Info
		if json.Unmarshal([]byte(v), &info) == nil {
			restoreInfo(h.server.Info, &info)
		}
	}

	h.seq.Store(maxSeq)
	if len(del) > 0 {
		h.store.Write(del...)
	}

	// Route again what a crash interrupted, oldest first, into the restored
	// (offline) sessions; a session that has the message queued already
	// (s.have) is skipped, so nothing is delivered twice.
	sort.Slice(replays, func(i, j int) bool { return replays[i].rec.WAL < replays[j].rec.WAL })
	if len(replays) > 0 {
		h.replayOrigin = make(map[uint64]string, len(replays))
		for _, r := range replays {
			h.replayOrigin[r.rec.WAL] = r.rec.Packet.Origin
			h.wal[r.rec.WAL] = &walEntry{id: r.rec.WAL, key: r.key, stub: r.stub}
		}
		inline := h.server.NewClient(nil, mqtt.LocalListener, "mote-replay", true)
		inline.Properties.ProtocolVersion = 5
		h.replaying.Store(true)
		for _, r := range replays {
			pk := r.rec.Packet
			pk.FixedHeader.Type = packets.Publish
			pk.FixedHeader.Retain = pk.FixedHeader.Retain && retainedSeq[pk.TopicName] < r.rec.WAL
			if pk.PacketID == 0 {
				pk.PacketID = 1 // validation wants one for QoS > 0; the inline path ignores it
			}
			tag(&pk, r.rec.WAL)
			if err := h.server.InjectPacket(inline, pk); err != nil {
				h.replaying.Store(false)
				return st, fmt.Errorf("persistence: replay message %d on %q: %w", r.rec.WAL, pk.TopicName, err)
			}
			st.Replayed++
			h.Counters.Replayed.Add(1)
		}
		h.replaying.Store(false)
		h.replayOrigin = nil
	}
	h.eachSession(func(s *session) {
		s.mu.Lock()
		s.have = nil
		s.mu.Unlock()
	})
	// Tombstones guard retained topics against older replays; once replays
	// are durably retired they can go.
	if err := h.store.Flush(); err != nil {
		return st, err
	}
	if len(tombstones) > 0 {
		h.store.Write(tombstones...)
	}
	h.Counters.SessionsRestore.Add(uint64(st.Sessions))
	return st, nil
}

func restoreInfo(dst *system.Info, v *system.Info) {
	atomic.StoreInt64(&dst.BytesReceived, v.BytesReceived)
	atomic.StoreInt64(&dst.BytesSent, v.BytesSent)
	atomic.StoreInt64(&dst.ClientsMaximum, v.ClientsMaximum)
	atomic.StoreInt64(&dst.MessagesReceived, v.MessagesReceived)
	atomic.StoreInt64(&dst.MessagesSent, v.MessagesSent)
	atomic.StoreInt64(&dst.MessagesDropped, v.MessagesDropped)
	atomic.StoreInt64(&dst.PacketsReceived, v.PacketsReceived)
	atomic.StoreInt64(&dst.PacketsSent, v.PacketsSent)
	atomic.StoreInt64(&dst.InflightDropped, v.InflightDropped)
}
