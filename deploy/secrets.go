package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/meridian-cdn/meridian/internal/natsauth"
)

// CredsDir is where a VM keeps its NATS credentials: delivered by the operator beside the
// cloud-init, never inside it (see docs/deploy.md).
const CredsDir = EtcDir + "/creds"

// Secrets are a fleet's NATS secrets: one nkey seed per process per VM, and the routes'
// password. Render takes them so that rendering again gives the same credentials (and the same
// bytes); `deploy render` keeps them in a file beside the output (mode 0600).
type Secrets struct {
	// Seeds maps "<vm>/<identity>" (natsauth.Identity.String) to that credential's nkey seed.
	Seeds map[string]string `json:"seeds"`
	// RoutePassword authenticates the cluster's NATS servers to each other (route user
	// "route"); no client credential is valid on the route port.
	RoutePassword string `json:"route_password"`
}

// NewSecrets returns empty secrets with a fresh route password; credentials are created as
// Render needs them.
func NewSecrets() (*Secrets, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return &Secrets{Seeds: map[string]string{}, RoutePassword: hex.EncodeToString(b)}, nil
}

// LoadSecrets reads the secrets file at path, or returns new secrets if there is none.
func LoadSecrets(path string) (*Secrets, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return NewSecrets()
	}
	if err != nil {
		return nil, fmt.Errorf("fleet secrets: %w", err)
	}
	var s Secrets
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("fleet secrets %s: %w", path, err)
	}
	if s.Seeds == nil {
		s.Seeds = map[string]string{}
	}
	if s.RoutePassword == "" {
		return nil, fmt.Errorf("fleet secrets %s: no route_password", path)
	}
	return &s, nil
}

// Save writes the secrets to path with mode 0600, atomically (natsauth.WriteSecret).
func (s *Secrets) Save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := natsauth.WriteSecret(path, append(b, '\n')); err != nil {
		return fmt.Errorf("fleet secrets: %w", err)
	}
	return nil
}

// credential returns VM vm's credential for id, creating it the first time.
func (s *Secrets) credential(vm string, id natsauth.Identity) (natsauth.Credential, error) {
	key := vm + "/" + id.String()
	if seed, ok := s.Seeds[key]; ok {
		return natsauth.Credential{ID: id, Seed: []byte(seed)}, nil
	}
	c, err := natsauth.NewCredential(id)
	if err != nil {
		return natsauth.Credential{}, fmt.Errorf("credential %s: %w", key, err)
	}
	s.Seeds[key] = string(c.Seed)
	return c, nil
}
