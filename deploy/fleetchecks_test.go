package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBadValuesNameTheirField: each mistake is refused by the fleet checks, with one error
// that names its field and says what is wrong, rather than accepted and rendered into configs
// that a server refuses at start (every control VM's DNS down) or that publish garbage.
func TestBadValuesNameTheirField(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	label := strings.Repeat("a", 63)
	l60, u55 := strings.Repeat("a", 60), strings.Repeat("ü", 55)
	long := strings.Join([]string{l60, l60, l60, l60}, ".")  // 243 bytes, 260 with the zone
	ulong := strings.Join([]string{u55, u55, u55, u55}, ".") // 247 bytes as A-labels
	tests := []struct{ name, old, new, field, want string }{
		// DNS counts TTLs in whole seconds; dnsroute refuses "1.5s".
		{"sub-second dns ttl", "ttl: 30s", "ttl: 1500ms", "dns.ttl", "whole number of seconds"},
		// The NS name goes into every DNS server's NS records and the parent's delegation.
		{"ns with a space", "private_ipv4: 10.1.0.10", "private_ipv4: 10.1.0.10\n      ns: 'ns 1'", "control.nodes[0].ns", "not a domain name"},
		{"ns too long", "private_ipv4: 10.1.0.10", "private_ipv4: 10.1.0.10\n      ns: " + label + "." + label + "." + label + "." + label, "control.nodes[0].ns", "not a domain name"},
		// A region that is there but malformed is not missing.
		{"upper-case region", "region: eu-central-1\n      ipv4: 203.0.113.11", "region: EU-Central-1\n      ipv4: 203.0.113.11", "control.nodes[0].region", "is not a cloud region"},
		// Addresses no host can have: DNS would hand them to clients, routes dial them.
		{"unspecified ipv4", "ipv4: 198.51.100.11", "ipv4: 0.0.0.0", "pops[0].nodes[0].ipv4", "cannot be a host's address"},
		{"multicast ipv4", "ipv4: 203.0.113.12", "ipv4: 224.0.0.12", "control.nodes[1].ipv4", "cannot be a host's address"},
		{"unspecified ipv6", "ipv6: 2001:db8:100::101", "ipv6: '::'", "pops[0].nodes[0].ipv6", "cannot be a host's address"},
		// Edges re-register every second (edge.yaml sets no fleet.heartbeat): a node's key
		// would expire between two heartbeats and the node drop in and out of the fleet.
		// control parses --trusted-proxies at start: a host name there stops it on every VM.
		{"trusted proxy not an address", "replicas: 3", "replicas: 3\n  trusted_proxies: [10.0.0.1, proxy.example, 10.2.0.0/16]", "control.trusted_proxies[1]", `"proxy.example" is not an IP address or a CIDR`},
		{"trusted proxy with a zone", "replicas: 3", "replicas: 3\n  trusted_proxies: ['fe80::1%eth0']", "control.trusted_proxies[0]", "not an IP address or a CIDR"},
		{"heartbeat ttl under the heartbeat", "replicas: 3", "replicas: 3\n  heartbeat_ttl: 500ms", "control.heartbeat_ttl", "heartbeat"},
		{"ipv4-mapped ipv6", "ipv6: 2001:db8:100::101", "ipv6: ::ffff:198.51.100.99", "pops[0].nodes[0].ipv6", "not an IPv6 address"},
		// One address in two spellings is one host: DNS would answer with both VMs' records
		// for a single machine, and only one of them has it.
		{"ipv6 of another vm in another spelling", "ipv6: 2001:db8:100::101", "ipv6: '2001:DB8:100:0::11'", "pops[0].nodes[0].ipv6", "is also control.nodes[0].ipv6"},
		{"ipv6 of another vm, zeros written out", "ipv6: 2001:db8:100::102", "ipv6: '2001:db8:100:0:0:0:0:101'", "pops[0].nodes[1].ipv6", "is also pops[0].nodes[0].ipv6"},
		// The tmpfiles.d config gives the tokens, the API key and the NATS TLS key to their
		// service alone, one line each: systemd-tmpfiles reads '%' as a specifier (a missing
		// one fails the line) and "*?[{" as a pattern that gives other files to the service
		// too, and refuses a path with ".." in it.
		{"tokens file with a specifier", "tokens_file: /etc/meridian/tokens.yaml", "tokens_file: /etc/meridian/tokens-%H.yaml",
			"control.tokens_file", "specifier or a pattern"},
		{"nats key with a pattern", "key_file: /etc/meridian/tls/nats.key", "key_file: /etc/meridian/tls/*.key",
			"nats.tls.key_file", "specifier or a pattern"},
		{"api key with braces", "tls_key: /etc/meridian/api.key", "tls_key: /etc/meridian/api.{key,pem}",
			"control.tls_key", "specifier or a pattern"},
		{"api key not clean", "tls_key: /etc/meridian/api.key", "tls_key: /etc/meridian/tls/../api.key",
			"control.tls_key", "not a clean path"},
		{"tokens file with a carriage return", "tokens_file: /etc/meridian/tokens.yaml", `tokens_file: "/etc/meridian/tokens\r.yaml"`,
			"control.tokens_file", "not an absolute path"},
		// Given to one service alone (0600), a file cannot serve two.
		{"api key is the nats key", "tls_key: /etc/meridian/api.key", "tls_key: /etc/meridian/tls/nats.key",
			"control.tls_key", "is also nats.tls.key_file, which meridian-nats reads"},
		{"api certificate is the nats key", "tls_cert: /etc/meridian/api.crt", "tls_cert: /etc/meridian/tls/nats.key",
			"control.tls_cert", "is also nats.tls.key_file, which is given to meridian-nats alone"},
		// A name with two meanings: the error names both, and where they are.
		{"cname on a routed hostname", `hostnames: ["*"]`, `hostnames: ["www"]` + "\n  cnames: {www: img}", "dns.cnames.www",
			"www.cdn.example.com. is both a CNAME (to img.cdn.example.com.) and a routed hostname (dns.hostnames[0]); a CNAME has no other data beside it"},
		{"cname on a name server", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {ns2: www}", "dns.cnames.ns2",
			"ns2.cdn.example.com. is both a CNAME (to www.cdn.example.com.) and control.nodes[1]'s name server name (ns); a CNAME has no other data beside it"},
		{"routed name server", `hostnames: ["*"]`, `hostnames: ["www", "ns3.cdn.example.com."]`, "dns.hostnames[1]",
			"ns3.cdn.example.com. is both a routed hostname and control.nodes[2]'s name server name (ns), whose address answers for it"},
		// "@" is the apex, a name, but a CNAME there would have the SOA and NS beside it.
		{"cname on the apex as @", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {\"@\": www}", "dns.cnames.@", "cdn.example.com. must be a name below the zone"},
		// A name refused for being outside the zone (or the apex) is on no loop: one mistake,
		// one error. The loop through it was reported as well.
		{"cname outside the zone, on a loop", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {a.example.org.: b, b: a.example.org.}", "dns.cnames.a.example.org.",
			"a.example.org. must be a name below the zone cdn.example.com."},
		{"cname on the apex, on a loop", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {\"@\": b, b: \"@\"}", "dns.cnames.@",
			"cdn.example.com. must be a name below the zone cdn.example.com."},
		// dnsroute refuses a CNAME loop (RFC 1034 section 3.6.2): every DNS server would stay
		// down. The error names the names on the loop, from its least one.
		{"cname to itself", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {img: IMG.cdn.example.com.}", "dns.cnames.img",
			"CNAME loop img.cdn.example.com. -> img.cdn.example.com.: no name on it resolves"},
		{"cname loop", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {b: c, c: a, a: b, x: a}", "dns.cnames.a",
			"CNAME loop a.cdn.example.com. -> b.cdn.example.com. -> c.cdn.example.com. -> a.cdn.example.com.: no name on it resolves"},
		// Names in Unicode are checked as dnsroute holds them, as A-labels: one IDNA refuses is
		// named as written, and two spellings of one name are one name.
		{"zone not a valid idn", "zone: cdn.example.com.", "zone: \"a\u05d0.example.\"", "dns.zone", `"a` + "\u05d0" + `.example." is not a valid internationalised hostname`},
		{"ns not a valid idn", "private_ipv4: 10.1.0.10", "private_ipv4: 10.1.0.10\n      ns: \"-nü\"", "control.nodes[0].ns", `"-nü" is not a valid internationalised hostname`},
		{"hostname not a valid idn", `hostnames: ["*"]`, `hostnames: ["a\u200db"]`, "dns.hostnames[0]", `"a\u200db" is not a valid internationalised hostname`},
		{"cname not a valid idn", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {a: \"b\\u2028ü\"}", "dns.cnames.a", `"b\u2028ü" is not a valid internationalised hostname`},
		{"hostname in unicode outside the zone", `hostnames: ["*"]`, `hostnames: ["bücher.example."]`, "dns.hostnames[0]",
			`"bücher.example.": xn--bcher-kva.example. is outside the zone cdn.example.com.`},
		{"one cname name as u-label and a-label", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {bücher: www, xn--bcher-kva: img}", "dns.cnames.xn--bcher-kva",
			"xn--bcher-kva.cdn.example.com. is also dns.cnames.bücher (to www.cdn.example.com.); a name has one CNAME at most"},
		{"cname in unicode on a routed a-label", `hostnames: ["*"]`, `hostnames: ["xn--bcher-kva"]` + "\n  cnames: {Bücher: www}", "dns.cnames.Bücher",
			`"Bücher": xn--bcher-kva.cdn.example.com. is both a CNAME (to www.cdn.example.com.) and a routed hostname (dns.hostnames[0])`},
		// Two CNAMEs for one name (RFC 2181 section 10.1): dnsroute refuses them.
		// dnsroute holds a relative name with the zone after it, and refuses one longer than
		// 255 octets so (RFC 1035 section 2.3.4), Unicode labels as their A-labels: the fleet
		// checks took the name as written, relative, and rendered a dns.yaml that is refused.
		{"hostname too long once absolute", `hostnames: ["*"]`, `hostnames: [` + long + `]`, "dns.hostnames[0]",
			`"` + long + `" is longer than 255 octets as the absolute name ` + long + ".cdn.example.com."},
		{"unicode hostname too long once absolute", `hostnames: ["*"]`, `hostnames: [` + ulong + `]`, "dns.hostnames[0]", `"` + ulong + `" is longer than 255 octets`},
		{"cname name too long once absolute", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {" + long + ": www}", "dns.cnames." + long, `"` + long + `" is longer than 255 octets`},
		{"cname target too long once absolute", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {a: " + ulong + "}", "dns.cnames.a", `"` + ulong + `" is longer than 255 octets`},
		// A fleet host is rendered into every edge's edge.yaml, which the user data carries: what
		// any process on the VM, and anyone who may describe the instance, reads. A credential
		// field set on the origin requests would be published so.
		{"origin authorization in a fleet host", "origin: https://static-origin.example.com",
			"origin: https://static-origin.example.com\n    request_headers: {set: {Authorization: 'Bearer s3cret'}}",
			"hosts[1].request_headers.set.Authorization", "is a credential"},
		{"origin cookie in a fleet host", "origin: https://static-origin.example.com",
			"origin: https://static-origin.example.com\n    request_headers: {set: {x-from-cdn: '1', cookie: 'sid=s3cret'}}",
			"hosts[1].request_headers.set.cookie", "is a credential"},
		{"one cname name spelt twice", `hostnames: ["*"]`, `hostnames: ["*"]` + "\n  cnames: {a: www, \"A.cdn.example.com.\": img}", "dns.cnames.a",
			"a.cdn.example.com. is also dns.cnames.A.cdn.example.com. (to img.cdn.example.com.); a name has one CNAME at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(example), tt.old) {
				t.Fatalf("example has no %q", tt.old)
			}
			_, err := Parse([]byte(strings.Replace(string(example), tt.old, tt.new, 1)))
			if err == nil {
				t.Fatalf("accepted; want an error on %s", tt.field)
			}
			errs := splitErrors(err)
			if len(errs) != 1 || !strings.Contains(err.Error(), tt.field+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v; want one error on %s saying %q", err, tt.field, tt.want)
			}
		})
	}
}

// TestTooLongNameOnNoLoop: a CNAME name too long once absolute is served by dnsroute as no
// alias, so it is on no loop: the two entries naming it are refused for its length, as
// dnsroute refuses them, and not also as a loop.
func TestTooLongNameOnNoLoop(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	l60 := strings.Repeat("a", 60)
	long := strings.Join([]string{l60, l60, l60, l60}, ".")
	_, err = Parse([]byte(strings.Replace(string(example), `hostnames: ["*"]`, `hostnames: ["*"]`+"\n  cnames: {"+long+": b, b: "+long+"}", 1)))
	if errs := splitErrors(err); len(errs) != 2 || strings.Contains(err.Error(), "CNAME loop") ||
		!strings.Contains(err.Error(), "dns.cnames."+long+": ") || !strings.Contains(err.Error(), "dns.cnames.b: ") {
		t.Errorf("error = %v; want two, on dns.cnames.%s and dns.cnames.b, for its length alone", err, long)
	}
}

// TestFleetFilesShared: what the tmpfiles.d config leaves alone may be shared and named
// freely: one certificate for the API and NATS (no secret, its owner the operator's), a '%'
// in the MMDB's name.
func TestFleetFilesShared(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, old, new string }{
		{"one certificate", "tls_cert: /etc/meridian/api.crt", "tls_cert: /etc/meridian/tls/nats.crt"},
		{"mmdb with a percent sign", "hostnames: [\"*\"]", "hostnames: [\"*\"]\n  mmdb: /var/lib/meridian/GeoLite2-City-100%.mmdb"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(example), tt.old) {
				t.Fatalf("example has no %q", tt.old)
			}
			if _, err := Parse([]byte(strings.Replace(string(example), tt.old, tt.new, 1))); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// TestRenderChecksReleaseFlags: --binary-path and --binary-sha256 replace the fleet file's
// release section after it was checked, so render must check them as it checks the file: a
// relative path makes cloud-init link /usr/local/bin/meridian to nothing (no unit ever
// starts), and an upper-case checksum was refused as if it were missing.
func TestRenderChecksReleaseFlags(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"relative binary path", []string{"--binary-path", "opt/meridian/meridian"}, `release.binary_path: "opt/meridian/meridian" is not an absolute path`},
		{"upper-case checksum", []string{"--binary-url", "https://dl.example.com/meridian", "--binary-sha256", strings.Repeat("AB", 32)},
			"release.binary_sha256: is not 64 lower-case hex digits"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := NewCommand()
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(append([]string{"render", filepath.Join("testdata", "fleet.yaml"), "--out", t.TempDir()}, tt.args...))
			if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("render %v = %v, want an error saying %s", tt.args, err, tt.want)
			}
		})
	}
}

