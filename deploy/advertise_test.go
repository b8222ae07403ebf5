package deploy

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLeafListenerAdvertisesPublicAddress: a control VM's leaf listener binds every address, and
// nats-server then tells each leaf node (INFO's leafnode_urls) to fail over to the listener's
// interface addresses, which on a cloud VM are its private ones (an EC2 instance's public
// address is NAT'd, not on the interface). The leaf puts those first in its reconnect list: a
// PoP's leaf node, after losing its control VM, tries another region's private address
// (unreachable), or one in its own VPC that the security group closes and that no certificate
// names, before the public addresses the fleet file gives. The listener must advertise the
// control VM's public address, the one every leaf remote dials.
func TestLeafListenerAdvertisesPublicAddress(t *testing.T) {
	f := loadExample(t)
	f.Release = Release{BinaryPath: "/opt/meridian/meridian"}
	ports := freePorts(t, 4)
	f.NATS.ClientPort, f.NATS.ClusterPort, f.NATS.LeafPort, f.NATS.MonitorPort = ports[0], ports[1], ports[2], ports[3]
	// Rendered for real VMs: the leaf and route listeners bind every address.
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	vm := f.Control.Nodes[0]
	writeVMs(t, root, files, f.VMs())
	vmRoot := filepath.Join(root, vm.Name)
	// Its own certificates: writeTLS keeps the first set made, for the local fleet's addresses.
	ca, cert, key, err := makeCerts([]string{vm.IPv4})
	if err != nil {
		t.Fatal(err)
	}
	putFile(t, vmRoot+f.NATS.TLS.CAFile, string(ca))
	putFile(t, vmRoot+f.NATS.TLS.CertFile, string(cert))
	putFile(t, vmRoot+f.NATS.TLS.KeyFile, string(key))
	startNATS(t, filepath.Join(vmRoot, EtcDir, "nats.conf"))

	// A leaf node's first read: the server's INFO, before any TLS.
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.NATS.LeafPort)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the leaf listener's INFO: %v", err)
	}
	js, ok := strings.CutPrefix(strings.TrimSpace(line), "INFO ")
	if !ok {
		t.Fatalf("leaf listener sent %q, not INFO", line)
	}
	var info struct {
		LeafNodeURLs []string `json:"leafnode_urls"`
	}
	if err := json.Unmarshal([]byte(js), &info); err != nil {
		t.Fatalf("INFO %s: %v", js, err)
	}
	want := []string{net.JoinHostPort(vm.IPv4, strconv.Itoa(f.NATS.LeafPort))}
	if !slices.Equal(info.LeafNodeURLs, want) {
		t.Errorf("%s's leaf listener tells leaf nodes to reconnect to %q, want %q (its public address, as the leaf remotes dial it)",
			vm.Name, info.LeafNodeURLs, want)
	}
}
