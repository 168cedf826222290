package http

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/bridge"
)

type seen struct {
	method, path, ctype, auth string
	body                      []byte
}

// endpoint is a real HTTP server answering with status (and header h).
func endpoint(t *testing.T, status int, h map[string]string) (*httptest.Server, func() []seen) {
	t.Helper()
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), b})
		mu.Unlock()
		for k, v := range h {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("answer"))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seen { mu.Lock(); defer mu.Unlock(); return append([]seen(nil), got...) }
}

func msg(topic, payload string) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic, Payload: []byte(payload), Origin: "dev-7", Created: 1700000000,
		Properties: packets.Properties{ContentType: "text/plain", User: []packets.UserProperty{{Key: "k", Val: "v"}}},
	}
}

func TestWebhookRawWithURLTemplateAndHeaders(t *testing.T) {
	srv, got := endpoint(t, 204, nil)
	t.Setenv("MOTE_TEST_TOKEN", "s3cret")
	w, err := NewWebhook(WebhookConfig{URL: srv.URL + "/devices/{{level 1}}/{{client_id}}", Method: "PUT", Headers: map[string]string{"Authorization": "Bearer ${MOTE_TEST_TOKEN}"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(context.Background(), []packets.Packet{msg("sensors/42/temp", "21.5")}); err != nil {
		t.Fatal(err)
	}
	g := got()
	if len(g) != 1 || g[0].method != "PUT" || g[0].path != "/devices/42/dev-7" || string(g[0].body) != "21.5" ||
		g[0].ctype != "text/plain" || g[0].auth != "Bearer s3cret" {
		t.Fatalf("request %+v", g)
	}
}

func TestWebhookJSONEnvelopeAndBatch(t *testing.T) {
	srv, got := endpoint(t, 200, nil)
	w, err := NewWebhook(WebhookConfig{URL: srv.URL + "/in", Body: BodyJSON, Username: func(id string) string { return "user-of-" + id }})
	if err != nil {
		t.Fatal(err)
	}
	bin := msg("b/1", "\xff\xfe")
	if err := w.Send(context.Background(), []packets.Packet{msg("a/1", "hello"), bin}); err != nil {
		t.Fatal(err)
	}
	var envs []Envelope
	if err := json.Unmarshal(got()[0].body, &envs); err != nil {
		t.Fatal(err)
	}
	if len(envs) != 2 || envs[0].Payload != "hello" || envs[0].PayloadEncoding != "utf8" || envs[0].ClientID != "dev-7" || envs[0].Username != "user-of-dev-7" ||
		envs[0].UserProperties["k"] != "v" || envs[1].PayloadEncoding != "base64" || envs[1].Payload != "//4=" {
		t.Fatalf("envelopes %+v", envs)
	}
}

func TestWebhookTemplateBody(t *testing.T) {
	srv, got := endpoint(t, 200, nil)
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Body: BodyTemplate, Template: `{{.Topic}}={{.Payload}}`})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(context.Background(), []packets.Packet{msg("a/b", "x")}); err != nil {
		t.Fatal(err)
	}
	if b := string(got()[0].body); b != "a/b=x" {
		t.Fatalf("body %q", b)
	}
}

func TestWebhookStatusClasses(t *testing.T) {
	for _, tc := range []struct {
		status    int
		header    map[string]string
		permanent bool
		after     time.Duration
	}{
		{500, nil, false, 0},
		{503, map[string]string{"Retry-After": "7"}, false, 7 * time.Second},
		{429, map[string]string{"Retry-After": "2"}, false, 2 * time.Second},
		{408, nil, false, 0},
		{400, nil, true, 0},
		{404, nil, true, 0},
	} {
		srv, _ := endpoint(t, tc.status, tc.header)
		w, err := NewWebhook(WebhookConfig{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		err = w.Send(context.Background(), []packets.Packet{msg("a", "x")})
		if err == nil || !strings.Contains(err.Error(), "HTTP ") {
			t.Fatalf("HTTP %d: error %v", tc.status, err)
		}
		if got := bridge.IsPermanent(err); got != tc.permanent {
			t.Errorf("HTTP %d: permanent %v, want %v", tc.status, got, tc.permanent)
		}
		if d, _ := bridge.RetryAfterOf(err); d != tc.after {
			t.Errorf("HTTP %d: retry after %v, want %v", tc.status, d, tc.after)
		}
	}
	// A network error is retried.
	w, _ := NewWebhook(WebhookConfig{URL: "http://127.0.0.1:1/x", Timeout: time.Second})
	err := w.Send(context.Background(), []packets.Packet{msg("a", "x")})
	if err == nil || bridge.IsPermanent(err) {
		t.Fatalf("network error: %v", err)
	}
}

func TestWebhookConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  WebhookConfig
		want string
	}{
		{WebhookConfig{URL: "example.com/x"}, "missing scheme"},
		{WebhookConfig{URL: "http://x/{{level"}, "url"},
		{WebhookConfig{URL: "http://x", Body: "xml"}, "use raw, json or template"},
		{WebhookConfig{URL: "http://x", Body: BodyTemplate, Template: "{{.Nope"}, "template"},
	} {
		if _, err := NewWebhook(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
	_ = errors.New
}
