// Package http bridges MQTT and HTTP. This file is the inbound side: the
// publish API on the broker's HTTP listener, through which web services
// publish MQTT messages with the same authentication, ACL and durability
// as an MQTT client.
package http

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	nethttp "net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/auth"
	"github.com/motemq/mote/bridge"
	topics "github.com/motemq/mote/internal/topic"
)

// PublishRequest is one message in the JSON forms of the publish API.
type PublishRequest struct {
	Topic string `json:"topic"`
	// Payload is text, or base64 when PayloadEncoding is "base64".
	Payload         string      `json:"payload"`
	PayloadEncoding string      `json:"payload_encoding"` // "" or "utf8" (default), "base64"
	QoS             *byte       `json:"qos"`              // default 1
	Retain          bool        `json:"retain"`
	Properties      *Properties `json:"properties"`
}

// Properties are the MQTT 5 properties a published message may carry.
type Properties struct {
	ContentType     string            `json:"content_type"`
	ResponseTopic   string            `json:"response_topic"`
	CorrelationData string            `json:"correlation_data"` // base64
	MessageExpiry   uint32            `json:"message_expiry"`   // seconds
	PayloadFormat   *byte             `json:"payload_format"`   // 0 bytes, 1 UTF-8
	UserProperties  map[string]string `json:"user_properties"`
}

// PublishResult is the answer for one message.
type PublishResult struct {
	Topic string `json:"topic"`
	QoS   byte   `json:"qos"`
	// Durable: the message was on disk (or went nowhere durable) when the
	// answer was written, as a QoS 1/2 PUBACK would say.
	Durable bool   `json:"durable"`
	Error   string `json:"error,omitempty"`
}

// PublishAPI serves POST /api/v1/publish (a JSON object, or an array of
// them) and POST /api/v1/publish/{topic...} (the body is the payload;
// ?qos=0|1|2&retain=true; Content-Type becomes the content type property).
type PublishAPI struct {
	server  *mqtt.Server
	inline  *mqtt.Client
	auth    *auth.Hook
	maxSize int64
	log     *slog.Logger
	// Ready, when set, reports whether the broker accepts messages; while
	// it is false (starting or shutting down) publishes get 503.
	Ready func() bool
}

// maxBatch bounds how many messages one batch request may carry.
const maxBatch = 1000

// NewPublishAPI returns the API; maxPacketSize bounds a payload (and, times
// maxBatch, a batch body).
func NewPublishAPI(server *mqtt.Server, a *auth.Hook, maxPacketSize int64, log *slog.Logger) *PublishAPI {
	return &PublishAPI{
		server:  server,
		inline:  server.NewClient(nil, mqtt.LocalListener, bridge.OriginHTTP, true),
		auth:    a,
		maxSize: maxPacketSize,
		log:     log,
	}
}

// Register adds the routes to mux.
func (p *PublishAPI) Register(mux *nethttp.ServeMux) {
	mux.HandleFunc("POST /api/v1/publish", p.publishJSON)
	mux.HandleFunc("POST /api/v1/publish/{topic...}", p.publishRaw)
}

