package sim

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-cdn/meridian/sim/report"
	"github.com/meridian-cdn/meridian/sim/scenario"
)

// ErrInvariants is returned by the command when --check is given and an invariant failed.
var ErrInvariants = errors.New("sim: invariants failed")

// NewCommand returns `meridian sim`: run a scenario (the built-in "world" one by default) and
// write its report.
func NewCommand() *cobra.Command {
	var (
		scenarioFile string
		duration     time.Duration
		seed         int64
		out          string
		check        bool
		verbose      bool
	)
	cmd := &cobra.Command{
		Use:   "sim [--scenario FILE] [--duration D] [--seed N] [--out DIR] [--check]",
		Short: "Run a whole fleet on this machine against simulated clients worldwide",
		Long: "Sim starts a control plane with embedded NATS, PoPs of real edge nodes, the DNS server\n" +
			"and a reference origin on 127.0.0.x, sends simulated clients from cities around the\n" +
			"world through them with a WAN latency model, plays the scenario's timeline of faults,\n" +
			"and writes report.json and report.html. Without --scenario it runs the built-in\n" +
			"\"world\" scenario (about a minute). The schema is in docs/sim.md.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := scenario.Default()
			if scenarioFile != "" {
				var err error
				if s, err = scenario.Load(scenarioFile); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("duration") {
				if duration <= 0 {
					return fmt.Errorf("--duration must be positive, got %v", duration)
				}
				s.Duration = duration
				// A shorter run keeps the events that still fit.
				kept := s.Events[:0]
				for _, e := range s.Events {
					if e.At <= duration {
						kept = append(kept, e)
					}
				}
				if dropped := len(s.Events) - len(kept); dropped > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "sim: %d events after %v left out\n", dropped, duration)
				}
				s.Events = kept
			}
			if cmd.Flags().Changed("seed") {
				if seed < 0 {
					return fmt.Errorf("--seed must not be negative, got %d", seed)
				}
				s.Seed = uint64(seed)
			}
			if err := s.Validate(); err != nil {
				return err
			}
			level := slog.LevelError
			if verbose {
				level = slog.LevelWarn
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			fmt.Fprintf(cmd.ErrOrStderr(), "sim: scenario %q, %d PoPs, %v after %v warm-up, seed %d\n",
				s.Name, len(s.PoPs), s.Duration, s.Warmup, s.Seed)
			rep, err := Run(cmd.Context(), s, Options{Out: out, Stdout: cmd.OutOrStdout(), Progress: cmd.ErrOrStderr(), Logger: log})
			if rep != nil && out != "" && !errors.Is(err, errNotWritten) {
				abs, _ := filepath.Abs(out)
				fmt.Fprintf(cmd.OutOrStdout(), "\nreport: %s\n", filepath.Join(abs, "report.html"))
			}
			if err != nil {
				return err
			}
			if check && !report.Passed(rep.Invariants) {
				return ErrInvariants
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&scenarioFile, "scenario", "", "scenario YAML file (default: the built-in \"world\" scenario)")
	f.DurationVar(&duration, "duration", 0, "override the scenario's duration (after the warm-up)")
	f.Int64Var(&seed, "seed", 0, "override the scenario's seed")
	f.StringVar(&out, "out", "sim-out", "directory for report.json and report.html")
	f.BoolVar(&check, "check", false, "exit non-zero if any invariant fails")
	f.BoolVarP(&verbose, "verbose", "v", false, "log the fleet's warnings to stderr")
	return cmd
}
