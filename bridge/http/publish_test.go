package http

import (
	"io"
	"log/slog"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/motemq/mote/auth"
)

// While the broker is not ready (starting or shutting down) a publish gets
// 503 with a reason, never a 500.
func TestPublishAPINotReady(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	server := mqtt.New(&mqtt.Options{InlineClient: true, Logger: log})
	anyone := true
	a, err := auth.New(auth.Config{AllowAnonymous: &anyone}, server, log)
	if err != nil {
		t.Fatal(err)
	}
	api := NewPublishAPI(server, a, 1<<20, log)
	ready := false
	api.Ready = func() bool { return ready }
	mux := nethttp.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := nethttp.Post(srv.URL+"/api/v1/publish", "application/json", strings.NewReader(`{"topic":"a","payload":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != nethttp.StatusServiceUnavailable || !strings.Contains(string(body), "not accepting messages") {
		t.Fatalf("HTTP %d %s, want 503 with a reason", resp.StatusCode, body)
	}
}
