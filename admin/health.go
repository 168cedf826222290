package admin

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Healthz answers while the process runs (liveness).
func (a *API) Healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status":         "ok",
		"version":        a.o.Version,
		"uptime_seconds": int64(time.Since(a.started) / time.Second),
	})
}

// Readiness is the /readyz answer.
type Readiness struct {
	Ready     bool              `json:"ready"`
	Reasons   []string          `json:"reasons,omitempty"` // why not ready
	Listeners map[string]string `json:"listeners"`         // id → bound address
	Store     StoreState        `json:"store"`
	Bridges   []BridgeState     `json:"bridges"`
	Queues    int               `json:"queues"`
	Clients   int64             `json:"clients"`
}

// StoreState is the store part of Readiness.
type StoreState struct {
	File       string `json:"file"`
	Fsync      string `json:"fsync"`
	Keys       int    `json:"keys"`
	Size       int64  `json:"size"`
	SyncErrors uint64 `json:"sync_errors"`
}

// BridgeState is a bridge's part of Readiness: reported, not required (a
// far side being down does not make the broker unready; its outbox keeps
// the messages).
type BridgeState struct {
	Name      string `json:"name"`
	State     string `json:"state"` // connected, failing, breaker_open, paused
	Backlog   int    `json:"backlog"`
	LastError string `json:"last_error,omitempty"`
}

// Readyz answers 200 when the broker serves (listeners up, store open and
// writing), else 503; the body says why and reports every bridge.
func (a *API) Readyz(w http.ResponseWriter, _ *http.Request) {
	st := a.o.Store.Stats()
	rd := Readiness{
		Ready:     true,
		Listeners: map[string]string{},
		Store: StoreState{
			File: a.o.Store.Path(), Fsync: string(a.o.Store.Policy()), Keys: st.Keys,
			Size: st.FileSize, SyncErrors: st.SyncErrors,
		},
		Bridges: []BridgeState{},
		Queues:  len(a.o.Queues.Stats()),
		Clients: atomic.LoadInt64(&a.o.Server.Info.ClientsConnected),
	}
	for _, l := range a.o.Listeners() {
		rd.Listeners[l.ID] = l.Address
	}
	if !a.o.Ready() {
		rd.Ready = false
		rd.Reasons = append(rd.Reasons, "the broker is starting or shutting down")
	}
	if st.SyncErrors > 0 {
		rd.Ready = false
		rd.Reasons = append(rd.Reasons, "the store failed to fsync: it no longer acknowledges messages (see the log)")
	}
	for _, b := range a.o.Bridges.Bridges() {
		s := b.Status()
		state := "connected"
		switch {
		case s.Paused:
			state = "paused"
		case s.BreakerOpen:
			state = "breaker_open"
		case !s.Connected:
			state = "failing"
		}
		rd.Bridges = append(rd.Bridges, BridgeState{Name: s.Name, State: state, Backlog: s.Backlog, LastError: s.LastError})
	}
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rd)
}
