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
	"time"

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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first signal asks for a graceful stop; an operator who signals again does not want
	// to wait for it (requests in flight, shutdown_timeout). One channel takes both, so no
	// signal can count as the first for one listener and the second for another.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { // lives as long as the process
		<-sigs
		cancel()
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "meridian: second signal (%v): exiting without waiting for work in flight\n", sig)
		// Die of the signal itself rather than exit 128+n: systemd counts a death by
		// SIGTERM or SIGINT as a clean stop (Restart=on-failure would restart an exit 143),
		// and a shell still reports 128+n.
		s := sig.(syscall.Signal)
		signal.Reset(s)
		// On Windows Signal only kills (TerminateProcess, exit status 1) and fails for SIGINT
		// and SIGTERM: the process exits 128+n at once instead of dying of the signal.
		if self, err := os.FindProcess(os.Getpid()); err == nil && self.Signal(s) == nil {
			time.Sleep(5 * time.Second) // the signal arrives on another thread meanwhile
		}
		os.Exit(128 + int(s))
	}()
	root := newRoot()
	if ignoresHangup(root, os.Args[1:]) {
		// SIGHUP is what operators send a daemon by habit for a reload (nginx, NATS,
		// Prometheus): a server reads its files at start (and follows TLS certificates, the
		// MMDB and the bucket's host configs on its own), so a hangup says so and changes
		// nothing. Go's default ended the process at once, without draining, and systemd
		// counts that a clean stop. A one-shot command keeps that default: it dies when its
		// terminal goes away, as any command line tool does.
		hups := make(chan os.Signal, 1)
		signal.Notify(hups, syscall.SIGHUP)
		go func() { // lives as long as the process
			for range hups {
				fmt.Fprintln(os.Stderr, "meridian: SIGHUP ignored: configuration is read at start; restart the process to apply a change (SIGTERM stops it gracefully)")
			}
		}()
	}
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "meridian:", err)
		os.Exit(1)
	}
}

// serverAnnotation marks the commands that run a server until they are stopped.
const serverAnnotation = "meridian.server"

// server marks cmd as one that serves until it is stopped (ignoresHangup).
func server(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[serverAnnotation] = "true"
	return cmd
}

// ignoresHangup reports whether args (without the program's name) run a server, which logs
// and ignores SIGHUP, rather than a one-shot command (purge, deploy, sim, dns explain, control
// creds, version), which dies of it.
func ignoresHangup(root *cobra.Command, args []string) bool {
	c, _, err := root.Find(args)
	return err == nil && c.Annotations[serverAnnotation] == "true"
}

// newRoot is the meridian command with its subcommands.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "meridian",
		Short:         "Meridian is an open-source CDN",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		server(edge.NewCommand()),
		server(origin.NewCommand()),
		server(control.NewCommand()),
		server(dnsroute.NewCommand()),
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
	return root
}
