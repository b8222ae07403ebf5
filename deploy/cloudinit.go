package deploy

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// The system users the units run as (their User=), one per service: the internet-facing DNS
// and edge cannot read control's tokens or another process's NATS credential.
const (
	userNATS    = "meridian-nats"
	userControl = "meridian-control"
	userDNS     = "meridian-dns"
	userEdge    = "meridian-edge"
)

// TmpfilesConf is the systemd-tmpfiles config (tmpfiles.d(5)) on every VM that creates
// CredsDir and gives each credential in it, and each secret file the fleet file names (the API
// tokens and key, the NATS TLS key), to the one service that reads it, mode 0600, however it
// was copied in. Cloud-init applies it once, systemd at every boot, and every unit before it
// starts (ExecStartPre): a file copied in since, root's or with the mode it had elsewhere, is
// its service's by the unit's next try.
const TmpfilesConf = "/etc/tmpfiles.d/meridian.conf"

// cloudConfig is the subset of cloud-init's #cloud-config schema the renderer writes.
type cloudConfig struct {
	PackageUpdate bool        `yaml:"package_update"`
	Packages      []string    `yaml:"packages"`
	Users         []any       `yaml:"users"`
	WriteFiles    []writeFile `yaml:"write_files"`
	RunCmd        [][]string  `yaml:"runcmd"`
}

type cloudUser struct {
	Name         string `yaml:"name"`
	System       bool   `yaml:"system"`
	Homedir      string `yaml:"homedir"`
	NoCreateHome bool   `yaml:"no_create_home"`
	Shell        string `yaml:"shell"`
	LockPasswd   bool   `yaml:"lock_passwd"`
}

type writeFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	// Defer writes the file in the final stage, after users and packages exist.
	Defer   bool   `yaml:"defer"`
	Content string `yaml:"content"`
}