// httpError is an error with its HTTP status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (p *PublishAPI) writeError(w nethttp.ResponseWriter, err error) {
	status := nethttp.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		status = he.status
	case errors.Is(err, auth.ErrUnauthenticated):
		status = nethttp.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Basic realm="mote", charset="UTF-8"`)
	case errors.Is(err, auth.ErrThrottled):
		status = nethttp.StatusTooManyRequests
		w.Header().Set("Retry-After", "10")
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w nethttp.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *PublishAPI) publishJSON(w nethttp.ResponseWriter, r *nethttp.Request) {
	id, err := p.auth.AuthenticateHTTP(r)
	if err != nil {
		p.writeError(w, err)
		return
	}
	body, err := readBody(r, p.maxSize*2+4096) // JSON and base64 inflate a payload
	if err != nil {
		p.writeError(w, err)
		return
	}
	trimmed := strings.TrimSpace(string(body))
	if strings.HasPrefix(trimmed, "[") {
		var reqs []PublishRequest
		if err := strictJSON(body, &reqs); err != nil {
			p.writeError(w, err)
			return
		}
		if len(reqs) == 0 || len(reqs) > maxBatch {
			p.writeError(w, fail(nethttp.StatusBadRequest, "a batch holds 1 to %d messages, not %d", maxBatch, len(reqs)))
			return
		}
		// Each message is checked and published on its own; the answer
		// lists every outcome (207 when some failed).
		results := make([]PublishResult, len(reqs))
		status := nethttp.StatusOK
		for i := range reqs {
			results[i], err = p.publish(id, &reqs[i])
			if err != nil {
				results[i].Error = fmt.Sprintf("[%d]: %v", i, err)
				status = nethttp.StatusMultiStatus
			}
		}
		writeJSON(w, status, map[string]any{"results": results})
		return
	}
	var req PublishRequest
	if err := strictJSON(body, &req); err != nil {
		p.writeError(w, err)
		return
	}
	res, err := p.publish(id, &req)
	if err != nil {
		p.writeError(w, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, res)
}

func (p *PublishAPI) publishRaw(w nethttp.ResponseWriter, r *nethttp.Request) {
	id, err := p.auth.AuthenticateHTTP(r)
	if err != nil {
		p.writeError(w, err)
		return
	}
	body, err := readBody(r, p.maxSize)
	if err != nil {
		p.writeError(w, err)
		return
	}
	req := PublishRequest{Topic: r.PathValue("topic"), Payload: base64.StdEncoding.EncodeToString(body), PayloadEncoding: "base64"}
	q := r.URL.Query()
	if v := q.Get("qos"); v != "" {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			p.writeError(w, fail(nethttp.StatusBadRequest, "qos %q: use 0, 1 or 2", v))
			return
		}
		b := byte(n)
		req.QoS = &b
	}
	if v := q.Get("retain"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			p.writeError(w, fail(nethttp.StatusBadRequest, "retain %q: use true or false", v))
			return
		}
		req.Retain = b
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Properties = &Properties{ContentType: ct}
	}
	res, err := p.publish(id, &req)
	if err != nil {
		p.writeError(w, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, res)
}

// publish checks one request and publishes it as the broker's HTTP client:
// for QoS 1/2 it returns once the message is durable (the persistence
// barrier runs for it as for an MQTT publish).
func (p *PublishAPI) publish(id auth.Identity, req *PublishRequest) (PublishResult, error) {
	if p.Ready != nil && !p.Ready() {
		return PublishResult{Topic: req.Topic}, fail(nethttp.StatusServiceUnavailable, "the broker is not accepting messages (starting or shutting down); retry")
	}
	pk, err := p.packet(req)
	if err != nil {
		return PublishResult{Topic: req.Topic}, err
	}
	res := PublishResult{Topic: pk.TopicName, QoS: pk.FixedHeader.Qos}
	if !p.auth.CanPublish(id, pk.TopicName) {
		return res, fail(nethttp.StatusForbidden, "not authorized to publish to %q", pk.TopicName)
	}
	if err := p.server.InjectPacket(p.inline, pk); err != nil {
		p.log.Error("http publish failed", "topic", pk.TopicName, "error", err)
		return res, fail(nethttp.StatusServiceUnavailable, "not published: %v", err)
	}
	res.Durable = true
	return res, nil
}

// packet builds and validates the MQTT message.
func (p *PublishAPI) packet(req *PublishRequest) (packets.Packet, error) {
	bad := func(format string, args ...any) (packets.Packet, error) {
		return packets.Packet{}, fail(nethttp.StatusBadRequest, format, args...)
	}
	t := req.Topic
	if err := topics.CheckName(t); err != nil {
		return bad("%v", err)
	}
	qos := byte(1)
	if req.QoS != nil {
		qos = *req.QoS
	}
	if qos > 2 {
		return bad("qos %d: use 0, 1 or 2", qos)
	}
	var payload []byte
	switch req.PayloadEncoding {
	case "", "utf8", "utf-8":
		payload = []byte(req.Payload)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(req.Payload)
		if err != nil {
			return bad("payload: not valid base64 (%v)", err)
		}
		payload = b
	default:
		return bad("payload_encoding %q: use utf8 or base64", req.PayloadEncoding)
	}
	if int64(len(payload)) > p.maxSize {
		return packets.Packet{}, fail(nethttp.StatusRequestEntityTooLarge, "payload of %d bytes is larger than mqtt.max_packet_size (%d)", len(payload), p.maxSize)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: req.Retain},
		TopicName:   t,
		Payload:     payload,
		PacketID:    uint16(min(qos, 1)), // mochi wants one for QoS > 0; the broker's client never uses it
	}
	if pr := req.Properties; pr != nil {
		pk.Properties.ContentType = pr.ContentType
		pk.Properties.ResponseTopic = pr.ResponseTopic
		if pr.ResponseTopic != "" && strings.ContainsAny(pr.ResponseTopic, "+#") {
			return bad("properties.response_topic %q: must not contain wildcards", pr.ResponseTopic)
		}
		if pr.CorrelationData != "" {
			b, err := base64.StdEncoding.DecodeString(pr.CorrelationData)
			if err != nil {
				return bad("properties.correlation_data: not valid base64 (%v)", err)
			}
			pk.Properties.CorrelationData = b
		}
		pk.Properties.MessageExpiryInterval = pr.MessageExpiry
		if pr.PayloadFormat != nil {
			if *pr.PayloadFormat > 1 {
				return bad("properties.payload_format %d: use 0 (bytes) or 1 (UTF-8)", *pr.PayloadFormat)
			}
			if *pr.PayloadFormat == 1 && !utf8.Valid(payload) {
				return bad("payload: not UTF-8 although payload_format is 1")
			}
			pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = *pr.PayloadFormat, true
		}
		for _, k := range slices.Sorted(maps.Keys(pr.UserProperties)) {
			pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: k, Val: pr.UserProperties[k]})
		}
	}
	return pk, nil
}

// readBody reads at most limit bytes.
func readBody(r *nethttp.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fail(nethttp.StatusBadRequest, "reading the body: %v", err)
	}
	if int64(len(b)) > limit {
		return nil, fail(nethttp.StatusRequestEntityTooLarge, "body larger than %d bytes (see mqtt.max_packet_size)", limit)
	}
	return b, nil
}

// strictJSON decodes one JSON value, refusing unknown fields.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail(nethttp.StatusBadRequest, "body: %v (see the publish API in README.md)", err)
	}
	if dec.More() {
		return fail(nethttp.StatusBadRequest, "body: more than one JSON value")
	}
	return nil
}
