package natsauth_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
)

// authServer runs a real server whose clients authenticate with a.
func authServer(t *testing.T, a *natsauth.Authenticator) *server.Server {
	t.Helper()
	opts := &server.Options{ServerName: "auth", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	a.Configure(opts)
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func dial(ns *server.Server, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(ns.ClientURL(), append(opts, nats.MaxReconnects(0), nats.Timeout(5*time.Second))...)
}

func credOpts(t *testing.T, c natsauth.Credential) []nats.Option {
	t.Helper()
	opts, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// Only the holder of a current client credential's seed gets in: not anonymous clients, not
// an unknown nkey, not a known nkey with a signature from another seed, not a leaf link's
// credential on the client port.
func TestAuthenticatorRefuses(t *testing.T) {
	edge, edgeUser := mustCred(t, natsauth.Edge("lon", "n1"))
	leaf, leafUser := mustCred(t, natsauth.Leaf("lon"))
	stranger, _ := mustCred(t, natsauth.Edge("lon", "n2"))
	a := natsauth.NewAuthenticator("", []natsauth.User{edgeUser, leafUser})
	ns := authServer(t, a)

	other, err := nkeys.FromSeed(stranger.Seed)
	if err != nil {
		t.Fatal(err)
	}
	forged := nats.Nkey(edgeUser.NKey, func(nonce []byte) ([]byte, error) { return other.Sign(nonce) })
	for _, tt := range []struct {
		name string
		opts []nats.Option
	}{
		{"anonymous", nil},
		{"unknown nkey", credOpts(t, stranger)},
		{"known nkey, other seed's signature", []nats.Option{forged}},
		{"leaf link credential as a client", credOpts(t, leaf)},
	} {
		nc, err := dial(ns, tt.opts...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected, want an authorization violation", tt.name)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: %v, want an authorization violation", tt.name, err)
		}
	}
	nc, err := dial(ns, credOpts(t, edge)...)
	if err != nil {
		t.Fatalf("the edge's own credential: %v", err)
	}
	nc.Close()
}

// The server enforces the user's permissions: an edge may not announce purges.
func TestAuthenticatorPermissions(t *testing.T) {
	edge, edgeUser := mustCred(t, natsauth.Edge("lon", "n1"))
	ns := authServer(t, natsauth.NewAuthenticator("", []natsauth.User{edgeUser}))
	refused := natstest.NewViolations()
	nc, err := dial(ns, append(credOpts(t, edge), refused.Option())...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(natsauth.Names{}.PurgeLive(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	refused.Wait(t, "publish", natsauth.Names{}.PurgeLive())
}

// New users are accepted and revoked ones are disconnected and kept out, without a reload.
func TestAuthenticatorSetUsers(t *testing.T) {
	c1, u1 := mustCred(t, natsauth.Edge("lon", "n1"))
	c2, u2 := mustCred(t, natsauth.Edge("lon", "n2"))
	a := natsauth.NewAuthenticator("", []natsauth.User{u1})
	ns := authServer(t, a)
	if nc, err := dial(ns, credOpts(t, c2)...); err == nil {
		nc.Close()
		t.Fatal("n2 connected before it was a user")
	}
	if n := a.SetUsers(ns, []natsauth.User{u1, u2}); n != 0 {
		t.Fatalf("adding a user disconnected %d clients", n)
	}
	closed := make(chan struct{})
	nc1, err := dial(ns, append(credOpts(t, c1), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))...)
	if err != nil {
		t.Fatalf("n1: %v", err)
	}
	defer nc1.Close()
	nc2, err := dial(ns, credOpts(t, c2)...)
	if err != nil {
		t.Fatalf("n2 after it was added: %v", err)
	}
	if n := a.SetUsers(ns, []natsauth.User{u2}); n != 1 {
		t.Fatalf("revoking n1 disconnected %d clients, want 1", n)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("n1's connection survived its revocation")
	}
	if nc, err := dial(ns, credOpts(t, c1)...); err == nil {
		nc.Close()
		t.Fatal("n1 connected after its revocation")
	}
	if !nc2.IsConnected() {
		t.Fatal("n2 lost its connection when n1 was revoked")
	}
}

// A refresh set with SetRefresh runs before a client is checked: the users it sets (another
// process's, say) decide that connection, a user added connecting on its first try, even
// from within the check, where it disconnects the clients of a user it removes.
func TestAuthenticatorRefresh(t *testing.T) {
	c1, u1 := mustCred(t, natsauth.Edge("lon", "n1"))
	c2, u2 := mustCred(t, natsauth.Edge("lon", "n2"))
	a := natsauth.NewAuthenticator("", []natsauth.User{u1})
	var (
		mu   sync.Mutex
		next []natsauth.User // what the refresh sets; nil: nothing changed
		ns   *server.Server
	)
	a.SetRefresh(func() {
		mu.Lock()
		defer mu.Unlock()
		if next != nil {
			a.SetUsers(ns, next)
			next = nil
		}
	})
	ns = authServer(t, a)
	dropped := make(chan struct{})
	var once sync.Once
	nc1, err := dial(ns, append(credOpts(t, c1), nats.DisconnectErrHandler(func(*nats.Conn, error) { once.Do(func() { close(dropped) }) }))...)
	if err != nil {
		t.Fatalf("n1: %v", err)
	}
	defer nc1.Close()
	mu.Lock()
	next = []natsauth.User{u2}
	mu.Unlock()
	nc2, err := dial(ns, credOpts(t, c2)...)
	if err != nil {
		t.Fatalf("n2, added by the refresh its connection ran: %v", err)
	}
	defer nc2.Close()
	if nc, err := dial(ns, credOpts(t, c1)...); err == nil {
		nc.Close()
		t.Fatal("n1 connected after the refresh removed it")
	}
	select {
	case <-dropped:
	case <-time.After(5 * time.Second):
		t.Fatal("n1's connection survived the refresh that removed it")
	}
}

// Users set again while clients connect stay users: nobody still in the set is refused.
func TestAuthenticatorSetUsersWhileConnecting(t *testing.T) {
	c1, u1 := mustCred(t, natsauth.Edge("lon", "n1"))
	_, u2 := mustCred(t, natsauth.Edge("lon", "n2"))
	a := natsauth.NewAuthenticator("", []natsauth.User{u1})
	ns := authServer(t, a)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			users := []natsauth.User{u1}
			if i%2 == 0 {
				users = append(users, u2)
			}
			a.SetUsers(ns, users)
		}
	}()
	refused := 0
	for range 200 {
		nc, err := dial(ns, credOpts(t, c1)...)
		if err != nil {
			refused++
			continue
		}
		nc.Close()
	}
	close(stop)
	<-done
	if refused != 0 {
		t.Fatalf("%d of 200 connects of a user never revoked were refused while the users changed", refused)
	}
}
