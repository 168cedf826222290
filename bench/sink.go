package bench

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// startSink serves the webhook scenario's HTTP endpoint on cfg.Sink: every
// accepted request is one message (body: raw payload), or one or more JSON
// envelopes ({"payload", "payload_encoding"}, or an array of them), each
// counted as a delivery to s. It returns the function that stops it.
func (m *messageRun) startSink(s *subscriber) (func(), error) {
	ln, err := net.Listen("tcp", m.cfg.Sink)
	if err != nil {
		return nil, err
	}
	deliver := m.deliver(s)
	var mu sync.Mutex // deliver is not safe for concurrent use
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		payloads, err := sinkPayloads(body, r.Header.Get("Content-Type"))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, p := range payloads {
			deliver(p)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Warn("webhook sink stopped", "error", err)
		}
	})
	m.log.Info("webhook sink listening", "address", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		wg.Wait()
	}, nil
}

type sinkEnvelope struct {
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payload_encoding"`
}

// sinkPayloads extracts the message payloads from a webhook request body.
func sinkPayloads(body []byte, contentType string) ([][]byte, error) {
	if !strings.HasPrefix(contentType, "application/json") {
		return [][]byte{body}, nil
	}
	var envs []sinkEnvelope
	if t := strings.TrimSpace(string(body)); strings.HasPrefix(t, "[") {
		if err := json.Unmarshal(body, &envs); err != nil {
			return nil, err
		}
	} else {
		var e sinkEnvelope
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, err
		}
		envs = []sinkEnvelope{e}
	}
	out := make([][]byte, 0, len(envs))
	for _, e := range envs {
		if e.PayloadEncoding == "base64" {
			b, err := base64.StdEncoding.DecodeString(e.Payload)
			if err != nil {
				return nil, err
			}
			out = append(out, b)
			continue
		}
		out = append(out, []byte(e.Payload))
	}
	return out, nil
}
