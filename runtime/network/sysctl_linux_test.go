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
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("also found %s = %q", k, v)
		}
	}
}
