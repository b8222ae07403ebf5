package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-cdn/meridian/internal/gcheadroom"
	"github.com/meridian-cdn/meridian/internal/prefault"
)

// NewCommand returns `meridian edge`: run one edge node from a YAML config, flags overriding
// the file.
func NewCommand() *cobra.Command {
	var (
		file   string
		over   Config
		devTLS bool
	)
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run an edge cache node",
		Long: `Run an edge cache node: a caching reverse proxy for the hostnames in its config.

The config file is YAML (see docs/edge.md); flags override its fields.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg Config
			if file != "" {
				c, err := LoadConfig(file)
				if err != nil {
					return err
				}
				cfg = c
			}
			f := cmd.Flags()
			if f.Changed("listen") {
				cfg.Listen = over.Listen
			}
			if f.Changed("admin-listen") {
				cfg.AdminListen = over.AdminListen
			}
			if f.Changed("pop") {
				cfg.PoP = over.PoP
			}
			if f.Changed("node") {
				cfg.Node = over.Node
			}
			if f.Changed("pprof") {
				cfg.Pprof = over.Pprof
			}
			if f.Changed("access-log") {
				cfg.AccessLog = over.AccessLog
			}
			if f.Changed("lame-duck") {
				cfg.LameDuck = over.LameDuck
			}
			if f.Changed("nats") {
				cfg.Fleet.NATS = over.Fleet.NATS
			}
			if f.Changed("nats-creds") {
				cfg.Fleet.Creds = over.Fleet.Creds
			}
			if f.Changed("https-listen") {
				cfg.HTTPSListen = over.HTTPSListen
			}
			if devTLS {
				cfg.TLS.Dev = true
				if cfg.HTTPSListen == "" {
					cfg.HTTPSListen = "127.0.0.1:8443"
				}
			}
			cfg.Logger = slog.New(newLogHandler(os.Stderr))
			n, err := New(cfg)
			if err != nil {
				return err
			}
			if limit, set := memoryLimit(n.cfg, os.Getenv("GOMEMLIMIT")); set {
				debug.SetMemoryLimit(limit)
				n.log.Info("memory limit", "bytes", limit)
			}
			ctx, stop := context.WithCancel(cmd.Context())
			var background sync.WaitGroup
			defer func() {
				stop()
				background.Wait()
			}()
			if pct, set := gcPercent(os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT")); set {
				debug.SetGCPercent(pct)
				// The collector's headroom stays near a fixed size while the store fills,
				// rather than growing with it (internal/gcheadroom).
				background.Go(func() { gcheadroom.Run(ctx, edgeHeadroom(n.cfg)) })
			}
			// The store's new memory is faulted in by the page in bulk (internal/prefault):
			// on some VMs page faults are a quarter of a miss's CPU while the store fills.
			background.Go(func() { prefault.Run(ctx, 5*time.Millisecond) })
			if err := n.Run(ctx); err != nil {
				return fmt.Errorf("edge: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "config", "c", "", "YAML config file")
	f.StringVar(&over.Listen, "listen", "", "HTTP listen address (default 127.0.0.1:8080)")
	f.StringVar(&over.AdminListen, "admin-listen", "", `admin listen address for /healthz and /metrics, or "off" (default 127.0.0.1:9080)`)
	f.StringVar(&over.PoP, "pop", "", "PoP id (default local)")
	f.StringVar(&over.Node, "node", "", "node id within the PoP (default edge-1)")
	f.BoolVar(&over.AccessLog, "access-log", false, "log one JSON line per request")
	f.BoolVar(&over.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the admin listener")
	f.StringVar(&over.Fleet.NATS, "nats", "", "join the fleet through this NATS URL (e.g. the control plane's, nats://127.0.0.1:4222); without it the node runs standalone")
	f.StringVar(&over.Fleet.Creds, "nats-creds", "", "the node's NATS credentials file (meridian control creds edge)")
	f.StringVar(&over.HTTPSListen, "https-listen", "", "HTTPS and HTTP/3 listen address (TCP and UDP, same port)")
	f.BoolVar(&devTLS, "dev-tls", false, "serve HTTPS and HTTP/3 with a self-signed certificate (default address 127.0.0.1:8443); never in production")
	f.DurationVar(&over.LameDuck, "lame-duck", 0, "keep serving this long after SIGTERM while reporting draining")
	return cmd
}

// memoryBaseline is what an edge process holds besides its caches: code, runtime, TLS, the
// fleet client, connection buffers at a moderate load.
const memoryBaseline = 64 << 20

// memoryLimit is the soft memory limit the edge process sets itself, unless the operator set
// GOMEMLIMIT (env): memoryFactor x max_bytes + in_flight_bytes + a baseline. The store's
// accounting bounds the live heap by max_bytes; without a limit Go lets the heap grow to twice
// the live data before collecting (GOGC=100), which with many small objects shows as RSS well
// above max_bytes.
func memoryLimit(cfg Config, env string) (int64, bool) {
	if env != "" {
		return 0, false
	}
	return cfg.Cache.MaxBytes*memoryFactor/100 + cfg.Cache.InFlightBytes + memoryBaseline, true
}

// memoryFactor (percent of max_bytes) leaves the collector room for garbage at a full store,
// the cache's steady state, where every new object evicts an old one. The limit counts what
// the store's accounting does not (the holes eviction leaves in the heap's spans, the
// collector's own metadata): at 115 % a full, churning 1 GiB store was left a heap goal only
// 50 MB above its live heap, collected 14 times in 8 s, and a 16 KiB miss cost 449 us of CPU
// instead of 222 us at 130 % (docs/benchmarks.md, "Tenth pass"); RSS was 1.26 and 1.40 x
// max_bytes. With small objects in segments it is still so: at 100 % a churning store's
// misses cost 1.4-2.1 times the CPU, for RSS 1.10 x max_bytes ("Thirty-sixth pass").
const memoryFactor = 130

// edgeGCPercent is the edge's GOGC. A node serving hits holds a small live heap besides its
// store and allocates fast: at GOGC=100 it collected about three times a second under wrk
// (14 MB live, 28 MB goal), each cycle taking CPU from requests and adding to the tail. Under
// the edge's own memory limit a higher GOGC only lets the heap use the budget it was given
// before collecting: with the store full the limit, not GOGC, decides when the collector
// runs, so the memory bound is unchanged.
const edgeGCPercent = 400

// edgeHeadroom is what the edge keeps for garbage above its live heap when it sets GOGC
// itself (under its own memory limit): edgeGCPercent for a small live heap (a node serving
// hits: a few MB live), at least 64 MiB as its store fills, and a share of the live heap that
// puts a full store's goal at the memory limit or above it, so that there the limit decides
// when the collector runs, as it did before. At edgeGCPercent throughout, an edge filling its
// store took fresh pages for four times what it stored (docs/benchmarks.md, "Twenty-first
// pass").
func edgeHeadroom(cfg Config) gcheadroom.Config {
	limit, _ := memoryLimit(cfg, "")
	maxBytes := cfg.Cache.MaxBytes
	return gcheadroom.Config{Min: 64 << 20, Fraction: float64(limit-maxBytes) / float64(maxBytes),
		Max: edgeGCPercent, Every: 100 * time.Millisecond}
}

// gcPercent is the GC percentage the edge sets itself: only under its own memory limit (an
// operator's GOMEMLIMIT may be "off") and unless the operator set GOGC.
func gcPercent(gogc, gomemlimit string) (int, bool) {
	if gogc != "" || gomemlimit != "" {
		return 0, false
	}
	return edgeGCPercent, true
}

// newLogHandler is the command's log: one JSON object a line on w, a duration written as Go
// writes it ("2s"). slog's JSON handler writes one as its nanoseconds, so "edge draining"
// said lame_duck 2000000000 and shutdown_timeout 30000000000.
func newLogHandler(w io.Writer) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}})
}
