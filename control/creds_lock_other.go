//go:build !unix

package control

import (
	"fmt"
	"os"
)

// lockCreds only creates the credentials directory where file locks are not available: run
// one `meridian control creds` at a time there.
func lockCreds(storeDir string) (func(), error) {
	if err := os.MkdirAll(credsDir(storeDir), 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	return func() {}, nil
}
