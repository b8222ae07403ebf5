package natsauth

import (
	"encoding/base64"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Authenticator is an embedded server's client authentication: the same nkey users and
// permissions as NkeyUsers, but its users can change while the server runs without reloading
// the server's options. A reload swaps the options under readers that do not lock them
// (nats-server v2.15.2 reads them unlocked on every JetStream direct get, i.e. every KV read,
// which the race detector reports), and it rebuilds the whole configuration for one new node.
//
// The server still enforces every permission: Check only proves the client holds the nkey's
// seed (the signature of the server's nonce, as the server's own nkey check does) and hands
// the server that user's permissions.
type Authenticator struct {
	prefix  string
	refresh func() // set before the server starts; see SetRefresh

	mu    sync.Mutex
	users map[string]*server.User // by nkey; leaf link credentials are not client users
}

// NewAuthenticator returns an authenticator accepting users with their permissions for prefix.
func NewAuthenticator(prefix string, users []User) *Authenticator {
	a := &Authenticator{prefix: prefix}
	a.users = a.userMap(users)
	return a
}

// Configure makes opts authenticate clients with a. The server must present a nonce for the
// signature; with no Nkeys in its options it would not.
func (a *Authenticator) Configure(opts *server.Options) {
	opts.CustomClientAuthentication = a
	opts.AlwaysEnableNonce = true
}

// SetRefresh has Check call refresh before it looks a client's nkey up, so that refresh may
// bring the users up to date (SetUsers) from where another process changes them: a user added
// there is let in on its first connection, and one removed is refused on its next, without
// waiting for a poll. refresh runs in the connecting client's goroutine, with no lock of the
// server's or a's held; it should cost little when nothing changed, as every connection
// attempt, authenticated or not, calls it. Call SetRefresh before the server starts.
func (a *Authenticator) SetRefresh(refresh func()) { a.refresh = refresh }

func (a *Authenticator) userMap(users []User) map[string]*server.User {
	m := make(map[string]*server.User, len(users))
	for _, u := range users {
		if u.ID.Role == RoleLeaf {
			continue // a leaf link credential opens leaf links only (NkeyUsers), never a client
		}
		// No AllowedConnectionTypes: control's own connection to its embedded server is
		// in process (IN_PROCESS, not STANDARD), and must pass as a TCP client does.
		m[u.NKey] = &server.User{Permissions: Permissions(a.prefix, u.ID)}
	}
	return m
}

// Check lets a client in if it signed the server's nonce with the seed of a current user's
// nkey, and gives it that user's permissions.
func (a *Authenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	if o == nil || o.Nkey == "" || o.Sig == "" {
		return false
	}
	if a.refresh != nil {
		a.refresh()
	}
	a.mu.Lock()
	_, ok := a.users[o.Nkey]
	a.mu.Unlock()
	if !ok {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
	if err != nil {
		// nats clients sign in raw URL encoding; the server also takes standard base64.
		if sig, err = base64.StdEncoding.DecodeString(o.Sig); err != nil {
			return false
		}
	}
	pub, err := nkeys.FromPublicKey(o.Nkey)
	if err != nil || pub.Verify(c.GetNonce(), sig) != nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Revoked while the signature was checked: refused here, since SetUsers may have listed
	// the clients before this one. Users set again meanwhile are still users (with the
	// permissions now in force).
	cur, ok := a.users[o.Nkey]
	if !ok {
		return false
	}
	c.RegisterUser(cur)
	return true
}

// SetUsers replaces the users and disconnects, from ns (nil: none yet), every client whose
// nkey is no longer among them. It returns how many clients it disconnected.
func (a *Authenticator) SetUsers(ns *server.Server, users []User) int {
	m := a.userMap(users)
	a.mu.Lock()
	a.users = m
	a.mu.Unlock()
	if ns == nil {
		return 0
	}
	// The server lists a client from its creation, with the nkey of its CONNECT: one that
	// Check lets in from here on holds a current key, and one let in before is listed here.
	cz, err := ns.Connz(&server.ConnzOptions{Username: true, Limit: 1 << 30})
	if err != nil {
		return 0
	}
	n := 0
	for _, ci := range cz.Conns {
		if _, ok := m[ci.AuthorizedUser]; !ok && ci.AuthorizedUser != "" && ns.DisconnectClientByID(ci.Cid) == nil {
			n++
		}
	}
	return n
}
