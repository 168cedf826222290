package broker

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/motemq/mote/auth"
)

// AuthConfig is the auth: section. With none, anonymous clients are
// accepted from loopback addresses only.
type AuthConfig struct {
	// AllowAnonymous: unset = loopback only; true = anywhere; false = never.
	AllowAnonymous  *bool      `yaml:"allow_anonymous"`
	UsersFile       string     `yaml:"users_file"`
	ACLFile         string     `yaml:"acl_file"`
	ACL             []ACLRule  `yaml:"acl"`
	JWT             *JWTConfig `yaml:"jwt"`
	CertUsername    string     `yaml:"cert_username"` // cn, san_dns, san_email, san_uri
	ClientIDPattern string     `yaml:"client_id_pattern"`
	WatchInterval   Duration   `yaml:"watch_interval"`
}

// ACLRule is an inline ACL rule; inline rules come before the file's.
type ACLRule struct {
	Permission string `yaml:"permission"` // allow or deny
	User       string `yaml:"user"`
	Role       string `yaml:"role"`
	Anonymous  bool   `yaml:"anonymous"`
	Action     string `yaml:"action"` // pub, sub or all
	Topic      string `yaml:"topic"`
}

// JWTConfig is auth.jwt.
type JWTConfig struct {
	Secret         string   `yaml:"secret"`
	PublicKeyFile  string   `yaml:"public_key_file"`
	JWKSFile       string   `yaml:"jwks_file"`
	Issuer         string   `yaml:"issuer"`
	Audience       string   `yaml:"audience"`
	UsernameClaim  string   `yaml:"username_claim"`
	PublishClaim   string   `yaml:"publish_claim"`
	SubscribeClaim string   `yaml:"subscribe_claim"`
	RolesClaim     string   `yaml:"roles_claim"`
	Leeway         Duration `yaml:"leeway"`
	RequireExpiry  bool     `yaml:"require_expiry"`
}

// LimitsConfig is the limits: section (see also mqtt: for packet sizes,
// in-flight and queued messages, topic length and levels, max_clients).
type LimitsConfig struct {
	MaxConnectionsPerUser int      `yaml:"max_connections_per_user"`
	ConnectRate           float64  `yaml:"connect_rate"`  // per second per source address; 0 = off
	ConnectBurst          int      `yaml:"connect_burst"` // connections at once before the rate applies
	FailedLogins          int      `yaml:"failed_logins"` // per source address per failed_login_window; 0 = off
	FailedLoginWindow     Duration `yaml:"failed_login_window"`
	PublishRate           float64  `yaml:"publish_rate"` // PUBLISH packets per second per client; 0 = off
	PublishBurst          int      `yaml:"publish_burst"`
	PublishRateExceeded   string   `yaml:"publish_rate_exceeded"` // disconnect (0x96) or drop
	MaxSubscriptions      int      `yaml:"max_subscriptions"`     // per client; 0 = unlimited
	// Retained messages a user may hold (count, and payload+topic bytes);
	// 0 = unlimited. Over it, a new retained message is refused (v5:
	// 0x97); replacing or clearing one's own is always allowed.
	MaxRetainedPerUser      int  `yaml:"max_retained_per_user"`
	MaxRetainedBytesPerUser Size `yaml:"max_retained_bytes_per_user"`
}

func defaultLimits() LimitsConfig {
	return LimitsConfig{
		ConnectRate:         1000,
		ConnectBurst:        2000,
		FailedLogins:        10,
		FailedLoginWindow:   Duration(time.Minute),
		PublishRateExceeded: "disconnect",
		MaxSubscriptions:    10000,
	}
}

// validateAuth checks the auth: and limits: sections, loading the files
// they name so that --check-config finds a broken password or ACL file.
func (c *Config) validateAuth(bad func(key, format string, args ...any)) {
	a := c.Auth
	if a.UsersFile != "" {
		if _, err := os.Stat(a.UsersFile); err != nil {
			bad("auth.users_file", "file not found: %s (create it with: mote passwd %s USERNAME)", a.UsersFile, a.UsersFile)
		} else if _, err := auth.LoadUsers(a.UsersFile); err != nil {
			bad("auth.users_file", "%v", err)
		}
	}
	if _, err := c.aclRules(); err != nil {
		bad("auth.acl", "%v", err)
	}
	if a.ACLFile != "" {
		if _, err := os.Stat(a.ACLFile); err != nil {
			bad("auth.acl_file", "file not found: %s", a.ACLFile)
		} else if r, err := auth.LoadACL(a.ACLFile); err != nil {
			bad("auth.acl_file", "%v", err)
		} else if _, err := auth.NewACL(r); err != nil {
			bad("auth.acl_file", "%v", err)
		}
	}
	if a.JWT != nil {
		if _, err := auth.NewJWT(c.jwtConfig()); err != nil {
			bad("auth.jwt", "%s", strings.TrimPrefix(err.Error(), "auth.jwt."))
		}
	}
	switch a.CertUsername {
	case "", "cn", "san_dns", "san_email", "san_uri":
	default:
		bad("auth.cert_username", "%q: use cn, san_dns, san_email or san_uri (or leave it empty)", a.CertUsername)
	}
	if a.ClientIDPattern != "" {
		if _, err := regexp.Compile(a.ClientIDPattern); err != nil {
			bad("auth.client_id_pattern", "%v", err)
		}
	}
	if a.WatchInterval < 0 {
		bad("auth.watch_interval", "must not be negative (0 turns watching off)")
	}
	l := c.Limits
	if l.MaxConnectionsPerUser < 0 {
		bad("limits.max_connections_per_user", "%d: want 0 (unlimited) or more", l.MaxConnectionsPerUser)
	}
	if l.ConnectRate < 0 || l.ConnectBurst < 0 || (l.ConnectRate > 0 && l.ConnectBurst == 0) {
		bad("limits.connect_rate", "rate %v burst %d: want a positive rate and burst, or rate 0 (off)", l.ConnectRate, l.ConnectBurst)
	}
	if l.FailedLogins < 0 || (l.FailedLogins > 0 && l.FailedLoginWindow <= 0) {
		bad("limits.failed_logins", "%d per %v: want a positive count and window, or 0 (off)", l.FailedLogins, time.Duration(l.FailedLoginWindow))
	}
	if l.PublishRate < 0 || l.PublishBurst < 0 {
		bad("limits.publish_rate", "must not be negative (0 = off)")
	}
	switch l.PublishRateExceeded {
	case "disconnect", "drop":
	default:
		bad("limits.publish_rate_exceeded", "%q: use disconnect or drop", l.PublishRateExceeded)
	}
	if l.MaxRetainedPerUser < 0 {
		bad("limits.max_retained_per_user", "%d: want 0 (unlimited) or more", l.MaxRetainedPerUser)
	}
	if l.MaxRetainedBytesPerUser < 0 {
		bad("limits.max_retained_bytes_per_user", "%d: want 0 (unlimited) or more", l.MaxRetainedBytesPerUser)
	}
	if l.MaxSubscriptions < 0 {
		bad("limits.max_subscriptions", "%d: want 0 (unlimited) or more", l.MaxSubscriptions)
	}
}

