package http

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	nethttp "net/http"
	"os"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/bridge"
)

// Body formats of a webhook.
const (
	BodyRaw      = "raw"      // the payload as is (one message per request)
	BodyJSON     = "json"     // the JSON envelope (an array when batching)
	BodyTemplate = "template" // a text/template over the envelope
)

// WebhookConfig configures an outbound HTTP bridge.
type WebhookConfig struct {
	// URL may use {{level N}} (the Nth topic level, from 0), {{topic}} and
	// {{client_id}}; with batching it is rendered for the first message.
	URL     string
	Method  string            // default POST
	Headers map[string]string // values may use ${ENV}
	Timeout time.Duration     // default 10s
	Body    string            // raw (default), json or template
	// Template is the body template for BodyTemplate, over Envelope.
	Template string
	// Username, when set, names the publisher's user for the envelope.
	Username func(clientID string) string
}

// Envelope is the JSON form of a message.
type Envelope struct {
	Topic           string            `json:"topic"`
	Payload         string            `json:"payload"`
	PayloadEncoding string            `json:"payload_encoding"` // utf8 or base64
	QoS             byte              `json:"qos"`
	Retain          bool              `json:"retain"`
	ClientID        string            `json:"client_id,omitempty"`
	Username        string            `json:"username,omitempty"`
	Timestamp       time.Time         `json:"timestamp"`
	ContentType     string            `json:"content_type,omitempty"`
	ResponseTopic   string            `json:"response_topic,omitempty"`
	CorrelationData string            `json:"correlation_data,omitempty"` // base64
	UserProperties  map[string]string `json:"user_properties,omitempty"`
}

// NewEnvelope describes pk.
func NewEnvelope(pk packets.Packet) Envelope {
	e := Envelope{
		Topic:         pk.TopicName,
		QoS:           pk.FixedHeader.Qos,
		Retain:        pk.FixedHeader.Retain,
		ClientID:      pk.Origin,
		ContentType:   pk.Properties.ContentType,
		ResponseTopic: pk.Properties.ResponseTopic,
		Timestamp:     time.Unix(pk.Created, 0).UTC(),
	}
	if utf8.Valid(pk.Payload) {
		e.Payload, e.PayloadEncoding = string(pk.Payload), "utf8"
	} else {
		e.Payload, e.PayloadEncoding = base64.StdEncoding.EncodeToString(pk.Payload), "base64"
	}
	if len(pk.Properties.CorrelationData) > 0 {
		e.CorrelationData = base64.StdEncoding.EncodeToString(pk.Properties.CorrelationData)
	}
	if len(pk.Properties.User) > 0 {
		e.UserProperties = map[string]string{}
		for _, u := range pk.Properties.User {
			e.UserProperties[u.Key] = u.Val
		}
	}
	return e
}

// Webhook sends messages to an HTTP endpoint; it implements bridge.Sender.
type Webhook struct {
	cfg     WebhookConfig
	url     *template.Template
	body    *template.Template
	headers nethttp.Header
	client  *nethttp.Client
}

// NewWebhook checks cfg and returns the sender.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.Method == "" {
		cfg.Method = nethttp.MethodPost
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Body == "" {
		cfg.Body = BodyRaw
	}
	w := &Webhook{cfg: cfg, headers: nethttp.Header{}, client: &nethttp.Client{Timeout: cfg.Timeout}}
	u, err := template.New("url").Funcs(urlFuncs).Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %v", err)
	}
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("url %q: missing scheme (write http:// or https://)", cfg.URL)
	}
	w.url = u
	switch cfg.Body {
	case BodyRaw, BodyJSON:
	case BodyTemplate:
		t, err := template.New("body").Parse(cfg.Template)
		if err != nil {
			return nil, fmt.Errorf("template: %v", err)
		}
		w.body = t
	default:
		return nil, fmt.Errorf("body %q: use raw, json or template", cfg.Body)
	}
	for k, v := range cfg.Headers {
		w.headers.Set(k, os.ExpandEnv(v))
	}
	return w, nil
}

// urlFuncs are placeholders; renderURL supplies the message's values.
var urlFuncs = template.FuncMap{
	"level":     func(int) string { return "" },
	"topic":     func() string { return "" },
	"client_id": func() string { return "" },
}

func (w *Webhook) renderURL(pk packets.Packet) (string, error) { return w.render(w.url, pk) }

// render executes a template with the message's topic helpers.
func (w *Webhook) render(tpl *template.Template, pk packets.Packet) (string, error) {
	levels := strings.Split(pk.TopicName, "/")
	t, err := tpl.Clone()
	if err != nil {
		return "", err
	}
	t.Funcs(template.FuncMap{
		"level": func(n int) string {
			if n < 0 || n >= len(levels) {
				return ""
			}
			return levels[n]
		},
		"topic":     func() string { return pk.TopicName },
		"client_id": func() string { return pk.Origin },
	})
	var b strings.Builder
	if err := t.Execute(&b, nil); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Send posts msgs (one request; an array for the json body with several).
func (w *Webhook) Send(ctx context.Context, msgs []packets.Packet) error {
	if len(msgs) == 0 {
		return nil
	}
	req, err := w.request(ctx, msgs)
	if err != nil {
		return bridge.Permanent(err)
	}
	url := req.URL.String()
	resp, err := w.client.Do(req)
	if err != nil {
		return err // network: retried
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == nethttp.StatusRequestTimeout || code == nethttp.StatusTooManyRequests || code >= 500:
		err := fmt.Errorf("%s %s: HTTP %d: %s", w.cfg.Method, url, code, strings.TrimSpace(string(snippet)))
		if d := retryAfter(resp.Header.Get("Retry-After")); d > 0 {
			return bridge.RetryAfter(err, d)
		}
		return err
	default:
		return bridge.Permanent(fmt.Errorf("%s %s: HTTP %d: %s", w.cfg.Method, url, code, strings.TrimSpace(string(snippet))))
	}
}

// request builds the HTTP request for msgs.
// envelope describes pk, with its publisher's username when known.
func (w *Webhook) envelope(pk packets.Packet) Envelope {
	e := NewEnvelope(pk)
	if w.cfg.Username != nil && pk.Origin != "" {
		e.Username = w.cfg.Username(pk.Origin)
	}
	return e
}

func (w *Webhook) request(ctx context.Context, msgs []packets.Packet) (*nethttp.Request, error) {
	url, err := w.renderURL(msgs[0])
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	var body []byte
	ctype := "application/json"
	switch w.cfg.Body {
	case BodyRaw:
		body = msgs[0].Payload
		ctype = msgs[0].Properties.ContentType
		if ctype == "" {
			ctype = "application/octet-stream"
		}
	case BodyJSON:
		if len(msgs) == 1 {
			body, err = json.Marshal(w.envelope(msgs[0]))
		} else {
			envs := make([]Envelope, len(msgs))
			for i := range msgs {
				envs[i] = w.envelope(msgs[i])
			}
			body, err = json.Marshal(envs)
		}
	case BodyTemplate:
		var b bytes.Buffer
		err = w.body.Execute(&b, w.envelope(msgs[0]))
		body = b.Bytes()
		ctype = "text/plain; charset=utf-8"
	}
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	req, err := nethttp.NewRequestWithContext(ctx, w.cfg.Method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range w.headers {
		req.Header[k] = v
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req, nil
}

// retryAfter parses Retry-After (seconds or an HTTP date).
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := nethttp.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}
