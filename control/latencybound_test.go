package control

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/wire"
)

// TestLatencyMaxBytes: honest edges fill a 64 MiB latency bucket on a busy fleet
// (docs/security.md, "Latency bucket"), so control sizes it with --latency-max-bytes. The
// bound is applied to the existing bucket at every start that gives the flag, raised or
// lowered; a start without it keeps what the bucket has (a control started by hand does not
// shrink a large fleet's bucket); and making sure of the buckets, as every control start does
// first, never puts it back to 64 MiB meanwhile. The bucket lives in the embedded NATS's store
// across the starts.
func TestLatencyMaxBytes(t *testing.T) {
	dir := t.TempDir() // one store: the cases are successive starts, in order
	for _, tt := range []struct {
		name  string
		flags string // control's flags, as given on its command line
		want  int64
	}{
		{"first start, without the flag", "", fleet.LatencyMaxBytes},
		{"with the flag", "--latency-max-bytes 268435456", 256 << 20},
		{"again without the flag", "", 256 << 20},
		{"with a lower bound", "--latency-max-bytes 100663296", 96 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := NewCommand()
			if err := cmd.ParseFlags(strings.Fields(tt.flags)); err != nil {
				t.Fatalf("meridian control %s: %v", tt.flags, err)
			}
			bound, err := cmd.Flags().GetInt64("latency-max-bytes")
			if err != nil {
				t.Fatal(err)
			}
			ts := startServer(t, Config{StoreDir: dir, PurgeRate: -1, LatencyMaxBytes: bound})
			defer ts.stop()
			if got := latencyMaxBytes(t, ts); got != tt.want {
				t.Errorf("the latency bucket's max bytes after a start with %q = %d, want %d", tt.flags, got, tt.want)
			}
			// What another control's start does before it applies its own bound.
			if err := fleet.EnsureBuckets(t.Context(), ts.JetStream(), "", time.Second, 1); err != nil {
				t.Fatal(err)
			}
			if got := latencyMaxBytes(t, ts); got != tt.want {
				t.Errorf("the latency bucket's max bytes after another start made sure of the buckets = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestLatencyMaxBytesBelowHeld: a start that lowers the latency bucket's bound below what the
// bucket holds deletes nothing, and the bucket refuses every write that does not fit (on a
// cluster updates too) until enough records expire, so DNS may get no latency updates for up
// to 15 minutes: control says so once, with both figures, rather than leave the operator to
// find out from DNS. A bound above what it holds says nothing. The cases are successive
// starts on one store.
func TestLatencyMaxBytesBelowHeld(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{StoreDir: dir, PurgeRate: -1})
	// About 1.2 MB: more than the smallest bound control accepts (MinLatencyMaxBytes).
	const records = 2400
	for i := range records {
		subject := "$KV." + wire.Bucket("", wire.LatencyBucket) + ".lon.n1." + fmt.Sprintf("net%d", i)
		if _, err := ts.JetStream().PublishAsync(subject, bytes.Repeat([]byte("r"), 500)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ts.JetStream().PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("the records were not all stored in 30 s")
	}
	ts.stop()
	const warning = "the latency bucket holds more than --latency-max-bytes"
	for _, tt := range []struct {
		name  string
		bound int64
		warns int
	}{
		{"above what it holds", 2 << 20, 0},
		{"below what it holds", MinLatencyMaxBytes, 1},
		{"kept (0)", 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logtest.Warnings{}
			ts := startServer(t, Config{StoreDir: dir, PurgeRate: -1, LatencyMaxBytes: tt.bound, Logger: slog.New(logs)})
			ts.stop() // the start is what warns; stopped, it warns no more
			if got := logs.Count(warning); got != tt.warns {
				t.Errorf("a start with --latency-max-bytes %d logged %d warnings %q, want %d", tt.bound, got, warning, tt.warns)
			}
		})
	}
}

// latencyMaxBytes reads the latency bucket's byte bound from JetStream.
func latencyMaxBytes(t *testing.T, ts *testServer) int64 {
	t.Helper()
	st, err := ts.JetStream().Stream(t.Context(), "KV_"+wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.MaxBytes
}

// TestLatencyMaxBytesRefused: a negative bound is refused, not taken for "keep"; so is one too
// small to hold a fleet's records, which is a unit slip ("256" meant as MiB): before, the
// bucket was bounded to 256 bytes and refused every edge's records.
func TestLatencyMaxBytesRefused(t *testing.T) {
	for _, tt := range []struct {
		v    int64
		want string // in the error; "" for none
	}{
		{-1, "negative"},
		{256, "did you mean 256 MiB (268435456)"},
		{MinLatencyMaxBytes - 1, "below 1 MiB"},
		{MinLatencyMaxBytes, ""},
		{0, ""},
	} {
		_, err := New(Config{TokensFile: "testdata/tokens.yaml", LatencyMaxBytes: tt.v})
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("New with LatencyMaxBytes %d: %v, want no error", tt.v, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), "--latency-max-bytes") || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("New with LatencyMaxBytes %d = %v, want an error naming --latency-max-bytes and saying %q", tt.v, err, tt.want)
		}
	}
}
