package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/wire"
)

// The embedded NATS server's credentials live in <StoreDir>/nats-auth (mode 0700): control's
// own credential (control.creds) and the users file (users.json) listing every identity the
// server accepts with its nkey public key. Only public keys are kept for the other identities:
// their seeds are printed once, when issued, and live only where they were delivered.
const (
	credsDirName  = "nats-auth"
	controlCreds  = "control.creds"
	usersFileName = "users.json"
)

// CredentialRecord is one entry of the users file.
type CredentialRecord struct {
	// Identity is the identity's name (natsauth.Identity.String): "edge.lon.n1", "dns.ns1".
	Identity string `json:"identity"`
	// NKey is the credential's public key.
	NKey string `json:"nkey"`
	// Issued is when the credential was created.
	Issued time.Time `json:"issued"`
}

func credsDir(storeDir string) string {
	if storeDir == "" {
		storeDir = DefaultStoreDir
	}
	return filepath.Join(storeDir, credsDirName)
}

// initCredentials creates storeDir's credentials on first start: control's own credential and a
// users file naming it. It returns control's credential.
func initCredentials(storeDir string) (natsauth.Credential, error) {
	unlock, err := lockCreds(storeDir)
	if err != nil {
		return natsauth.Credential{}, err
	}
	defer unlock()
	return initCredentialsLocked(storeDir)
}

func initCredentialsLocked(storeDir string) (natsauth.Credential, error) {
	dir := credsDir(storeDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return natsauth.Credential{}, fmt.Errorf("nats credentials: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return natsauth.Credential{}, fmt.Errorf("nats credentials: %w", err)
	}
	path := filepath.Join(dir, controlCreds)
	c, err := natsauth.LoadCredential(path)
	if errors.Is(err, fs.ErrNotExist) {
		if c, err = natsauth.NewCredential(natsauth.Control()); err != nil {
			return natsauth.Credential{}, err
		}
		if err := c.WriteFile(path); err != nil {
			return natsauth.Credential{}, fmt.Errorf("nats credentials: %w", err)
		}
	} else if err != nil {
		return natsauth.Credential{}, err
	}
	if err := addUserLocked(storeDir, c); err != nil {
		return natsauth.Credential{}, err
	}
	return c, nil
}

// addUserLocked adds c's public key to storeDir's users file unless it is there already.
func addUserLocked(storeDir string, c natsauth.Credential) error {
	u, err := c.User()
	if err != nil {
		return err
	}
	recs, err := ListCredentials(storeDir)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(recs, func(r CredentialRecord) bool { return r.NKey == u.NKey }) {
		return nil
	}
	recs = append(recs, CredentialRecord{Identity: c.ID.String(), NKey: u.NKey, Issued: time.Now().UTC()})
	return writeUsers(storeDir, recs)
}

// ListCredentials reads the users file of storeDir: every credential the embedded NATS server
// accepts. A missing file is an empty list.
func ListCredentials(storeDir string) ([]CredentialRecord, error) {
	b, err := os.ReadFile(filepath.Join(credsDir(storeDir), usersFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nats users: %w", err)
	}
	var recs []CredentialRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("nats users %s: %w", filepath.Join(credsDir(storeDir), usersFileName), err)
	}
	return recs, nil
}

func writeUsers(storeDir string, recs []CredentialRecord) error {
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	if err := natsauth.WriteSecret(filepath.Join(credsDir(storeDir), usersFileName), append(b, '\n')); err != nil {
		return fmt.Errorf("nats users: %w", err)
	}
	return nil
}

// IssueCredential creates a credential for id in storeDir's users file and returns it (with its
// secret seed, which is not kept). A control running on storeDir accepts it from its next
// connection attempt on, without a restart. Issuing again for the same identity adds a second credential beside the
// first: both work until one is revoked (rotation without downtime).
func IssueCredential(storeDir string, id natsauth.Identity) (natsauth.Credential, error) {
	return issueCredential(storeDir, id, nil, nil)
}

// issueCredential is IssueCredential with a delivery: deliver, if not nil, is handed the
// credential before it is accepted, so that one that cannot be delivered (say, its -o file
// cannot be written) is never accepted, a key whose seed nobody holds; undo takes a delivered
// credential back when accepting it fails.
func issueCredential(storeDir string, id natsauth.Identity, deliver func(natsauth.Credential) error, undo func()) (natsauth.Credential, error) {
	if err := validateEdgeIDs(id); err != nil {
		return natsauth.Credential{}, fmt.Errorf("issue a credential for %s: %w", id, err)
	}
	unlock, err := lockCreds(storeDir)
	if err != nil {
		return natsauth.Credential{}, err
	}
	defer unlock()
	if _, err := initCredentialsLocked(storeDir); err != nil {
		return natsauth.Credential{}, err
	}
	c, err := natsauth.NewCredential(id)
	if err != nil {
		return natsauth.Credential{}, err
	}
	if deliver != nil {
		if err := deliver(c); err != nil {
			return natsauth.Credential{}, err
		}
	}
	if err := addUserLocked(storeDir, c); err != nil {
		if undo != nil {
			undo()
		}
		return natsauth.Credential{}, err
	}
	return c, nil
}

// RevokeCredential removes the credential with public key nkey (or every credential of the
// identity named nkey, e.g. "edge.lon.n1") from storeDir's users file; a running control refuses
// it from its next connection attempt on and drops its connections within a second. Control's own credential cannot be revoked. It returns how
// many credentials were removed.
func RevokeCredential(storeDir, nkey string) (int, error) {
	unlock, err := lockCreds(storeDir)
	if err != nil {
		return 0, err
	}
	defer unlock()
	recs, err := ListCredentials(storeDir)
	if err != nil {
		return 0, err
	}
	keep := recs[:0]
	n := 0
	for _, r := range recs {
		if r.NKey == nkey || r.Identity == nkey {
			if r.Identity == natsauth.Control().String() {
				return 0, errors.New("revoke: control's own credential cannot be revoked (delete the store's nats-auth directory to start over)")
			}
			n++
			continue
		}
		keep = append(keep, r)
	}
	if n == 0 {
		return 0, fmt.Errorf("revoke: no credential %q", nkey)
	}
	return n, writeUsers(storeDir, keep)
}

// natsUsers turns the users file into the server's users; records it cannot read are skipped.
func natsUsers(recs []CredentialRecord) []natsauth.User {
	users := make([]natsauth.User, 0, len(recs))
	for _, r := range recs {
		id, err := natsauth.ParseIdentity(r.Identity)
		if err != nil {
			continue
		}
		users = append(users, natsauth.User{ID: id, NKey: r.NKey})
	}
	return users
}

// usersPollInterval is how often a control with embedded NATS looks for new or revoked
// credentials in its users file when no client connects: every connection attempt looks too
// (usersSync.sync), so a new credential connects at once, and the poll closes the connections
// of revoked ones.
const usersPollInterval = 500 * time.Millisecond

// usersSync applies the embedded server's users file to its users when the file changed since
// it last did, whether a client's connection attempt or the poll asks: `meridian control
// creds` is another process, which changes only the file.
type usersSync struct {
	path   string
	reload func() (int, error) // reads the file itself and sets the users; set before the server starts
	log    *slog.Logger

	mu     sync.Mutex
	last   []byte // the file as last applied
	failed []byte // the file as last refused, logged once
	// seen is the file's stat taken before the read that last set last or failed (or found
	// the file equal to one of them): nil until then, and while its modification time was
	// within usersRacyWindow of the look (a later write could keep it).
	seen os.FileInfo
}

// sync reloads the users if the file changed since the last reload (or refusal). One stat is
// what a connection attempt costs when nothing changed: the file is read only when its
// identity, size or modification time differ from the last look's (unchanged), or that time
// was within usersRacyWindow of the look.
func (u *usersSync) sync() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.reload == nil {
		return // nothing can set the users yet: the change stays for the next sync
	}
	// The stat before the read: a write between them leaves a stat older than the bytes
	// read, and the next sync reads again, never the other way round. The clock before the
	// stat: a write after it gets a later time than this, less the file system clock's tick.
	now := time.Now()
	fi, statErr := os.Stat(u.path)
	if statErr == nil && unchanged(u.seen, fi) {
		return
	}
	b, err := os.ReadFile(u.path)
	if err != nil {
		return
	}
	u.seen = nil
	if statErr == nil && fi.ModTime().Before(now.Add(-usersRacyWindow)) {
		u.seen = fi
	}
	if bytes.Equal(b, u.last) || u.failed != nil && bytes.Equal(b, u.failed) {
		return
	}
	n, err := u.reload()
	if err != nil {
		u.failed = b
		u.log.Error("nats users file unreadable; keeping the users in force", "err", err)
		return
	}
	u.last, u.failed = b, nil
	u.log.Info("nats users reloaded", "users", n)
}

