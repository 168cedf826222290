package broker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// post sends body to the broker's HTTP listener and returns the status and
// the decoded JSON answer.
func post(t *testing.T, b *broker.Broker, path, contentType, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+b.Addr(broker.ListenerHTTP)+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: answer is not JSON: %q", path, raw)
	}
	return resp.StatusCode, out
}

func TestPublishAPI(t *testing.T) {
	b := brokertest.Start(t)
	sub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "api-sub", Clean: true})
	sub.Sub(t, 2, "api/#")

	t.Run("json", func(t *testing.T) {
		status, out := post(t, b, "/api/v1/publish", "application/json",
			`{"topic":"api/json","payload":"hello","qos":1,"properties":{"content_type":"text/plain","user_properties":{"a":"1","b":"2"},"correlation_data":"AQI=","response_topic":"api/reply"}}`)
		if status != http.StatusOK || out["durable"] != true || out["qos"] != 1.0 {
			t.Fatalf("status %d answer %v", status, out)
		}
		m := sub.Next(t, wait)
		if m.Topic != "api/json" || string(m.Payload) != "hello" || m.QoS != 1 {
			t.Fatalf("got %q %q qos %d", m.Topic, m.Payload, m.QoS)
		}
		p := m.Props
		if p.ContentType != "text/plain" || p.ResponseTopic != "api/reply" || !bytes.Equal(p.CorrelationData, []byte{1, 2}) ||
			len(p.User) != 2 || p.User[0].Key != "a" || p.User[1].Value != "2" {
			t.Fatalf("properties %+v", p)
		}
	})

	t.Run("raw with retain", func(t *testing.T) {
		status, out := post(t, b, "/api/v1/publish/api/raw/x?qos=2&retain=true", "application/octet-stream", "\x00\x01binary")
		if status != http.StatusOK || out["topic"] != "api/raw/x" {
			t.Fatalf("status %d answer %v", status, out)
		}
		m := sub.Next(t, wait)
		if m.Topic != "api/raw/x" || string(m.Payload) != "\x00\x01binary" || m.QoS != 2 || m.Props.ContentType != "application/octet-stream" {
			t.Fatalf("got %q %q qos %d props %+v", m.Topic, m.Payload, m.QoS, m.Props)
		}
		late := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "api-late", Clean: true})
		late.Sub(t, 1, "api/raw/#")
		if r := late.Next(t, wait); !r.Retain || string(r.Payload) != "\x00\x01binary" {
			t.Fatalf("retained: %+v", r)
		}
	})

	t.Run("batch", func(t *testing.T) {
		status, out := post(t, b, "/api/v1/publish", "application/json",
			`[{"topic":"api/b/1","payload":"one"},{"topic":"api/b/+","payload":"bad"},{"topic":"api/b/3","payload":"dGhyZWU=","payload_encoding":"base64","qos":0}]`)
		if status != http.StatusMultiStatus {
			t.Fatalf("status %d, want 207: %v", status, out)
		}
		res := out["results"].([]any)
		if len(res) != 3 || res[1].(map[string]any)["error"] == nil || res[0].(map[string]any)["error"] != nil {
			t.Fatalf("results %v", res)
		}
		// QoS 0 and QoS 1 messages on different topics may arrive in either order.
		got := map[string]bool{}
		for range 2 {
			got[string(sub.Next(t, wait).Payload)] = true
		}
		if !got["one"] || !got["three"] {
			t.Fatalf("batch delivered %v, want one and three", got)
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, body string
			status           int
			want             string
		}{
			{"wildcard", "/api/v1/publish", `{"topic":"a/#","payload":"x"}`, 400, "wildcards"},
			{"sys", "/api/v1/publish", `{"topic":"$SYS/x","payload":"x"}`, 400, "broker's"},
			{"no topic", "/api/v1/publish", `{"payload":"x"}`, 400, "topic: missing"},
			{"qos 3", "/api/v1/publish", `{"topic":"a","qos":3}`, 400, "qos 3"},
			{"bad base64", "/api/v1/publish", `{"topic":"a","payload":"%%%","payload_encoding":"base64"}`, 400, "base64"},
			{"unknown field", "/api/v1/publish", `{"topic":"a","colour":"red"}`, 400, "unknown field"},
			{"not json", "/api/v1/publish", `topic=a`, 400, "body"},
			{"raw bad qos", "/api/v1/publish/a?qos=9", "x", 400, "qos"},
			{"too big", "/api/v1/publish/a", strings.Repeat("x", 2<<20), 413, "larger than"},
		} {
			status, out := post(t, b, tc.path, "application/json", tc.body)
			if status != tc.status || !strings.Contains(fmt.Sprint(out["error"]), tc.want) {
				t.Errorf("%s: status %d error %v, want %d containing %q", tc.name, status, out["error"], tc.status, tc.want)
			}
		}
		if m, ok := sub.Try(200 * time.Millisecond); ok {
			t.Fatalf("a refused publish was delivered: %q", m.Topic)
		}
	})
}

// The publish API authenticates like CONNECT and applies the same ACL.
func TestPublishAPIAuth(t *testing.T) {
	dir := t.TempDir()
	users := writeUsers(t, filepath.Join(dir, "passwd"), user{name: "svc", password: "pw-svc"})
	b := secure(t, func(c *broker.Config) {
		c.Auth.AllowAnonymous = boolp(false)
		c.Auth.UsersFile = users
		c.Auth.ACL = []broker.ACLRule{{Permission: "allow", User: "svc", Action: "pub", Topic: "svc/#"}}
	})
	body := func(topic string) string { return `{"topic":"` + topic + `","payload":"x"}` }
	if status, out := post(t, b, "/api/v1/publish", "application/json", body("svc/a")); status != http.StatusUnauthorized {
		t.Fatalf("anonymous: status %d %v, want 401", status, out)
	}
	if status, _ := post(t, b, "/api/v1/publish", "application/json", body("svc/a"), "Authorization", "Basic c3ZjOndyb25n"); status != http.StatusUnauthorized {
		t.Fatalf("wrong password: status %d, want 401", status)
	}
	basic := "Basic c3ZjOnB3LXN2Yw==" // svc:pw-svc
	if status, out := post(t, b, "/api/v1/publish", "application/json", body("svc/a"), "Authorization", basic); status != http.StatusOK {
		t.Fatalf("svc: status %d %v, want 200", status, out)
	}
	if status, out := post(t, b, "/api/v1/publish", "application/json", body("other/a"), "Authorization", basic); status != http.StatusForbidden {
		t.Fatalf("svc outside its ACL: status %d %v, want 403", status, out)
	}
}
