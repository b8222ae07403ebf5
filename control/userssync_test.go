package control

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/natsauth"
)

// TestUsersSyncStatBeforeRead: a connection attempt's sync reads the users file only when its
// identity, size or modification time changed since the last look, or when that time was too
// recent to tell a later write by (usersRacyWindow); every attempt read it whole.
// `meridian control creds` writes it by renaming a new file into place, a new file identity,
// which the check sees even within one tick of the modification time and at the same size.
// An editor rewrites it in place: at the same size within one tick of the file system's clock
// (or second, on a file system that keeps seconds) it keeps size and time, and was skipped, the
// revoked credential accepted until the next change. A file last written long ago, then
// rewritten in place with its size and old time kept (which no write after the look can do),
// goes unseen: that is how the test tells that the file was not read.
func TestUsersSyncStatBeforeRead(t *testing.T) {
	const before, after = `[{"nkey":"UAAAA"}]`, `[{"nkey":"UBBBB"}]` // the same size
	for _, tt := range []struct {
		name   string
		old    bool // the file's time set an hour back before the first look
		change func(t *testing.T, path string, mtime time.Time)
		reload bool
	}{
		{"unchanged", true, func(*testing.T, string, time.Time) {}, false},
		{"unchanged, just written", false, func(*testing.T, string, time.Time) {}, false},
		{"rewritten in place, same size and mtime, long after the last write", true, func(t *testing.T, p string, mt time.Time) {
			writeInPlace(t, p, after, mt)
		}, false},
		{"rewritten in place, same size and mtime, within a tick of the last write", false, func(t *testing.T, p string, mt time.Time) {
			writeInPlace(t, p, after, mt)
		}, true},
		{"renamed into place (creds), same size and mtime", true, func(t *testing.T, p string, mt time.Time) {
			if err := natsauth.WriteSecret(p, []byte(after)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"the same bytes renamed into place", true, func(t *testing.T, p string, _ time.Time) {
			if err := natsauth.WriteSecret(p, []byte(before)); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"rewritten in place, another size", true, func(t *testing.T, p string, mt time.Time) {
			writeInPlace(t, p, after+" ", mt)
		}, true},
		{"rewritten in place, another mtime", true, func(t *testing.T, p string, mt time.Time) {
			writeInPlace(t, p, after, mt.Add(time.Second))
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), usersFileName)
			if err := natsauth.WriteSecret(p, []byte(before)); err != nil {
				t.Fatal(err)
			}
			if tt.old {
				old := time.Now().Add(-time.Hour)
				if err := os.Chtimes(p, old, old); err != nil {
					t.Fatal(err)
				}
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			reloads := 0
			u := &usersSync{path: p, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				reload: func() (int, error) { reloads++; return 1, nil }}
			u.sync() // applies the file as it is
			if reloads != 1 {
				t.Fatalf("%d reloads of a new file, want 1", reloads)
			}
			tt.change(t, p, fi.ModTime())
			u.sync()
			if got := reloads == 2; got != tt.reload {
				t.Errorf("reloaded %v after the change, want %v", got, tt.reload)
			}
		})
	}
}

// writeInPlace rewrites the file at p (the same file: truncated and written) with s, then sets
// its modification time to mtime.
func writeInPlace(t *testing.T, p, s string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}