// usersRacyWindow is how far a stat's modification time must be behind the look for the next
// look to trust it (seen): a write after the look then gets a later time. The time moves in
// ticks of the file system's clock, a few ms on Linux's local file systems, a second or two on
// some (ext4 with small inodes, FAT), and an editor rewrites the file in place: a credential
// revoked by a same-size edit within one tick of the last write kept the file's identity,
// size and time, and was accepted until the file changed again. Within the window the file
// is read at every look, as it was before the stat.
const usersRacyWindow = 2 * time.Second

// unchanged reports whether the file now is the file as seen: the same file (device and
// inode), size and modification time. seen is kept only when its time was usersRacyWindow
// behind the look, so any write since has another time. Besides, every writer of the users
// file (IssueCredential, RevokeCredential, initCredentials: writeUsers, natsauth.WriteSecret)
// writes a new file and renames it into place, a new inode, which the identity check sees
// whatever the time and size.
func unchanged(seen, now os.FileInfo) bool {
	return seen != nil && os.SameFile(seen, now) && seen.Size() == now.Size() && seen.ModTime().Equal(now.ModTime())
}

// watch syncs the users every usersPollInterval until ctx ends, for the revoked credentials'
// connections to close when no client connects.
func (u *usersSync) watch(ctx context.Context) {
	t := time.NewTicker(usersPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			u.sync()
		}
	}
}

// validateEdgeIDs refuses an edge identity whose PoP or node id is not what a node may
// register under (one lower-case DNS label: fleet.NewRegistrar refuses any other). natsauth
// checks only that they are subject tokens, which `LON` or `n_1` are: a credential for them
// would be one no edge can use.
func validateEdgeIDs(id natsauth.Identity) error {
	if id.Role != natsauth.RoleEdge {
		return nil
	}
	if err := wire.ValidatePoPID(id.PoP); err != nil {
		return err
	}
	if wire.ValidatePoPID(id.Node) != nil {
		return fmt.Errorf("%q is not a valid node id (one lower-case DNS label)", id.Node)
	}
	return nil
}
