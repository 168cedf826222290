package broker

import (
	"fmt"
	"strings"
	"time"

	"github.com/motemq/mote/queue"
)

// QueueConfig is one entry of queues: (see README). Zero values take the
// defaults.
type QueueConfig struct {
	Name                string   `yaml:"name"`
	Filter              string   `yaml:"filter"`
	Strategy            string   `yaml:"strategy"`
	MaxLength           int      `yaml:"max_length"`
	Overflow            string   `yaml:"overflow"`
	MessageTTL          Duration `yaml:"message_ttl"`
	MaxDeliveries       int      `yaml:"max_deliveries"`
	DeadLetterTopic     string   `yaml:"dead_letter_topic"`
	Durable             *bool    `yaml:"durable"`
	InflightPerConsumer int      `yaml:"inflight_per_consumer"`
	QueueExpiry         Duration `yaml:"queue_expiry"`
	VisibilityTimeout   Duration `yaml:"visibility_timeout"`
}

// settings fills the defaults in.
func (q QueueConfig) settings() queue.Settings {
	s := queue.Defaults()
	s.Name, s.Filter = q.Name, q.Filter
	if q.Strategy != "" {
		s.Strategy = q.Strategy
	}
	s.MaxLength = q.MaxLength
	if q.Overflow != "" {
		s.Overflow = q.Overflow
	}
	s.MessageTTL = q.MessageTTL.Std()
	if q.MaxDeliveries != 0 {
		s.MaxDeliveries = q.MaxDeliveries
	}
	if q.DeadLetterTopic != "" {
		s.DeadLetterTopic = q.DeadLetterTopic
	}
	if q.Durable != nil {
		s.Durable = *q.Durable
	}
	s.InflightPerConsumer = q.InflightPerConsumer
	s.VisibilityTimeout = q.VisibilityTimeout.Std()
	if q.QueueExpiry != 0 {
		s.QueueExpiry = time.Duration(q.QueueExpiry)
	}
	return s
}

func (c *Config) queueSettings() []queue.Settings {
	out := make([]queue.Settings, len(c.Queues))
	for i, q := range c.Queues {
		out[i] = q.settings()
	}
	return out
}

func (c *Config) validateQueues(bad func(key, format string, args ...any)) {
	declared := map[string]int{}
	for i, q := range c.Queues {
		key := fmt.Sprintf("queues[%d]", i)
		for _, err := range q.settings().Validate(key) {
			field, msg, _ := strings.Cut(err.Error(), ": ")
			bad(field, "%s", msg)
		}
		if q.Filter != "" {
			if j, dup := declared[q.Name]; dup {
				bad(key+".name", "%q is declared twice (also queues[%d])", q.Name, j)
			}
			declared[q.Name] = i
		}
	}
}
