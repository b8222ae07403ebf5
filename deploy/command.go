package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"
)

// NewCommand returns `meridian deploy` with its `render` subcommand.
func NewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "deploy",
		Short: "Render per-VM cloud-init, systemd units and configs from one fleet file",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var out, binURL, binPath string
	render := &cobra.Command{
		Use:   "render fleet.yaml --out DIR",
		Short: "Write every VM's cloud-init, units, meridian and NATS configs, and the Prometheus config",
		Long: `Render the fleet file (docs/deploy.md) into DIR: one directory per VM with its
cloud-init user data and the files it carries, prometheus/prometheus.yml, and vms.json for
Terraform. --binary-url or --binary-path override the fleet file's release section.
Files already in DIR that the fleet no longer renders are left alone.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := Load(args[0])
			if err != nil {
				return err
			}
			if binURL != "" || binPath != "" {
				f.Release.BinaryURL, f.Release.BinaryPath, f.Release.BinarySHA256 = binURL, binPath, ""
			}
			files, err := Render(f, RenderOptions{})
			if err != nil {
				return fmt.Errorf("render %s: %w", args[0], err)
			}
			if err := WriteTree(out, files); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rendered %d files for %d VMs into %s\n", len(files), len(f.VMs()), out)
			return nil
		},
	}
	render.Flags().StringVar(&out, "out", "rendered", "output directory")
	render.Flags().StringVar(&binURL, "binary-url", "", "https URL of the meridian linux binary (overrides release.binary_url)")
	render.Flags().StringVar(&binPath, "binary-path", "", "path of the meridian binary on the VM image (overrides release.binary_path)")
	render.MarkFlagsMutuallyExclusive("binary-url", "binary-path")
	cmd.AddCommand(render)
	return cmd
}

// WriteTree writes files (path relative to dir -> content) under dir, creating directories.
func WriteTree(dir string, files map[string][]byte) error {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("write rendered tree: %w", err)
		}
		if err := os.WriteFile(full, files[p], 0o644); err != nil {
			return fmt.Errorf("write rendered tree: %w", err)
		}
	}
	return nil
}
