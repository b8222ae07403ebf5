package deploy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
	var out, binURL, binSHA, binPath, secretsPath string
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
				f.Release.BinaryURL, f.Release.BinaryPath, f.Release.BinarySHA256 = binURL, binPath, binSHA
			}
			if secretsPath == "" {
				secretsPath = filepath.Join(out, "fleet-secrets.json")
			}
			sec, err := LoadSecrets(secretsPath)
			if err != nil {
				return err
			}
			files, err := Render(f, RenderOptions{Secrets: sec})
			if err != nil {
				return fmt.Errorf("render %s: %w", args[0], err)
			}
			if err := os.MkdirAll(filepath.Dir(secretsPath), 0o700); err != nil {
				return err
			}
			if err := sec.Save(secretsPath); err != nil {
				return err
			}
			if err := WriteTree(out, files); err != nil {
				return err
			}
			if err := writeGitignore(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rendered %d files for %d VMs into %s\n", len(files), len(f.VMs()), out)
			return nil
		},
	}
	render.Flags().StringVar(&out, "out", "rendered", "output directory")
	render.Flags().StringVar(&secretsPath, "secrets", "", "the fleet's NATS secrets (created if missing, mode 0600; default OUT/fleet-secrets.json): keep it to render again with the same credentials")
	render.Flags().StringVar(&binURL, "binary-url", "", "https URL of the meridian linux binary (overrides release.binary_url)")
	render.Flags().StringVar(&binPath, "binary-path", "", "path of the meridian binary on the VM image (overrides release.binary_path)")
	render.Flags().StringVar(&binSHA, "binary-sha256", "", "hex SHA-256 of the --binary-url download (required with it)")
	render.MarkFlagsMutuallyExclusive("binary-url", "binary-path")
	render.MarkFlagsRequiredTogether("binary-url", "binary-sha256")
	validate := &cobra.Command{
		Use:   "validate fleet.yaml",
		Short: "Check a fleet file (render checks it too): every mistake with its file:line:column",
		Long: `Check the fleet file as render does, without writing anything: fields, addresses,
ports, checksums of downloads, NATS TLS for any fleet not on loopback addresses, and the size
of every VM's user data (EC2 takes 16 KiB, gzipped).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := Load(args[0])
			if err != nil {
				return err
			}
			// Render in memory for the checks of what it renders (the size of user data).
			if _, err := Render(f, RenderOptions{}); err != nil {
				return fmt.Errorf("render %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: fleet %s is valid (%d VMs)\n", args[0], f.Name, len(f.VMs()))
			return nil
		},
	}
	cmd.AddCommand(render, validate)
	return cmd
}

// WriteTree writes files (path relative to dir -> content) under dir, creating directories.
// Credentials (under a VM's CredsDir) are written with mode 0600 in a 0700 directory.
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
		mode := os.FileMode(0o644)
		if IsSecret(p) {
			mode = 0o600
			if err := os.Chmod(filepath.Dir(full), 0o700); err != nil {
				return fmt.Errorf("write rendered tree: %w", err)
			}
		}
		if err := os.WriteFile(full, files[p], mode); err != nil {
			return fmt.Errorf("write rendered tree: %w", err)
		}
		if err := os.Chmod(full, mode); err != nil {
			return fmt.Errorf("write rendered tree: %w", err)
		}
	}
	return nil
}

// gitignore keeps the secrets render writes into the output directory (the default
// fleet-secrets.json, every VM's CredsDir) out of a repository the tree is committed to, as
// docs/operations.md has the operator do.
var gitignore = "# Written by `meridian deploy render`: the fleet's NATS secrets stay out of the repository.\n" +
	"/fleet-secrets.json\n/*" + CredsDir + "/\n"

// writeGitignore writes dir/.gitignore unless there is one: the operator's own is left alone.
func writeGitignore(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, ".gitignore"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write rendered tree: %w", err)
	}
	if _, err := f.WriteString(gitignore); err != nil {
		f.Close()
		return fmt.Errorf("write rendered tree: %w", err)
	}
	return f.Close()
}

// IsSecret says whether the rendered file at path (relative to the output directory) is a
// credential: a VM's CredsDir, delivered beside the cloud-init and never in it.
func IsSecret(path string) bool { return strings.Contains(path, CredsDir+"/") }
