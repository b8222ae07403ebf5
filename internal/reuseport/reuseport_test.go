package reuseport

import (
	"context"
	"testing"
)

// TestTwoListenersShareAnAddress: a second process (here, a second socket) can bind the
// address the first still holds, for TCP and UDP.
func TestTwoListenersShareAnAddress(t *testing.T) {
	if !Available {
		t.Skip("no SO_REUSEPORT on this platform")
	}
	ctx := context.Background()
	a, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen(ctx, a.Addr().String())
	if err != nil {
		t.Fatalf("second TCP listener on %s: %v", a.Addr(), err)
	}
	b.Close()
	u, err := ListenPacket(ctx, a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	v, err := ListenPacket(ctx, u.LocalAddr().String())
	if err != nil {
		t.Fatalf("second UDP socket on %s: %v", u.LocalAddr(), err)
	}
	v.Close()
}
