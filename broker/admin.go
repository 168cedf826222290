package broker

import "net/http"

// AdminConfig is the admin: section (metrics, admin API, console).
type AdminConfig struct{}

func (c *Config) validateAdmin(bad func(key, format string, args ...any)) {}

// registerAdmin adds the admin API, metrics and console to the HTTP
// listener's routes.
func (b *Broker) registerAdmin(mux *http.ServeMux) {}
