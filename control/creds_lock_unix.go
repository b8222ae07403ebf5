//go:build unix

package control

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockCreds takes an exclusive lock on storeDir's credentials, so that a control starting up
// and `meridian control creds` commands never interleave their writes of the users file. It
// returns the function that releases it.
func lockCreds(storeDir string) (func(), error) {
	dir := credsDir(storeDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("nats credentials: lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
