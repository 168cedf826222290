package broker

import (
	"errors"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/persistence"
	"github.com/motemq/mote/rules"
)

// validateRules loads the rules (inline and rules_file) and compiles them
// against the configured bridges, so --check-config and start-up report a
// bad expression with the rule's name, line and column.
func (c *Config) validateRules(bad func(key, format string, args ...any)) {
	rs, err := c.Rules.Load()
	if err == nil {
		_, err = rules.Compile(rs, c.bridgeNames())
	}
	if err == nil {
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		bad("rules", "%s", strings.TrimPrefix(line, "rules: "))
	}
}

// bridgeNames resolves a rule's bridge action at validation time: the
// bridges with an outbound side exist.
func (c *Config) bridgeNames() rules.BridgeLookup {
	return func(name string) (func(packets.Packet) *persistence.Batch, bool) {
		for _, bc := range c.Bridges {
			if bc.Name == name && len(bc.outFilters()) > 0 {
				return func(packets.Packet) *persistence.Batch { return nil }, true
			}
		}
		return nil, false
	}
}

// bridgeLookup resolves a rule's bridge action to the running bridge.
func (b *Broker) bridgeLookup(name string) (func(packets.Packet) *persistence.Batch, bool) {
	br := b.bridges.Bridge(name)
	if br == nil {
		return nil, false
	}
	return br.Offer, true
}

// Rules is the routing rules engine.
func (b *Broker) Rules() *rules.Engine { return b.rules }

// Reload re-reads what may change without a restart (SIGHUP): the users
// and ACL files, the rules file and the enrich tables. What fails to load
// keeps its previous version in force; the error says why.
func (b *Broker) Reload() error {
	var errs []error
	if err := b.auth.Reload(); err != nil {
		errs = append(errs, err)
	}
	if err := b.rules.Load(&b.cfg.Rules); err != nil {
		b.log.Error("rules not reloaded; the previous rules stay in force", "error", err)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
