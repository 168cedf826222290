package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestMainJSON(t *testing.T) {
	url, _, _ := startBroker(t)
	var out bytes.Buffer
	err := Main(t.Context(), []string{"pubsub", "--url", url, "--qos", "1", "--subs", "2", "--duration", "500ms", "--json", "--password", "s3cret"}, &out)
	if err != nil {
		t.Fatalf("Main: %v\n%s", err, out.String())
	}
	if n := strings.Count(strings.TrimSpace(out.String()), "\n"); n != 0 {
		t.Errorf("--json printed %d lines, want one JSON object", n+1)
	}
	if strings.Contains(out.String(), "s3cret") {
		t.Error("--json output contains the password")
	}
	var res Result
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("decode --json output into Result: %v", err)
	}
	if res.Config.Scenario != ScenarioPubSub || res.Config.URL != url || res.Config.QoS != 1 || res.Config.Subs != 2 {
		t.Errorf("config round trip: %+v", res.Config)
	}
	m := res.Messages
	if m == nil || m.Sent == 0 || m.Received != 2*m.Sent || m.Latency.Count != m.Received {
		t.Fatalf("messages round trip: %+v", m)
	}
	if res.Host.CPUs == 0 || res.Start.IsZero() {
		t.Errorf("host %+v start %v", res.Host, res.Start)
	}
}

func TestMainTable(t *testing.T) {
	url, _, _ := startBroker(t)
	var out bytes.Buffer
	// Flags before and after the scenario; pairs defaults --subs to --pubs.
	err := Main(t.Context(), []string{"--protocol", "4", "pubsub", "--url", url, "--topic-mode", "pairs", "--pubs", "2", "--qos", "2", "--duration", "300ms"}, &out)
	if err != nil {
		t.Fatalf("Main: %v\n%s", err, out.String())
	}
	lines := strings.Split(out.String(), "\n")
	want := "pubsub  url=" + url + "  protocol=4  qos=2  size=64  duration=300ms  mode=pairs  pubs=2  subs=2"
	if !strings.HasPrefix(lines[0], want) {
		t.Errorf("first line\n%q\nwant prefix\n%q", lines[0], want)
	}
	for _, row := range []string{"sent ", "received ", "lost ", "duplicates ", "out of order ", "latency ", "drain "} {
		if !strings.Contains(out.String(), "\n"+row) {
			t.Errorf("table has no %q row:\n%s", row, out.String())
		}
	}
	t.Log("\n" + out.String())
}

func TestMainUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no scenario", nil, "no scenario"},
		{"unknown scenario", []string{"flood"}, `unknown scenario "flood"`},
		{"unknown flag", []string{"pubsub", "--speed", "9"}, "flag provided but not defined: -speed"},
		{"two scenarios", []string{"pubsub", "conns"}, `unexpected argument "conns"`},
		{"bad qos", []string{"pubsub", "--qos", "3"}, "must be 0, 1 or 2"},
		{"bad duration", []string{"pubsub", "--duration", "soon"}, "invalid value"},
		{"zero duration", []string{"pubsub", "--duration", "0s"}, "--duration 0s: must be positive"},
		{"small size", []string{"pubsub", "--size", "10"}, "--size 10: must be between 24"},
		{"bad protocol", []string{"pubsub", "--protocol", "3"}, "--protocol 3"},
		{"bad url", []string{"pubsub", "--url", "http://127.0.0.1:1883"}, `scheme "http"`},
		{"bad mode", []string{"pubsub", "--topic-mode", "mesh"}, `--topic-mode "mesh"`},
		{"fanout pubs", []string{"pubsub", "--topic-mode", "fanout", "--pubs", "2"}, "fanout has exactly 1 publisher"},
		{"pairs subs", []string{"pubsub", "--topic-mode", "pairs", "--pubs", "3", "--subs", "2"}, "pairs needs as many subscribers"},
		{"latency pubs", []string{"latency", "--pubs", "2"}, "latency runs 1 publisher"},
		{"queue no consumers", []string{"queue", "--subs", "0"}, "queue needs at least 1 consumer"},
		{"wildcard topic", []string{"pubsub", "--topic", "a/#"}, `--topic "a/#"`},
		{"bad group", []string{"queue", "--group", "a/b"}, `--group "a/b"`},
		{"negative rate", []string{"pubsub", "--rate", "-1"}, "--rate -1"},
		{"zero conns", []string{"conns", "--conns", "0"}, "--conns 0"},
		{"fractional keepalive", []string{"conns", "--keepalive", "1500ms"}, "--keepalive 1.5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Main(t.Context(), tt.args, &out)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("Main(%q) = %v, want *UsageError", tt.args, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on a usage error", out.String())
			}
		})
	}
	t.Run("several problems at once", func(t *testing.T) {
		err := Main(t.Context(), []string{"pubsub", "--qos", "2", "--size", "1", "--pubs", "0"}, &bytes.Buffer{})
		for _, want := range []string{"--size 1", "--pubs 0"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not mention %q", err, want)
			}
		}
	})
}

func TestMainHelp(t *testing.T) {
	var out bytes.Buffer
	if err := Main(t.Context(), []string{"-h"}, &out); err != nil {
		t.Fatalf("Main -h: %v", err)
	}
	for _, want := range []string{"usage: mote bench SCENARIO", "-topic-mode", "-connect-rate", "-json"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help does not mention %q", want)
		}
	}
}
