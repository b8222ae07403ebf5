// Package proctest runs meridian commands as real processes in tests, and drives load at them,
// for tests that replace a running server with a new process (restarts, rolling upgrades).
package proctest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// built is the binary Build made, once per test binary: the go command caches compiled
// packages but links again on every build, which took 5-30 s per test on a loaded 2-core
// machine, and a package's tests all need the same binary.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// Build builds the meridian binary, once per test binary, and returns its path. A package
// whose tests call it removes the binary with Cleanup from its TestMain.
func Build(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "meridian-proctest-")
		if err != nil {
			built.err = fmt.Errorf("make a directory for the meridian binary: %w", err)
			return
		}
		built.dir = dir
		bin := filepath.Join(dir, "meridian")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/meridian-cdn/meridian").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build meridian: %w\n%s", err, out)
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// Cleanup removes the binary Build made, if it made one; TestMain calls it after the tests.
func Cleanup() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

// Start runs bin with args and returns once a line of its stderr contains ready. The process
// is killed when the test ends if it is still running.
func Start(t testing.TB, bin, ready string, args ...string) *exec.Cmd {
	t.Helper()
	return StartWithin(t, 30*time.Second, bin, ready, args...)
}

// StartWithin is Start failing the test if ready is not logged within timeout.
func StartWithin(t testing.TB, timeout time.Duration, bin, ready string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	up := make(chan struct{})
	tail := &lastLines{done: make(chan struct{})}
	tails.Store(cmd, tail)
	go func() {
		defer close(tail.done)
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			tail.add(sc.Text())
			if strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(up) })
			}
		}
	}()
	select {
	case <-up:
	case <-time.After(timeout):
		cmd.Process.Kill()
		t.Fatalf("%v never logged %q", args, ready)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// StartLines runs bin with args and returns it with its stderr, line by line; the channel is
// closed when stderr ends (the process exited). The process is killed when the test ends if it
// is still running. Read the channel: a process that logs more than 100 lines unread blocks.
func StartLines(t testing.TB, bin string, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}

// WaitLine reads lines (StartLines's) until one contains s, failing the test if the process
// exits first or no such line comes within timeout.
func WaitLine(t testing.TB, cmd *exec.Cmd, lines <-chan string, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("%v exited (%v) before logging %q", cmd.Args[1:], cmd.ProcessState, s)
			}
			if strings.Contains(l, s) {
				return
			}
		case <-deadline:
			t.Fatalf("%v never logged %q", cmd.Args[1:], s)
		}
	}
}

// RestLines reads lines (StartLines's) until the process's stderr ends and returns them,
// failing the test if it has not ended within timeout.
func RestLines(t testing.TB, cmd *exec.Cmd, lines <-chan string, timeout time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return got
			}
			got = append(got, l)
		case <-deadline:
			t.Fatalf("%v still runs %v later (stderr %q)", cmd.Args[1:], timeout, got)
		}
	}
}

// Stop sends SIGTERM and fails the test unless the process exits cleanly.
func Stop(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	tail := tailOf(cmd)
	if tail != nil {
		<-tail.done // Wait closes the pipe: the last lines are read first
		tails.Delete(cmd)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("%v exited with %v after SIGTERM, want a clean exit; its last lines:\n%s", cmd.Args[1:], err, tail)
	}
}

// tails holds the last lines each process StartWithin started wrote to stderr, for Stop to
// show when the process did not stop cleanly.
var tails sync.Map // *exec.Cmd -> *lastLines

// lastLines keeps the last lines written to it; done closes when the process's stderr ends.
type lastLines struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func (l *lastLines) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 20 {
		l.lines = append(l.lines[:0], l.lines[1:]...)
	}
	l.lines = append(l.lines, line)
}

// tailOf returns the last lines of cmd's stderr, or nil if StartWithin did not start it.
func tailOf(cmd *exec.Cmd) *lastLines {
	v, ok := tails.Load(cmd)
	if !ok {
		return nil
	}
	return v.(*lastLines)
}

// String is the lines kept, one per line.
func (l *lastLines) String() string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// Load is work run by concurrent workers until its context ends.
type Load struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	wg         sync.WaitGroup
}

// RunLoad starts workers goroutines calling do until ctx ends; do returns nil for a success.
// A failure after ctx ended is not counted (the request was cut off by the test, not the server).
func RunLoad(ctx context.Context, workers int, do func(ctx context.Context) error) *Load {
	l := &Load{}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				err := do(ctx)
				switch {
				case err == nil:
					l.ok.Add(1)
				case ctx.Err() == nil:
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	return l
}

// WaitFor waits until at least n calls succeeded, failing the test after timeout.
func (l *Load) WaitFor(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for l.ok.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("load reached %d successes in %v, want %d", l.ok.Load(), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Finish waits for the workers and fails the test if any call failed.
func (l *Load) Finish(t testing.TB) {
	t.Helper()
	l.wg.Wait()
	t.Logf("load: %d succeeded, %d failed", l.ok.Load(), l.failed.Load())
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d calls failed (first: %v)", n, l.firstErr.Load())
	}
}

// Replace is a restart under load: it starts a second process with the same command line (it
// binds the same ports with SO_REUSEPORT), then stops the first with SIGTERM and waits for its
// clean exit. It returns the new process.
func Replace(t testing.TB, old *exec.Cmd, ready string) *exec.Cmd {
	t.Helper()
	next := Start(t, old.Path, ready, old.Args[1:]...)
	Stop(t, old)
	return next
}

// Result is how a process run by Run ended.
type Result struct {
	Stdout, Stderr string
	// Code is the exit code; -1 if the process was killed after Run's timeout.
	Code int
}

// Run runs bin with args to completion, killing it after timeout (then Code is -1 and the test
// fails). stdin is empty.
func Run(t testing.TB, timeout time.Duration, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); cmd.ProcessState == nil {
		t.Fatalf("run %v: %v", args, err)
	}
	res := Result{Stdout: stdout.String(), Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		res.Code = -1
		t.Errorf("%v still running after %v (killed); stderr:\n%s", args, timeout, res.Stderr)
	}
	return res
}