// TestRenderedTreeKeepsSecretsOutOfGit: operations.md has the operator commit rendered/ (the
// diff is the change), and render writes the fleet's NATS seeds and route password there
// (fleet-secrets.json by default, every VM's creds/). Committing the tree must not commit them.
func TestRenderedTreeKeepsSecretsOutOfGit(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	out := t.TempDir()
	cmd := NewCommand()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"render", filepath.Join("testdata", "fleet.yaml"), "--out", out})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("deploy render = %v", err)
	}
	run := func(args ...string) string {
		c := exec.Command(git, args...)
		c.Dir = out
		c.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	run("init", "-q")
	run("add", "-A")
	staged := strings.Fields(run("ls-files"))
	if !slices.Contains(staged, "vms.json") || !slices.Contains(staged, "ctl-1/user-data") {
		t.Fatalf("git add -A staged %v: this test's premise changed", staged)
	}
	for _, p := range staged {
		if p == "fleet-secrets.json" || IsSecret(p) {
			t.Errorf("git add -A in the rendered tree stages the secret %s", p)
		}
	}
}

// TestCNAMELoopOfASpelling: as dnsroute (TestConfigCNAMELoopOfASpelling), a name with two
// dns.cnames entries is looked at for loops through its first, the one the duplicate error
// names: the same errors on every parse. The check took whichever spelling map order gave
// last, and now and then reported a loop on the entry that was not on it.
func TestCNAMELoopOfASpelling(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const old = `hostnames: ["*"]`
	if !strings.Contains(string(example), old) {
		t.Fatalf("example has no %q", old)
	}
	tests := []struct {
		name, cnames string
		want         []string
	}{
		{"the later spelling loops", `{"A.cdn.example.com.": www, a: b, b: a}`, []string{
			"dns.cnames.a: a.cdn.example.com. is also dns.cnames.A.cdn.example.com. (to www.cdn.example.com.); a name has one CNAME at most"}},
		{"the first spelling loops", `{"A.cdn.example.com.": b, a: www, b: a}`, []string{ // in the file's order
			"dns.cnames.A.cdn.example.com.: CNAME loop a.cdn.example.com. -> b.cdn.example.com. -> a.cdn.example.com.: no name on it resolves",
			"dns.cnames.a: a.cdn.example.com. is also dns.cnames.A.cdn.example.com. (to b.cdn.example.com.); a name has one CNAME at most"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(strings.Replace(string(example), old, old+"\n  cnames: "+tt.cnames, 1))
			for range 20 { // map order differs from one parse to the next
				_, err := Parse(data)
				if err == nil {
					t.Fatal("accepted")
				}
				var got []string
				for _, e := range splitErrors(err) {
					msg := e.Error()
					if strings.HasPrefix(msg, "line ") {
						_, msg, _ = strings.Cut(msg, ": ") // "line 48:12: "
					}
					got = append(got, msg)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("errors = %q, want %q", got, tt.want)
				}
			}
		})
	}
}
