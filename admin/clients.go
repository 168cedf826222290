package admin

import (
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/internal/retaingate"
	topics "github.com/motemq/mote/internal/topic"
)

// Client is a client session as listed.
type Client struct {
	ID              string     `json:"id"`
	Username        string     `json:"username"`
	Connected       bool       `json:"connected"`
	Listener        string     `json:"listener"`
	Remote          string     `json:"remote"`
	ProtocolVersion byte       `json:"protocol_version"`
	Clean           bool       `json:"clean"`
	Keepalive       uint16     `json:"keepalive"`
	SessionExpiry   uint32     `json:"session_expiry"` // seconds (MQTT 5)
	Subscriptions   int        `json:"subscriptions"`
	Inflight        int        `json:"inflight"` // QoS 1/2 messages either way awaiting their acknowledgement
	DisconnectedAt  *time.Time `json:"disconnected_at,omitempty"`
}

// ClientDetail is one client with its subscriptions and in-flight messages.
type ClientDetail struct {
	Client
	SubscriptionList []Subscription `json:"subscription_list"`
	// InflightMessages are the first 100 in-flight messages.
	InflightMessages []InflightMessage `json:"inflight_messages"`
	// Queued is how many messages the session holds for the client (queued
	// and in flight), when the broker reports it.
	Queued *int    `json:"queued,omitempty"`
	Will   *string `json:"will_topic,omitempty"`
}

// InflightMessage is a QoS 1/2 message awaiting its acknowledgement.
type InflightMessage struct {
	PacketID uint16 `json:"packet_id"`
	Type     string `json:"type"` // publish, pubrec, pubrel
	Topic    string `json:"topic,omitempty"`
	QoS      byte   `json:"qos"`
	Size     int    `json:"size"`
}

