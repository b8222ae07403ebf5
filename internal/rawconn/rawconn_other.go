//go:build !linux

package rawconn

import (
	"errors"
	"os"
	"syscall"
)

// Raw I/O is Linux only; New returns nil elsewhere, and these are never called.
const supported = false

var errUnsupported = errors.New("rawconn: no raw I/O on this system")

type reader struct{}

func (*reader) init()                                     {}
func (*reader) read(syscall.RawConn, []byte) (int, error) { return 0, errUnsupported }

type writer struct{}

func (*writer) init()                                              {}
func (*writer) write(syscall.RawConn, []byte, []byte) (int, error) { return 0, errUnsupported }

type exchanger struct{}

func (*exchanger) init(*reader) {}
func (*exchanger) exchange(syscall.RawConn, []byte, []byte) (int, int, error) {
	return 0, 0, errUnsupported
}

type prober struct {
	got PeekResult
	fn  func(uintptr)
}

func (*prober) init()                         {}
func (*prober) probe(rc syscall.RawConn) bool { return true }

type hangupWait struct {
	report func(uint64)
	err    error
	fn     func(uintptr) bool
}

func (*hangupWait) init() {}

type watchOp int

const (
	watchAdd watchOp = iota
	watchRemove
)

func watchOpOn(uintptr, watchOp, uintptr, uint64) error { return errUnsupported }
func newHangupWatchFile() (*os.File, error)             { return nil, errUnsupported }

type looper struct{}

func (*looper) init()                                   {}
func (*looper) loop(syscall.RawConn, func() bool) error { return errUnsupported }
func (*looper) read([]byte, bool) (int, error)          { return 0, errUnsupported }
func shutdownBoth(uintptr) error                        { return errUnsupported }
