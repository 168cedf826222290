package amqp

import (
	"fmt"
	"strings"
	"sync"
	"text/template"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The templates' functions read the message from an environment that each
// template instance owns: text/template binds functions at parse time, so
// an instance is cloned once with functions bound to its own environment
// and reused, rather than cloned per message.

// outEnv is what a routing key template sees.
type outEnv struct {
	pk     *packets.Packet
	levels []string
}

func (e *outEnv) funcs() template.FuncMap {
	return template.FuncMap{
		"topic":     func() string { return e.pk.TopicName },
		"client_id": func() string { return e.pk.Origin },
		"key":       func() string { return TopicToKey(e.pk.TopicName) },
		"level": func(n int) string {
			if e.levels == nil {
				e.levels = strings.Split(e.pk.TopicName, "/")
			}
			if n < 0 || n >= len(e.levels) {
				return ""
			}
			return e.levels[n]
		},
	}
}

// outInstance is a routing key template bound to its environment.
type outInstance struct {
	t   *template.Template
	env outEnv
}

// outTemplate renders routing keys; safe for concurrent use (instances
// are pooled).
type outTemplate struct {
	base *template.Template
	pool sync.Pool // *outInstance
}

// parseOutTemplate parses a routing key template and renders it once for a
// sample message, so that misuse such as {{level "x"}} is reported now.
func parseOutTemplate(src string) (*outTemplate, error) {
	var placeholder outEnv
	base, err := template.New("routing_key").Funcs(placeholder.funcs()).Parse(src)
	if err != nil {
		return nil, err
	}
	ot := &outTemplate{base: base}
	if _, err := ot.render(&packets.Packet{TopicName: "a/b/c", Origin: "client"}); err != nil {
		return nil, err
	}
	return ot, nil
}

// render executes the template for pk.
func (ot *outTemplate) render(pk *packets.Packet) (string, error) {
	inst, _ := ot.pool.Get().(*outInstance)
	if inst == nil {
		t, err := ot.base.Clone()
		if err != nil {
			return "", err
		}
		inst = &outInstance{t: t}
		t.Funcs(inst.env.funcs())
	}
	inst.env = outEnv{pk: pk}
	var b strings.Builder
	err := inst.t.Execute(&b, nil)
	inst.env = outEnv{} // do not keep the message alive in the pool
	ot.pool.Put(inst)
	return b.String(), err
}

// inEnv is what an inbound topic template sees.
type inEnv struct {
	d     *amqp.Delivery
	queue string
}

func (e *inEnv) funcs() template.FuncMap {
	return template.FuncMap{
		"routing_key": func() string { return e.d.RoutingKey },
		"exchange":    func() string { return e.d.Exchange },
		"queue":       func() string { return e.queue },
		"key_topic":   func() string { return KeyToTopic(e.d.RoutingKey) },
		"header": func(name string) string {
			v, ok := e.d.Headers[name]
			if !ok {
				return ""
			}
			return headerString(v)
		},
	}
}

// inTemplate renders MQTT topics for deliveries. A Consumer handles one
// delivery at a time, so it is not safe for concurrent use.
type inTemplate struct {
	t   *template.Template
	env inEnv
}

// parseInTemplate parses an inbound topic template and renders it once for
// a sample delivery, so that misuse is reported now.
func parseInTemplate(src string) (*inTemplate, error) {
	it := &inTemplate{}
	t, err := template.New("topic").Funcs(it.env.funcs()).Parse(src)
	if err != nil {
		return nil, err
	}
	it.t = t
	sample := amqp.Delivery{Exchange: "x", RoutingKey: "a.b", Headers: amqp.Table{"h": "v"}}
	if _, err := it.render(&sample, "q"); err != nil {
		return nil, err
	}
	return it, nil
}

// render executes the template for d, consumed from queue.
func (it *inTemplate) render(d *amqp.Delivery, queue string) (string, error) {
	it.env = inEnv{d: d, queue: queue}
	var b strings.Builder
	err := it.t.Execute(&b, nil)
	it.env = inEnv{}
	if err != nil {
		return "", fmt.Errorf("topic template: %w", err)
	}
	return b.String(), nil
}
