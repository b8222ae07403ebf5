// Command meridian is an open-source CDN: edge cache nodes, a reference origin, an
// authoritative routing DNS, a control plane, a purge client, a simulator and a deploy renderer,
// all in one binary. main only sets up the signal context and dispatches to the packages that
// own each subcommand.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meridian-cdn/meridian/control"
	"github.com/meridian-cdn/meridian/deploy"
	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/sim"
	"github.com/meridian-cdn/meridian/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal asks for a graceful stop; an operator who signals again does not want
	// to wait for it (requests in flight, shutdown_timeout): exit at once, as 128+signal.
	again := make(chan os.Signal, 2)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	go func() { // lives as long as the process
		<-again // the first, which also cancelled ctx
		sig := <-again
		fmt.Fprintf(os.Stderr, "meridian: second signal (%v): exiting without waiting for work in flight\n", sig)
		code := 1
		if s, ok := sig.(syscall.Signal); ok {
			code = 128 + int(s)
		}
		os.Exit(code)
	}()
	root := &cobra.Command{
		Use:           "meridian",
		Short:         "Meridian is an open-source CDN",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		edge.NewCommand(),
		origin.NewCommand(),
		control.NewCommand(),
		dnsroute.NewCommand(),
		deploy.NewCommand(),
		purge.NewCommand(),
		sim.NewCommand(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "meridian", wire.Version()) },
		},
	)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "meridian:", err)
		stop()
		os.Exit(1)
	}
}
