package origin

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"
)

// NewCommand returns the `meridian origin` command, which runs a reference origin until the
// command's context ends.
func NewCommand() *cobra.Command {
	var (
		listen   string
		shutdown time.Duration
	)
	cmd := &cobra.Command{
		Use:   "origin",
		Short: "Run the reference origin server (generated objects, faults, counters)",
		Long: "Run the reference origin server. GET /<path>?size=N&cc=... serves a generated object; " +
			"POST /_bump, POST|DELETE /_fault, GET /_stats and GET /metrics control and observe it. " +
			"See docs/origin.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			s, err := New(Config{Addr: listen, Logger: log, ShutdownTimeout: shutdown})
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "TCP address to listen on")
	cmd.Flags().DurationVar(&shutdown, "shutdown-timeout", 5*time.Second, "how long to let in-flight requests finish on exit")
	return cmd
}
