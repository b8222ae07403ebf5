package deploy

import (
	"slices"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestNATSServerVersionFloor: the rendered nats.conf needs nats-server 2.10.8 or later: the
// routes' pool_size (2.10.0) and the leaf remote's nkey (2.10.8). Loading the rendered
// configs with nats-server 2.9.10 fails on "pool_size" and with 2.10.7 on the leaf "nkey";
// 2.10.8 loads both and runs TestRenderedFleetRunsLocally. So validate refuses a
// release.nats_server_url of an older release, and the cloud-init that installs the
// distribution's package (Debian 12 has 2.9.10, Ubuntu 24.04 2.10.7) checks its version and
// says what to do instead of leaving a server that cannot read its config.
func TestNATSServerVersionFloor(t *testing.T) {
	url := func(v string) string {
		return "https://github.com/nats-io/nats-server/releases/download/v" + v + "/nats-server-v" + v + "-linux-amd64.tar.gz"
	}
	for v, ok := range map[string]bool{"2.9.10": false, "2.10.7": false, "2.10.8": true, "2.10.27": true, "2.11.4": true, "3.0.0": true} {
		f := loadExample(t)
		f.Release.NATSServerURL = url(v)
		errs := f.validate()
		refused := slices.ContainsFunc(errs, func(e *wire.FieldError) bool { return e.Field == "release.nats_server_url" })
		if refused == ok {
			t.Errorf("nats-server %s: refused = %v (%v), want %v", v, refused, errs.Err(), !ok)
		}
	}

	f := loadExample(t)
	f.Release = Release{BinaryPath: "/opt/meridian/meridian"}
	for _, vm := range []string{"ctl-1", "fra-edge-1"} {
		cc := userData(t, f, vm)
		check, restart := -1, -1
		for i, c := range cc.RunCmd {
			s := strings.Join(c, " ")
			if strings.Contains(s, "dpkg --compare-versions") && strings.Contains(s, MinNATSServerVersion) {
				check = i
			}
			if len(c) > 1 && c[0] == "systemctl" && c[1] == "restart" {
				restart = i
			}
		}
		if check < 0 || check > restart {
			t.Errorf("%s: cloud-init installs the distribution's nats-server without checking it is %s or later (runcmd %q)",
				vm, MinNATSServerVersion, cc.RunCmd)
		}
	}
}
