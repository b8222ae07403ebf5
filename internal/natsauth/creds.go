package natsauth

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Credential is one identity's secret: an nkey user seed. The server knows only its public key.
type Credential struct {
	ID   Identity
	Seed []byte
}

// NewCredential creates a fresh nkey for id.
func NewCredential(id Identity) (Credential, error) {
	if err := id.Validate(); err != nil {
		return Credential{}, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Credential{}, fmt.Errorf("create nkey for %s: %w", id, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return Credential{}, fmt.Errorf("create nkey for %s: %w", id, err)
	}
	return Credential{ID: id, Seed: seed}, nil
}

// PublicKey is the credential's nkey public key ("U...").
func (c Credential) PublicKey() (string, error) {
	kp, err := nkeys.FromSeed(c.Seed)
	if err != nil {
		return "", fmt.Errorf("credential %s: %w", c.ID, err)
	}
	return kp.PublicKey()
}

// User is the server-side record of the credential.
func (c Credential) User() (User, error) {
	pub, err := c.PublicKey()
	return User{ID: c.ID, NKey: pub}, err
}

// identityLine starts the line of a credentials file that names its identity.
const identityLine = "# identity: "

// Format renders the credential as a credentials file: a comment naming the identity, then the
// seed in the decorated form that nats.NkeyOptionFromSeed and the nats CLI read.
func (c Credential) Format() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Meridian NATS credential. Keep it secret: it is the identity below on the fleet's bus.\n")
	fmt.Fprintf(&b, "%s%s\n", identityLine, c.ID)
	fmt.Fprintf(&b, "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n", c.Seed)
	return b.Bytes()
}

// ParseCredential reads a credentials file written by Format.
func ParseCredential(b []byte) (Credential, error) {
	var c Credential
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), identityLine); ok {
			id, err := ParseIdentity(strings.TrimSpace(v))
			if err != nil {
				return Credential{}, err
			}
			c.ID, found = id, true
			break
		}
	}
	if !found {
		return Credential{}, fmt.Errorf("no %q line: not a Meridian credentials file", strings.TrimSpace(identityLine))
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return Credential{}, fmt.Errorf("credential %s: %w", c.ID, err)
	}
	if c.Seed, err = kp.Seed(); err != nil {
		return Credential{}, fmt.Errorf("credential %s: %w", c.ID, err)
	}
	return c, nil
}

// LoadCredential reads the credentials file at path. It refuses a file that other users may
// read.
func LoadCredential(path string) (Credential, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Credential{}, fmt.Errorf("nats credentials: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Credential{}, fmt.Errorf("nats credentials %s: mode %v lets other users read it; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Credential{}, fmt.Errorf("nats credentials: %w", err)
	}
	c, err := ParseCredential(b)
	if err != nil {
		return Credential{}, fmt.Errorf("nats credentials %s: %w", path, err)
	}
	return c, nil
}

// WriteFile writes the credential to path with mode 0600.
func (c Credential) WriteFile(path string) error {
	return WriteSecret(path, c.Format())
}

// WriteSecret writes b to path (mode 0600) through a temporary file and a rename, so that a
// reader never sees half a file. The temporary file is a new one (O_EXCL, a random name, mode
// 0600 from its creation): a file or symlink already at a fixed name beside path, say in a
// shared directory, never receives the secret, nor lends it its permissions. A file already at
// path is replaced, not written through.
func WriteSecret(path string, b []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Options are the nats.Connect options that authenticate as c: its nkey, and its identity's
// inbox prefix (the only reply subjects its permissions let it receive on).
func (c Credential) Options() ([]nats.Option, error) {
	kp, err := nkeys.FromSeed(c.Seed)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", c.ID, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", c.ID, err)
	}
	opts := []nats.Option{nats.Nkey(pub, kp.Sign)}
	if c.ID.Role != RoleControl {
		opts = append(opts, nats.CustomInboxPrefix(c.ID.InboxPrefix()))
	}
	return opts, nil
}

// FileOptions loads the credentials file at path and returns its Options.
func FileOptions(path string) ([]nats.Option, error) {
	c, err := LoadCredential(path)
	if err != nil {
		return nil, err
	}
	return c.Options()
}