// aclRules converts the inline rules.
func (c *Config) aclRules() ([]auth.Rule, error) {
	rules := make([]auth.Rule, 0, len(c.Auth.ACL))
	for i, r := range c.Auth.ACL {
		var rule auth.Rule
		switch strings.ToLower(r.Permission) {
		case "allow":
			rule.Allow = true
		case "deny":
		default:
			return nil, fmt.Errorf("[%d].permission: %q: use allow or deny", i, r.Permission)
		}
		act, err := auth.ParseAction(r.Action)
		if err != nil {
			return nil, fmt.Errorf("[%d].action: %v", i, err)
		}
		subjects := 0
		for _, set := range []bool{r.User != "", r.Role != "", r.Anonymous} {
			if set {
				subjects++
			}
		}
		if subjects > 1 {
			return nil, fmt.Errorf("[%d]: give one of user, role or anonymous (or none for any client)", i)
		}
		rule.User, rule.Role, rule.Anonymous, rule.Action, rule.Topic = r.User, r.Role, r.Anonymous, act, r.Topic
		rules = append(rules, rule)
	}
	if _, err := auth.NewACL(rules); err != nil {
		return nil, err
	}
	return rules, nil
}

func (c *Config) jwtConfig() auth.JWTConfig {
	j := c.Auth.JWT
	return auth.JWTConfig{
		Secret: j.Secret, PublicKeyFile: j.PublicKeyFile, JWKSFile: j.JWKSFile,
		Issuer: j.Issuer, Audience: j.Audience,
		UsernameClaim: j.UsernameClaim, PublishClaim: j.PublishClaim, SubscribeClaim: j.SubscribeClaim, RolesClaim: j.RolesClaim,
		Leeway: j.Leeway.Std(), RequireExpiry: j.RequireExpiry,
	}
}

// authConfig is the auth hook's configuration (after Validate).
func (c *Config) authConfig() (auth.Config, error) {
	rules, err := c.aclRules()
	if err != nil {
		return auth.Config{}, fmt.Errorf("config: auth.acl: %w", err)
	}
	ac := auth.Config{
		UsersFile:      c.Auth.UsersFile,
		ACLFile:        c.Auth.ACLFile,
		Rules:          rules,
		AllowAnonymous: c.Auth.AllowAnonymous,
		CertUsername:   c.Auth.CertUsername,
		Watch:          c.Auth.WatchInterval.Std(),
		Limits: auth.Limits{
			MaxConnectionsPerUser:   c.Limits.MaxConnectionsPerUser,
			ConnectRate:             c.Limits.ConnectRate,
			ConnectBurst:            c.Limits.ConnectBurst,
			PublishRate:             c.Limits.PublishRate,
			PublishBurst:            max(c.Limits.PublishBurst, int(c.Limits.PublishRate)),
			PublishDisconnect:       c.Limits.PublishRateExceeded != "drop",
			MaxSubscriptions:        c.Limits.MaxSubscriptions,
			MaxRetainedPerUser:      c.Limits.MaxRetainedPerUser,
			MaxRetainedBytesPerUser: int64(c.Limits.MaxRetainedBytesPerUser),
		},
	}
	if n := c.Limits.FailedLogins; n > 0 {
		ac.Limits.FailedLoginBurst = n
		ac.Limits.FailedLoginEvery = c.Limits.FailedLoginWindow.Std() / time.Duration(n)
	}
	if c.Auth.JWT != nil {
		j := c.jwtConfig()
		ac.JWT = &j
	}
	if p := c.Auth.ClientIDPattern; p != "" {
		re, err := regexp.Compile(p)
		if err != nil {
			return auth.Config{}, fmt.Errorf("config: auth.client_id_pattern: %w", err)
		}
		ac.ClientID = re
	}
	return ac, nil
}
