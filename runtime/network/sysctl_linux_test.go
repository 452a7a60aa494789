package network

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// What a CNI plugin sets in a namespace (the tuning plugin's sysctls) is
// found, and only that.
func TestChangedSysctls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	name := fmt.Sprintf("vzsc%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	run("ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.core.somaxconn=555", "net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.ping_group_range=0 0")
	start := time.Now()
	got, err := ChangedSysctls("/var/run/netns/"+name, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read in %s", time.Since(start))
	want := map[string]string{"net/core/somaxconn": "555", "net/ipv4/conf/eth0/arp_ignore": "1", "net/ipv4/ping_group_range": "0\t0"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// The IPv4 settings a new namespace inherits from the host's go
	// whatever their value (the guest's new namespace inherits nothing).
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv4/conf/default/rp_filter", "net/ipv4/conf/eth0/rp_filter"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok && !inheritedIPv4(k, []string{"eth0"}) {
			t.Errorf("also found %s = %q", k, v)
		}
	}
	if _, ok := got["net/ipv4/conf/eth1/rp_filter"]; ok {
		t.Errorf("another interface's settings were read")
	}
	if _, ok := got["net/ipv4/conf/all/mc_forwarding"]; ok {
		t.Errorf("a read-only setting was read")
	}
}
