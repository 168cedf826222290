package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/template"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Requester invokes a web service for each message (an http bridge with
// mode: request) and publishes the answer as the reply: to the message's
// MQTT 5 response topic with its correlation data, or (MQTT 3 requests,
// which have no response topic) to ReplyTopic rendered for the message.
// Timeouts and errors are published as error replies, never dropped. It
// implements bridge.Sender; a message is done once its reply is published.
type Requester struct {
	w       *Webhook
	reply   *template.Template // nil: only messages with a response topic get replies
	publish func(packets.Packet) error
	maxSize int64
}

// NewRequester returns the sender. replyTopic may use {{topic}} and
// {{level N}} (e.g. "{{topic}}/reply"); publish injects a reply into the
// broker; maxSize bounds a reply payload.
func NewRequester(cfg WebhookConfig, replyTopic string, maxSize int64, publish func(packets.Packet) error) (*Requester, error) {
	w, err := NewWebhook(cfg)
	if err != nil {
		return nil, err
	}
	r := &Requester{w: w, publish: publish, maxSize: maxSize}
	if replyTopic != "" {
		t, err := template.New("reply_topic").Funcs(urlFuncs).Parse(replyTopic)
		if err != nil {
			return nil, fmt.Errorf("reply_topic: %v", err)
		}
		r.reply = t
	}
	return r, nil
}

// Send makes one request per message and publishes one reply per message.
func (r *Requester) Send(ctx context.Context, msgs []packets.Packet) error {
	var errs []error
	for _, pk := range msgs {
		if err := r.one(ctx, pk); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...) // only a failed reply publish is retried
}

func (r *Requester) one(ctx context.Context, pk packets.Packet) error {
	topic := pk.Properties.ResponseTopic
	if topic == "" && r.reply != nil {
		t, err := r.w.render(r.reply, pk)
		if err != nil {
			return fmt.Errorf("reply_topic: %w", err)
		}
		topic = t
	}
	if topic == "" || strings.ContainsAny(topic, "+#") {
		// No response topic and no reply_topic: the call is still made
		// (a fire-and-forget invocation), its answer goes nowhere.
		_, _, _, err := r.call(ctx, pk)
		return err
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: pk.FixedHeader.Qos},
		PacketID:    uint16(min(pk.FixedHeader.Qos, 1)),
		TopicName:   topic,
		Properties:  packets.Properties{CorrelationData: pk.Properties.CorrelationData},
	}
	status, ctype, body, err := r.call(ctx, pk)
	if err != nil {
		out.Payload = []byte(err.Error())
		out.Properties.ContentType = "text/plain; charset=utf-8"
		out.Properties.User = []packets.UserProperty{{Key: "status", Val: strconv.Itoa(status)}, {Key: "error", Val: err.Error()}}
	} else {
		out.Payload = body
		out.Properties.ContentType = ctype
		out.Properties.User = []packets.UserProperty{{Key: "status", Val: strconv.Itoa(status)}}
	}
	return r.publish(out)
}

// call makes the request; an error reply has status 504 (timeout) or 502.
func (r *Requester) call(ctx context.Context, pk packets.Packet) (int, string, []byte, error) {
	req, err := r.w.request(ctx, []packets.Packet{pk})
	if err != nil {
		return 502, "", nil, err
	}
	resp, err := r.w.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout") {
			return 504, "", nil, fmt.Errorf("timeout: %s %s did not answer within %v", r.w.cfg.Method, req.URL, r.w.cfg.Timeout)
		}
		return 502, "", nil, fmt.Errorf("request failed: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.maxSize+1))
	if err != nil {
		return 502, "", nil, fmt.Errorf("reading the answer: %v", err)
	}
	if int64(len(body)) > r.maxSize {
		return 502, "", nil, fmt.Errorf("the answer is larger than mqtt.max_packet_size (%d bytes)", r.maxSize)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body, nil
}
