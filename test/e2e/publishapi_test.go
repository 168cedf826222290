package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// An HTTP 200 from the publish API means what a PUBACK means: the message
// survives SIGKILL. 300 QoS 1 messages for an offline persistent session
// are published over HTTP, the broker is killed and restarted, and the
// session receives every one.
func TestKill9AfterHTTPPublish(t *testing.T) {
	dir := t.TempDir()
	p := brokertest.Spawn(t, moteBin, dir)
	o := brokertest.Options{ID: "http-sub", SessionExpiry: 3600, Session: state.NewInMemory()}
	sub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
	sub.Sub(t, 1, "web/#")
	sub.Close()

	c := NewChecker()
	client := &http.Client{Timeout: 10 * time.Second}
	const n = 300
	for i := range uint64(n) {
		url := "http://" + p.Addr(broker.ListenerHTTP) + "/api/v1/publish/web/x?qos=1"
		resp, err := client.Post(url, "application/octet-stream", strings.NewReader(string(Payload("http", i))))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		c.Sent("http", i, resp.StatusCode == http.StatusOK)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish %d: HTTP %d", i, resp.StatusCode)
		}
	}
	p.Kill()

	p = brokertest.Spawn(t, moteBin, dir)
	sub = brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
	drain(c, sub.Inbox, n, 5*time.Second)
	if r := c.Report(); r.Lost != 0 || r.OK != n {
		t.Fatalf("after kill -9: %v", r)
	}
}
