package auth

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"
)

// ErrUnauthenticated means the request carried no acceptable credentials
// (HTTP 401); ErrThrottled that its address failed too often (HTTP 429).
var (
	ErrUnauthenticated = errors.New("authentication required: send HTTP Basic credentials of a user in auth.users_file, or a bearer token")
	ErrThrottled       = errors.New("too many failed logins from this address; try again later")
)

// AuthenticateHTTP identifies the sender of an HTTP request the way CONNECT
// identifies an MQTT client: HTTP Basic credentials from the users file, a
// bearer token (JWT), or anonymous where an anonymous MQTT client from the
// same address would be accepted. Failed logins count against the same
// per-address budget as MQTT's.
func (h *Hook) AuthenticateHTTP(r *http.Request) (Identity, error) {
	addr, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		addr = r.RemoteAddr
	}
	now := time.Now()
	st := h.st.Load()
	user, pass, basic := r.BasicAuth()
	bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !basic && !hasBearer {
		if h.anonymousAllowed(addr) {
			return Identity{Anonymous: true, ClientID: "http"}, nil
		}
		return Identity{}, ErrUnauthenticated
	}
	// As for CONNECT: credentials verified before skip the budget.
	throttled := h.failRate != nil && !(basic && h.verifiedBefore(st, user, []byte(pass)))
	if throttled && !h.failRate.begin(addr) {
		h.Counters.LoginThrottled.Add(1)
		return Identity{}, ErrThrottled
	}
	var id Identity
	ok := false
	switch {
	case hasBearer && h.jwt != nil:
		if tid, err := h.jwt.Verify(strings.TrimSpace(bearer), now); err == nil {
			id, ok = tid, true
		}
	case basic && st.users != nil:
		if roles, good := h.checkPassword(st, user, []byte(pass)); good {
			id, ok = Identity{Username: user, Roles: roles}, true
		}
	}
	if throttled {
		h.failRate.end(addr, !ok)
	}
	if !ok {
		h.Counters.BadCredentials.Add(1)
		return Identity{}, ErrUnauthenticated
	}
	id.ClientID = "http"
	return id, nil
}

// CanPublish reports whether id may publish to topic under the current ACL
// (and the identity's token scope).
func (h *Hook) CanPublish(id Identity, topic string) bool {
	if h.st.Load().acl.CanPublish(id, topic) {
		return true
	}
	h.Counters.PublishDenied.Add(1)
	return false
}

// IdentityOf is the identity of a configured user acting through the
// broker itself (a bridge's inbound side): the user's roles from the users
// file, clientID for %c in ACL patterns.
func (h *Hook) IdentityOf(user, clientID string) Identity {
	return Identity{Username: user, ClientID: clientID, Roles: h.st.Load().users.rolesOf(user)}
}
