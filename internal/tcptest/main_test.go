package tcptest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine is still running after they all passed:
// every goroutine has an owner that stops it, and a test stops what it started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