// cloudInit renders a VM's user data: the meridian user, the files, the binaries, the units.
// Nothing secret is in it (user data is readable from the instance metadata service): tokens,
// TLS keys and the MMDB are file references the operator provisions.
func (r *renderer) cloudInit(vm, role string, paths []string, files map[string][]byte, unitNames []string) ([]byte, error) {
	rel := r.f.Release
	cc := cloudConfig{
		PackageUpdate: true,
		Packages:      []string{"ca-certificates", "curl"},
		Users:         []any{"default"},
	}
	// One system user per service (the units' User=): the internet-facing DNS and edge cannot
	// read control's tokens or another process's NATS credential.
	for _, u := range serviceUsers(role) {
		cc.Users = append(cc.Users, cloudUser{Name: u, System: true, Homedir: StateDir, NoCreateHome: true,
			Shell: "/usr/sbin/nologin", LockPasswd: true})
	}
	if rel.NATSServerURL == "" {
		cc.Packages = append(cc.Packages, "nats-server")
	}
	for _, p := range paths {
		cc.WriteFiles = append(cc.WriteFiles, writeFile{Path: p, Owner: "root:root", Permissions: "0644", Defer: true,
			Content: string(files[p])})
	}
	// A connection the kernel queued on an old process's listener as it closes moves to the
	// new process (SO_REUSEPORT restarts) instead of being reset (Linux 5.14+).
	cc.WriteFiles = append(cc.WriteFiles, writeFile{Path: "/etc/sysctl.d/60-meridian.conf", Owner: "root:root",
		Permissions: "0644", Content: "net.ipv4.tcp_migrate_req = 1\n"})
	sh := func(s string) { cc.RunCmd = append(cc.RunCmd, []string{"sh", "-c", s}) }
	sh("sysctl -p /etc/sysctl.d/60-meridian.conf || true")
	switch {
	case rel.BinaryURL != "":
		s := fmt.Sprintf("curl -fsSL --retry 5 -o %[1]s.new %[2]s", MeridianBin, shellQuote(rel.BinaryURL))
		if rel.BinarySHA256 != "" {
			s += fmt.Sprintf(" && echo '%s  %s.new' | sha256sum -c -", rel.BinarySHA256, MeridianBin)
		}
		sh(s + fmt.Sprintf(" && chmod 0755 %[1]s.new && mv -f %[1]s.new %[1]s", MeridianBin))
	default:
		cc.RunCmd = append(cc.RunCmd, []string{"ln", "-sf", rel.BinaryPath, MeridianBin})
	}
	if rel.NATSServerURL != "" {
		s := fmt.Sprintf("curl -fsSL --retry 5 -o /tmp/nats-server.tar.gz %s", shellQuote(rel.NATSServerURL))
		if rel.NATSServerSHA256 != "" {
			s += fmt.Sprintf(" && echo '%s  /tmp/nats-server.tar.gz' | sha256sum -c -", rel.NATSServerSHA256)
		}
		s += fmt.Sprintf(" && mkdir -p /tmp/nats-server && tar -xzf /tmp/nats-server.tar.gz -C /tmp/nats-server --strip-components=1"+
			" && install -m 0755 /tmp/nats-server/nats-server %s && rm -rf /tmp/nats-server /tmp/nats-server.tar.gz", NATSBin)
		sh(s)
	} else {
		// The Debian package installs /usr/sbin/nats-server and a unit of the same name, which
		// ours in /etc/systemd/system overrides.
		cc.RunCmd = append(cc.RunCmd, []string{"ln", "-sf", DebianNATSBin, NATSBin})
		// The distribution's package may be too old for the rendered nats.conf (Debian 12 has
		// 2.9.10, Ubuntu 24.04 2.10.7): say so in the cloud-init output, where the operator looks
		// first, rather than only as the server's refusal of an unknown field.
		sh(fmt.Sprintf(`v="$(dpkg-query -W -f '${Version}' nats-server)"; dpkg --compare-versions "$v" ge %[1]s ||`+
			` { echo "meridian: the distribution's nats-server $v is older than %[1]s, which the rendered nats.conf needs:`+
			` set release.nats_server_url (docs/deploy.md)" >&2; exit 1; }`, MinNATSServerVersion))
	}
	if role == RoleControl {
		// The drop-in turns resolved's stub listener off for meridian dns, but stub-resolv.conf
		// (and resolved's static resolv.conf) name 127.0.0.53 regardless: where resolv.conf links
		// to either, every lookup on the VM would reach the zone's authoritative server, which
		// refuses other names. Resolved's list of upstream servers replaces it; a resolv.conf of
		// any other kind is the image's or the operator's and stays.
		sh(fmt.Sprintf(`case "$(readlink %[1]s)" in */systemd/resolve/stub-resolv.conf|*/lib/systemd/resolv.conf)`+
			` ln -sf %[2]s/resolv.conf %[1]s;; esac`, ResolvConf, resolvedDir))
		cc.RunCmd = append(cc.RunCmd, []string{"systemctl", "try-restart", "systemd-resolved.service"})
	}
	// The credentials directory, now that its users exist: the operator only copies the files in.
	cc.RunCmd = append(cc.RunCmd, []string{"systemd-tmpfiles", "--create", TmpfilesConf})
	cc.RunCmd = append(cc.RunCmd, []string{"systemctl", "daemon-reload"})
	cc.RunCmd = append(cc.RunCmd, append([]string{"systemctl", "enable"}, unitNames...))
	// Restart, not start: the Debian package nats-server starts its own nats-server.service
	// (anonymous, /etc/nats-server.conf) when installed, and starting a running unit whose file
	// changed keeps the old process. A restart runs every unit from the files written above.
	// --no-block: systemctl would otherwise wait for the jobs, and meridian-control's waits in
	// ExecStartPre (up to TimeoutStartSec) for a JetStream cluster that cannot form before the
	// credentials are copied in, holding cloud-init's final stage and then failing it. The units
	// retry on their own.
	cc.RunCmd = append(cc.RunCmd, append([]string{"systemctl", "restart", "--no-block"}, unitNames...))
	b, err := marshalYAML(cc)
	if err != nil {
		return nil, fmt.Errorf("render cloud-init for %s: %w", vm, err)
	}
	head := "#cloud-config\n" + r.header(vm, "cloud-init user data ("+role+" VM)") +
		"# Provision out of band before the services can start: " + strings.Join(r.secrets(role), ", ") + ".\n"
	return append([]byte(head), b...), nil
}

// serviceUsers are the system users of a VM of role's services, named in the units.
func serviceUsers(role string) []string {
	if role == RoleControl {
		return []string{userNATS, userControl, userDNS}
	}
	return []string{userNATS, userEdge}
}

