package admin

import (
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strconv"

	"github.com/motemq/mote/web"
)

// consoleCSP keeps the console to its own files; it talks to this API and
// to the broker's WebSocket listener (another port, so ws: and wss:).
const consoleCSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// consoleFiles are the console's built files (web/dist, embedded).
func consoleFiles() (fs.FS, error) {
	dist, err := fs.Sub(web.Dist, "dist")
	if err != nil {
		return nil, fmt.Errorf("admin: console files: %w", err)
	}
	if _, err := fs.Stat(dist, "index.html"); err != nil {
		return nil, fmt.Errorf("admin: console files: %w (rebuild them with make web)", err)
	}
	return dist, nil
}

// registerConsole serves the console at /.
func (a *API) registerConsole(mux *http.ServeMux) {
	files := http.FileServerFS(a.console)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	}))
}

// WSEndpoint is where the console connects over MQTT-over-WebSocket.
type WSEndpoint struct {
	Port int    `json:"port"`
	Path string `json:"path"`
}

// ConsoleConfig tells the console page how to reach the broker.
type ConsoleConfig struct {
	Version string `json:"version"`
	// WSURL, when set, is the URL to use as is; otherwise the page uses
	// its own host name with WS (or WSS on an https page, when set).
	WSURL string      `json:"ws_url,omitempty"`
	WS    *WSEndpoint `json:"ws,omitempty"`
	WSS   *WSEndpoint `json:"wss,omitempty"`
	// Users: users are configured, so the page asks for a login; the API
	// needs Role.
	Users bool   `json:"users"`
	Role  string `json:"role"`
}

func (a *API) consoleConfig(*http.Request) (any, error) {
	c := ConsoleConfig{Version: a.o.Version, WSURL: a.o.WSURL, Users: a.o.UsersConfigured, Role: a.o.Role}
	for _, l := range a.o.Listeners() {
		if l.ID != "ws" && l.ID != "wss" {
			continue
		}
		_, p, err := net.SplitHostPort(l.Address)
		if err != nil {
			continue
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			continue
		}
		e := &WSEndpoint{Port: port, Path: l.Path}
		if l.ID == "ws" {
			c.WS = e
		} else {
			c.WSS = e
		}
	}
	return c, nil
}
