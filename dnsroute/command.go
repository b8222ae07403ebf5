package dnsroute

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"

	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
)

// NewCommand returns `meridian dns`: run the server, explain a routing decision, or write the
// test MMDB.
func NewCommand() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Run the authoritative routing DNS server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if cfg.NATS != "" {
				return RunLive(cmd.Context(), cfg, 10*time.Second)
			}
			s, err := New(cfg)
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	cmd.PersistentFlags().StringVar(&cfgPath, "config", "dns.yaml", "config file")

	var name string
	var v6 bool
	explain := &cobra.Command{
		Use:   "explain IP",
		Short: "Say where a client address is located and which PoP it would be sent to",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("explain: %w", err)
			}
			cfg, err := LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			qt := dns.TypeA
			if v6 {
				qt = dns.TypeAAAA
			}
			var ex Explanation
			if cfg.NATS != "" {
				// The live fleet, its load and the latency map, as the running server sees them.
				ex, err = ExplainLive(cmd.Context(), cfg, addr, name, qt, 10*time.Second)
			} else {
				var s *Server
				if s, err = New(cfg); err == nil {
					ex, err = s.Explain(addr, name, qt)
				}
			}
			if err != nil {
				return err
			}
			return ex.Write(cmd.OutOrStdout())
		},
	}
	explain.Flags().StringVar(&name, "name", "", "routed name to ask for, \"@\" for the apex (default: the first routed hostname)")
	explain.Flags().BoolVar(&v6, "aaaa", false, "ask for AAAA instead of A")

	gen := &cobra.Command{
		Use:    "gen-mmdb FILE",
		Short:  "Write the deterministic GeoLite2-City-format test database",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return geodata.WriteFile(args[0])
		},
	}
	cmd.AddCommand(explain, gen)
	return cmd
}
