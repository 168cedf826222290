package admin

import (
	"errors"
	"net/http"
	"time"
)

// Rules is what the admin side needs of the rules engine. The broker
// adapts the engine to it; a nil Rules answers the rules and history
// endpoints with 404 "rules are not configured".
type Rules interface {
	// Rules lists every rule with its counters, sorted by name.
	Rules() []RuleStatus
	// Enable turns a rule on or off; an unknown name is an error wrapping
	// ErrNotFound.
	Enable(name string, on bool) error
	// History returns up to limit of the latest messages the rules' store
	// action kept for topic, newest first (none: an empty slice).
	History(topic string, limit int) ([]HistoryMessage, error)
}

// ErrNotFound is wrapped by a Rules implementation for an unknown rule.
var ErrNotFound = errors.New("not found")

// RuleStatus is one rule and its counters.
type RuleStatus struct {
	Name        string    `json:"name"`
	Enabled     bool      `json:"enabled"`
	Topics      []string  `json:"topics"`
	Chain       bool      `json:"chain,omitempty"`
	OnError     string    `json:"on_error,omitempty"`
	Matched     uint64    `json:"matched"`
	Errors      uint64    `json:"errors"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// HistoryMessage is one message a rule's store action kept.
type HistoryMessage struct {
	Topic       string
	Payload     []byte
	QoS         byte
	Retain      bool
	ClientID    string // publisher
	ContentType string
	Rule        string // the rule whose store action kept it
	Time        time.Time
}

func (a *API) rules() (Rules, error) {
	if a.o.Rules == nil {
		return nil, errorf(http.StatusNotFound, "rules are not configured: add a rules: section to the configuration")
	}
	return a.o.Rules, nil
}