// secretsTmpfiles renders VM vm's TmpfilesConf: CredsDir, which every service must traverse to
// reach its own file (a directory copied in as it is arrives 0700, root's), and each of the
// VM's credentials and of the secret files the fleet names for a VM of role, its reader's
// alone ('z' skips a file not there yet). Validation keeps the paths free of what a line would
// read otherwise ('%' specifiers, patterns, blanks) and each file to one reader.
func (r *renderer) secretsTmpfiles(vm, role string) []byte {
	var b strings.Builder
	b.WriteString(r.header(vm, "systemd-tmpfiles config (tmpfiles.d(5))"))
	b.WriteString("# The NATS credentials and the secret files the fleet file names, copied in by the operator\n" +
		"# (docs/deploy.md): applied by cloud-init, at boot and before every Meridian unit starts.\n")
	fmt.Fprintf(&b, "d %s 0755 root root -\n", CredsDir)
	owners := r.secretOwners[vm]
	names := make([]string, 0, len(owners))
	for name := range owners {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, "z %s/%s 0600 %s %s -\n", CredsDir, name, owners[name], owners[name])
	}
	done := map[string]bool{} // a second line for a path is ignored, with a warning
	for _, s := range r.f.files() {
		if !s.secret || (s.role != "" && s.role != role) || done[s.path] {
			continue
		}
		done[s.path] = true
		fmt.Fprintf(&b, "z %s 0600 %s %s -\n", s.path, s.reader, s.reader)
	}
	return []byte(b.String())
}

// secrets lists the files a VM of role needs that the renderer never writes.
func (r *renderer) secrets(role string) []string {
	var s []string
	if role == RoleControl {
		s = append(s, r.f.Control.TokensFile, r.f.DNS.MMDB)
		if r.f.Control.TLSCert != "" {
			s = append(s, r.f.Control.TLSCert, r.f.Control.TLSKey)
		}
		s = append(s, CredsDir+"/{control.creds,dns.creds,nats-cluster.conf}")
	} else {
		s = append(s, CredsDir+"/{edge.creds,nats-leaf.conf}")
	}
	if t := r.f.NATS.TLS; t.enabled() {
		s = append(s, t.CertFile, t.KeyFile, t.CAFile)
	}
	if len(s) == 0 {
		s = append(s, "nothing")
	}
	return s
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// prometheus renders the scrape config: every edge's and DNS server's /metrics, and every
// control API's /metrics (which needs a read token, from a file).
func (r *renderer) prometheus() []byte {
	f := r.f
	var b strings.Builder
	fmt.Fprintf(&b, "# Prometheus scrape config for fleet %s, rendered by `meridian deploy render`.\n", f.Name)
	b.WriteString("# Labels pop, node and region feed the dashboard in deploy/grafana.\n")
	b.WriteString("global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n\nscrape_configs:\n")
	b.WriteString("# Admin ports listen on private addresses only (loopback on a VM without one: scrape\n" +
		"# those through a tunnel or give them private_ipv4).\n")
	b.WriteString("  - job_name: meridian-edge\n    static_configs:\n")
	for _, p := range f.PoPs {
		for _, n := range p.Nodes {
			if n.PrivateIPv4 == "" {
				fmt.Fprintf(&b, "      # %s: no private_ipv4, admin on loopback\n", p.VMName(n))
				continue
			}
			fmt.Fprintf(&b, "      - targets: [%q]\n        labels: {pop: %q, node: %q, region: %q}\n",
				net.JoinHostPort(n.PrivateIPv4, strconv.Itoa(f.Edge.AdminPort)), p.ID, n.ID, p.Region)
		}
	}
	b.WriteString("  - job_name: meridian-dns\n    static_configs:\n")
	for _, c := range f.Control.Nodes {
		if c.PrivateIPv4 == "" {
			fmt.Fprintf(&b, "      # %s: no private_ipv4, admin on loopback\n", c.Name)
			continue
		}
		fmt.Fprintf(&b, "      - targets: [%q]\n        labels: {node: %q, region: %q}\n",
			net.JoinHostPort(c.PrivateIPv4, strconv.Itoa(f.DNS.AdminPort)), c.Name, c.Region)
	}
	b.WriteString("  - job_name: meridian-control\n")
	b.WriteString("    # A token with the read scope (docs/control.md), in a file on the Prometheus host.\n")
	b.WriteString("    authorization:\n      type: Bearer\n      credentials_file: /etc/prometheus/meridian-read-token\n")
	if f.Control.TLSCert != "" {
		// The API serves only TLS when it has a certificate: plain scrapes would fail.
		b.WriteString("    scheme: https\n" +
			"    # If the API's certificate is not from a CA the Prometheus host trusts:\n" +
			"    # tls_config: {ca_file: /etc/prometheus/meridian-api-ca.crt}\n")
	}
	b.WriteString("    static_configs:\n")
	for _, c := range f.Control.Nodes {
		fmt.Fprintf(&b, "      - targets: [%q]\n        labels: {node: %q, region: %q}\n",
			net.JoinHostPort(c.IPv4, strconv.Itoa(f.Control.APIPort)), c.Name, c.Region)
	}
	return []byte(b.String())
}