// Subscription is one client's subscription.
type Subscription struct {
	Client            string `json:"client"`
	Filter            string `json:"filter"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	RetainHandling    byte   `json:"retain_handling,omitempty"`
	Identifier        int    `json:"identifier,omitempty"`
	Group             string `json:"share_group,omitempty"` // $share/{group}/... : a queue
}

func clientOf(cl *mqtt.Client) Client {
	c := Client{
		ID:              cl.ID,
		Username:        string(cl.Properties.Username),
		Connected:       !cl.Closed(),
		Listener:        cl.Net.Listener,
		Remote:          cl.Net.Remote,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Clean:           cl.Properties.Clean,
		Keepalive:       cl.State.Keepalive,
		SessionExpiry:   cl.Properties.Props.SessionExpiryInterval,
		Subscriptions:   cl.State.Subscriptions.Len(),
		Inflight:        cl.State.Inflight.Len(),
	}
	if !c.Connected {
		if t := cl.StopTime(); t > 0 {
			at := time.Unix(t, 0).UTC()
			c.DisconnectedAt = &at
		}
	}
	return c
}

func (a *API) listClients(r *http.Request) (any, error) {
	q := r.URL.Query()
	p, err := parsePage(q)
	if err != nil {
		return nil, err
	}
	connected, err := boolParam(q, "connected")
	if err != nil {
		return nil, err
	}
	user, listener, search := q.Get("username"), q.Get("listener"), strings.ToLower(q.Get("q"))
	var out []Client
	for _, cl := range a.o.Server.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		c := clientOf(cl)
		switch {
		case connected != nil && c.Connected != *connected,
			user != "" && c.Username != user,
			listener != "" && c.Listener != listener,
			search != "" && !strings.Contains(strings.ToLower(c.ID+"\x00"+c.Username+"\x00"+c.Remote), search):
			continue
		}
		out = append(out, c)
	}
	return paginate(out, func(c Client) string { return c.ID }, p), nil
}

func (a *API) client(r *http.Request) (*mqtt.Client, error) {
	id := r.PathValue("id")
	cl, ok := a.o.Server.Clients.Get(id)
	if !ok || cl.Net.Inline {
		return nil, errorf(http.StatusNotFound, "no client %q: list them with GET /api/v1/clients", id)
	}
	return cl, nil
}

func (a *API) getClient(r *http.Request) (any, error) {
	cl, err := a.client(r)
	if err != nil {
		return nil, err
	}
	d := ClientDetail{Client: clientOf(cl), SubscriptionList: subscriptionsOf(cl), InflightMessages: []InflightMessage{}}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if len(d.InflightMessages) == 100 {
			break
		}
		m := InflightMessage{PacketID: pk.PacketID, Type: strings.ToLower(packets.PacketNames[pk.FixedHeader.Type]), QoS: pk.FixedHeader.Qos}
		if pk.FixedHeader.Type == packets.Publish {
			m.Topic, m.Size = pk.TopicName, len(pk.Payload)
		}
		d.InflightMessages = append(d.InflightMessages, m)
	}
	if a.o.Queued != nil {
		if n, ok := a.o.Queued(cl.ID); ok {
			d.Queued = &n
		}
	}
	if cl.Properties.Will.Flag > 0 {
		t := cl.Properties.Will.TopicName
		d.Will = &t
	}
	return d, nil
}

func subscriptionsOf(cl *mqtt.Client) []Subscription {
	out := []Subscription{}
	for filter, sub := range cl.State.Subscriptions.GetAll() {
		s := Subscription{
			Client:            cl.ID,
			Filter:            filter,
			QoS:               sub.Qos,
			NoLocal:           sub.NoLocal,
			RetainAsPublished: sub.RetainAsPublished,
			RetainHandling:    sub.RetainHandling,
			Identifier:        sub.Identifier,
		}
		if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
			s.Group, _, _ = strings.Cut(rest, "/")
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Subscription) int { return strings.Compare(a.Filter, b.Filter) })
	return out
}

func (a *API) disconnectClient(r *http.Request) (any, error) {
	cl, err := a.client(r)
	if err != nil {
		return nil, err
	}
	if cl.Closed() {
		return nil, errorf(http.StatusConflict, "client %q is not connected (its session stays until it expires)", cl.ID)
	}
	// MQTT 5 clients learn why: DISCONNECT 0x98 "administrative action".
	_ = a.o.Server.DisconnectClient(cl, packets.ErrAdministrativeAction) // returns the code it was given
	a.o.Log.Info("client disconnected by the admin API", "client", cl.ID, "remote", cl.Net.Remote)
	return map[string]any{"client": cl.ID, "disconnected": true}, nil
}

func (a *API) listSubscriptions(r *http.Request) (any, error) {
	q := r.URL.Query()
	p, err := parsePage(q)
	if err != nil {
		return nil, err
	}
	client, filter, topic := q.Get("client"), q.Get("filter"), q.Get("topic")
	if topic != "" {
		if err := checkTopic(topic); err != nil {
			return nil, err
		}
	}
	var out []Subscription
	for _, cl := range a.o.Server.Clients.GetAll() {
		if cl.Net.Inline || client != "" && cl.ID != client {
			continue
		}
		for _, s := range subscriptionsOf(cl) {
			if filter != "" && s.Filter != filter {
				continue
			}
			if topic != "" && !topics.Match(shareless(s.Filter), topic) {
				continue
			}
			out = append(out, s)
		}
	}
	return paginate(out, func(s Subscription) string { return s.Client + "\x00" + s.Filter }, p), nil
}

// shareless is the topic filter of a subscription ($share/g/f → f).
func shareless(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			return f
		}
	}
	return filter
}

// Topic is a topic filter clients subscribe to.
type Topic struct {
	Filter      string   `json:"filter"`
	Subscribers int      `json:"subscribers"`
	Groups      []string `json:"share_groups,omitempty"` // queues ($share groups) on it
}

func (a *API) listTopics(r *http.Request) (any, error) {
	q := r.URL.Query()
	p, err := parsePage(q)
	if err != nil {
		return nil, err
	}
	prefix := q.Get("prefix")
	byFilter := map[string]*Topic{}
	for _, cl := range a.o.Server.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		for filter := range cl.State.Subscriptions.GetAll() {
			f := shareless(filter)
			if !strings.HasPrefix(f, prefix) {
				continue
			}
			t := byFilter[f]
			if t == nil {
				t = &Topic{Filter: f}
				byFilter[f] = t
			}
			t.Subscribers++
			if f != filter {
				g, _, _ := strings.Cut(strings.TrimPrefix(filter, "$share/"), "/")
				if !slices.Contains(t.Groups, g) {
					t.Groups = append(t.Groups, g)
				}
			}
		}
	}
	out := make([]Topic, 0, len(byFilter))
	for _, t := range byFilter {
		out = append(out, *t)
	}
	return paginate(out, func(t Topic) string { return t.Filter }, p), nil
}

// --- retained messages ------------------------------------------------------

func (a *API) listRetained(r *http.Request) (any, error) {
	q := r.URL.Query()
	p, err := parsePage(q)
	if err != nil {
		return nil, err
	}
	filter := q.Get("filter")
	if filter == "" {
		filter = "#"
	}
	if !topics.ValidFilter(filter) {
		return nil, errorf(http.StatusBadRequest, "filter %q is not a valid MQTT topic filter (levels separated by '/', '+' for one level, '#' last)", filter)
	}
	var out []Message
	// mochi's Topics.Messages reads the index unlocked (a data race with
	// retained writes); retaingate.Matching reads the locked map.
	for _, pk := range retaingate.Matching(a.o.Server.Topics, filter) {
		out = append(out, messageOf(pk, previewBytes))
	}
	return paginate(out, func(m Message) string { return m.Topic }, p), nil
}

func (a *API) retainedTopic(r *http.Request) (string, packets.Packet, error) {
	topic := r.PathValue("topic")
	if err := checkTopic(topic); err != nil {
		return topic, packets.Packet{}, err
	}
	pk, ok := a.o.Server.Topics.Retained.Get(topic)
	if !ok {
		return topic, pk, errorf(http.StatusNotFound, "no retained message on %q (list them with GET /api/v1/retained?filter=%%23)", topic)
	}
	return topic, pk, nil
}

func (a *API) getRetained(r *http.Request) (any, error) {
	_, pk, err := a.retainedTopic(r)
	if err != nil {
		return nil, err
	}
	return messageOf(pk, 0), nil
}

// deleteRetained clears the message as a client would, with an empty
// retained publish, so the store and the hooks see the same thing.
func (a *API) deleteRetained(r *http.Request) (any, error) {
	topic, _, err := a.retainedTopic(r)
	if err != nil {
		return nil, err
	}
	if err := a.o.Server.Publish(topic, nil, true, 0); err != nil {
		return nil, err
	}
	a.o.Log.Info("retained message deleted by the admin API", "topic", topic)
	return map[string]any{"topic": topic, "deleted": true}, nil
}

// checkTopic checks a topic name used to look something up ($ topics
// included).
func checkTopic(t string) error {
	switch {
	case t == "":
		return errorf(http.StatusBadRequest, "topic: missing (in a path, escape '/' as %%2F for empty levels)")
	case !utf8.ValidString(t) || strings.ContainsRune(t, 0):
		return errorf(http.StatusBadRequest, "topic %q: must be UTF-8 without NUL", t)
	case strings.ContainsAny(t, "+#"):
		return errorf(http.StatusBadRequest, "topic %q: a topic name has no wildcards (use a filter parameter to match many)", t)
	case len(t) > 65535:
		return errorf(http.StatusBadRequest, "topic: longer than 65535 bytes")
	}
	return nil
}
