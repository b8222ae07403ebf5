package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meridian-cdn/meridian/internal/natsauth"
)

// newCredsCommand returns `meridian control creds`: issue, list and revoke the embedded NATS
// server's credentials in a store directory.
func newCredsCommand() *cobra.Command {
	var storeDir, out string
	cmd := &cobra.Command{
		Use:   "creds",
		Short: "Issue, list and revoke NATS credentials of the embedded NATS server",
		Long: `Issue, list and revoke the NATS credentials that the embedded NATS server of
'meridian control' accepts (kept in --store-dir/nats-auth). A credential is printed once, when
issued; give it to the process it names (edge: fleet.creds in edge.yaml, dns: creds in
dns.yaml). A running control accepts a new credential from its first connection, refuses a
revoked one from its next, and closes a revoked one's connections within a second. Issuing again for the same identity adds a second credential: both work until the
old one is revoked (rotation without downtime, see docs/security.md).`,
	}
	cmd.PersistentFlags().StringVar(&storeDir, "store-dir", DefaultStoreDir, "the control's store directory")

	issue := func(id func() natsauth.Identity) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if out != "" {
				// The file first: a credential is accepted only once its seed is written.
				deliver, undo := credentialFile(out)
				_, err := issueCredential(storeDir, id(), deliver, undo)
				return err
			}
			c, err := IssueCredential(storeDir, id())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(c.Format())
			return err
		}
	}
	var pop, node, name string
	edgeCmd := &cobra.Command{
		Use:   "edge --pop POP --node NODE",
		Short: "Issue an edge node's credential",
		Args:  cobra.NoArgs,
		RunE:  issue(func() natsauth.Identity { return natsauth.Edge(pop, node) }),
	}
	edgeCmd.Flags().StringVar(&pop, "pop", "", "the node's PoP id")
	edgeCmd.Flags().StringVar(&node, "node", "", "the node's id within its PoP")
	dnsCmd := &cobra.Command{
		Use:   "dns [--name NAME]",
		Short: "Issue a DNS server's (read-only) credential",
		Args:  cobra.NoArgs,
		RunE:  issue(func() natsauth.Identity { return natsauth.DNS(name) }),
	}
	dnsCmd.Flags().StringVar(&name, "name", "dns", "the DNS server's name")
	for _, c := range []*cobra.Command{edgeCmd, dnsCmd} {
		c.Flags().StringVarP(&out, "out", "o", "", "write the credential to this file (mode 0600) instead of stdout")
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the credentials the server accepts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// As revoke: an empty table would read as "the fleet accepts no credential", where
			// a store always holds control's own; --store-dir is wrong or missing.
			if _, err := os.Stat(filepath.Join(credsDir(storeDir), usersFileName)); errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("list: no credentials in %s (not the store directory of a control: --store-dir)", storeDir)
			}
			recs, err := ListCredentials(storeDir)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IDENTITY\tNKEY\tISSUED")
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Identity, r.NKey, r.Issued.Format("2006-01-02T15:04:05Z"))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NKEY|IDENTITY",
		Short: "Revoke a credential by public key, or every credential of an identity (edge.lon.n1)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(credsDir(storeDir)); errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("revoke: no credentials in %s", storeDir)
			}
			n, err := RevokeCredential(storeDir, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %d credential(s)\n", n)
			return nil
		},
	}
	cmd.AddCommand(edgeCmd, dnsCmd, list, revoke)
	return cmd
}

// credentialFile is the delivery of creds -o: deliver writes the credential to out, and undo
// takes it back, putting back the file out held before (say, the identity's credential in use,
// which users.json still accepts) or removing out if there was none.
func credentialFile(out string) (deliver func(natsauth.Credential) error, undo func()) {
	var prev []byte
	deliver = func(c natsauth.Credential) error {
		prev, _ = os.ReadFile(out) // nil if there is none (or it cannot be read: then removed)
		if err := c.WriteFile(out); err != nil {
			return fmt.Errorf("write %s (no credential issued): %w", out, err)
		}
		return nil
	}
	undo = func() {
		if prev != nil {
			natsauth.WriteSecret(out, prev)
			return
		}
		os.Remove(out)
	}
	return deliver, undo
}
