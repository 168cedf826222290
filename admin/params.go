package admin

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Pagination: lists take limit (1 to maxLimit, default defaultLimit) and
// cursor (the next_cursor of the page before, opaque to clients).
const (
	defaultLimit = 100
	maxLimit     = 1000
	// previewBytes bounds the payload shown in lists (reading one item
	// shows it whole).
	previewBytes = 1024
)

// checkParams refuses query parameters the endpoint does not take, so a
// typo (?limt=5) is an error instead of being silently ignored.
func checkParams(q url.Values, allowed []string) error {
	for k := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return errorf(http.StatusBadRequest, "unknown query parameter %q: this endpoint takes none", k)
			}
			return errorf(http.StatusBadRequest, "unknown query parameter %q: this endpoint takes %s", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// page is a request's pagination.
type page struct {
	limit int
	after string // decoded cursor: the key of the last item of the page before ("" = from the start)
}

func parsePage(q url.Values) (page, error) {
	p := page{limit: defaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return p, errorf(http.StatusBadRequest, "limit %q: want a whole number from 1 to %d", v, maxLimit)
		}
		p.limit = n
	}
	if v := q.Get("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(b) == 0 {
			return p, errorf(http.StatusBadRequest, "cursor %q is not one this API gave: pass the next_cursor of the previous page unchanged", v)
		}
		p.after = string(b)
	}
	return p, nil
}

func cursorOf(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

// List is a page of items.
type List[T any] struct {
	Items      []T    `json:"items"`
	Total      int    `json:"total"`                 // items matching the request, on every page
	NextCursor string `json:"next_cursor,omitempty"` // absent on the last page
}

// paginate returns the page of items (sorted by key) after p.after.
func paginate[T any](items []T, key func(T) string, p page) List[T] {
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	start := 0
	if p.after != "" {
		start, _ = slices.BinarySearchFunc(items, p.after, func(it T, k string) int { return strings.Compare(key(it), k) })
		if start < len(items) && key(items[start]) == p.after {
			start++
		}
	}
	end := min(start+p.limit, len(items))
	out := List[T]{Items: items[start:end], Total: len(items)}
	if out.Items == nil {
		out.Items = []T{}
	}
	if end < len(items) {
		out.NextCursor = cursorOf(key(items[end-1]))
	}
	return out
}

// idAfter decodes a cursor made of a numeric id (queue and dead-letter
// pages).
func idAfter(p page) (uint64, error) {
	if p.after == "" {
		return 0, nil
	}
	id, err := strconv.ParseUint(p.after, 10, 64)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "cursor is not one this API gave for this list: pass the next_cursor of the previous page unchanged")
	}
	return id, nil
}

func idCursor(id uint64) string { return cursorOf(strconv.FormatUint(id, 10)) }

// boolParam parses an optional true/false parameter.
func boolParam(q url.Values, name string) (*bool, error) {
	v := q.Get(name)
	if v == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%s %q: use true or false", name, v)
	}
	return &b, nil
}

// countParam parses an optional count (0 = all) for actions on many
// messages.
func countParam(q url.Values, name string) (int, error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errorf(http.StatusBadRequest, "%s %q: want a whole number, 0 or more (0: all)", name, v)
	}
	return n, nil
}

// Message is a PUBLISH as the API shows it.
type Message struct {
	Topic string `json:"topic"`
	// Payload is the payload as UTF-8 text, or base64 when
	// PayloadEncoding is "base64" (it is not valid UTF-8).
	Payload         string      `json:"payload"`
	PayloadEncoding string      `json:"payload_encoding"`
	Size            int         `json:"size"`                // payload bytes
	Truncated       bool        `json:"truncated,omitempty"` // Payload holds the first bytes only
	QoS             byte        `json:"qos"`
	Retain          bool        `json:"retain,omitempty"`
	Properties      *Properties `json:"properties,omitempty"`
	Publisher       string      `json:"publisher,omitempty"` // client id of the publisher, where known
	Created         *time.Time  `json:"created,omitempty"`
}

// Properties are a message's MQTT 5 properties.
type Properties struct {
	ContentType     string         `json:"content_type,omitempty"`
	ResponseTopic   string         `json:"response_topic,omitempty"`
	CorrelationData []byte         `json:"correlation_data,omitempty"` // base64 in JSON
	MessageExpiry   uint32         `json:"message_expiry,omitempty"`
	PayloadFormat   *byte          `json:"payload_format,omitempty"`
	UserProperties  []UserProperty `json:"user_properties,omitempty"`
}

// UserProperty is one MQTT 5 user property (keys may repeat).
type UserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// messageOf converts pk; limit > 0 cuts the payload to that many bytes.
func messageOf(pk packets.Packet, limit int) Message {
	m := Message{Topic: pk.TopicName, Size: len(pk.Payload), QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain, Publisher: pk.Origin}
	payload := pk.Payload
	if limit > 0 && len(payload) > limit {
		payload = payload[:limit]
		m.Truncated = true
	}
	if text := trimPartialRune(payload); utf8.Valid(text) && (m.Truncated || len(text) == len(payload)) {
		m.Payload, m.PayloadEncoding = string(text), "utf8"
	} else {
		m.Payload, m.PayloadEncoding = base64.StdEncoding.EncodeToString(payload), "base64"
	}
	if pk.Created > 0 {
		t := time.Unix(pk.Created, 0).UTC()
		m.Created = &t
	}
	p := pk.Properties
	props := Properties{
		ContentType:     p.ContentType,
		ResponseTopic:   p.ResponseTopic,
		CorrelationData: p.CorrelationData,
		MessageExpiry:   p.MessageExpiryInterval,
	}
	if p.PayloadFormatFlag {
		f := p.PayloadFormat
		props.PayloadFormat = &f
	}
	for _, u := range p.User {
		props.UserProperties = append(props.UserProperties, UserProperty{Key: u.Key, Value: u.Val})
	}
	if props.ContentType != "" || props.ResponseTopic != "" || props.CorrelationData != nil || props.MessageExpiry != 0 || props.PayloadFormat != nil || props.UserProperties != nil {
		m.Properties = &props
	}
	return m
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of b (a
// payload cut in the middle of a character).
func trimPartialRune(b []byte) []byte {
	for i := 0; i < utf8.UTFMax && len(b) > 0; i++ {
		if utf8.Valid(b) {
			return b
		}
		b = b[:len(b)-1]
	}
	return b
}

// rawJSON is a body written as is.
type rawJSON []byte

// MarshalJSON returns the bytes.
func (r rawJSON) MarshalJSON() ([]byte, error) {
	if !json.Valid(r) {
		return nil, fmt.Errorf("admin: invalid JSON document")
	}
	return r, nil
}
