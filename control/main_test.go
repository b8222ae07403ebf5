package control

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestMain fails the package's tests when a goroutine is still running after they all passed:
// every goroutine has an owner that stops it, and a test stops what it started.
// The meridian binary the process tests share is removed at the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		proctest.Cleanup()
		os.Exit(code)
	}))
}
