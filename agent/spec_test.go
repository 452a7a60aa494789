package agent

import (
	"fmt"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestGuestSpec(t *testing.T) {
	s := &specs.Spec{
		Root:    &specs.Root{Path: "/host/bundle/rootfs", Readonly: true},
		Process: &specs.Process{Args: []string{"sh"}, ApparmorProfile: "docker-default"},
		Hooks: &specs.Hooks{Poststop: []specs.Hook{{Path: "/usr/bin/cleanup"}}, StartContainer: []specs.Hook{{Path: "/bin/true"}},
			CreateContainer: []specs.Hook{{Path: "/bin/sh"}, {Path: "/opt/vzrun-test/absent-hook", Args: []string{"hook", "x"}}}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/var/lib/x/resolv.conf", Options: []string{"rbind", "ro"}},
			{Destination: "/data", Source: "/srv/data", Options: []string{"bind", "mode=755", "size=1k", "ro"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/host/cgroup",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
				{Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"},
			},
			Resources: &specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{}},
			Devices:   []specs.LinuxDevice{{Path: "/dev/fifo", Type: "p", Major: 8, Minor: 666}, {Path: "/dev/null", Type: "c", Major: 1, Minor: 3}},
		},
	}
	shares := map[string]string{"/var/lib/x/resolv.conf": "/run/vzrun/shares/m0/resolv.conf", "/srv/data": "/run/vzrun/shares/m1"}
	if err := guestSpec(s, "c1", "/run/vzrun/shares/rootfs", shares); err != nil {
		t.Fatal(err)
	}
	if s.Root.Path != "/run/vzrun/shares/rootfs" || !s.Root.Readonly {
		t.Errorf("root %+v", s.Root)
	}
	if s.Hooks == nil || len(s.Hooks.Poststop) != 0 || len(s.Hooks.StartContainer) != 1 || s.Process.ApparmorProfile != "" {
		t.Errorf("host-only settings kept: hooks %v apparmor %q", s.Hooks, s.Process.ApparmorProfile)
	}
	// createContainer hooks: a path the runtime's root has stays, another
	// is the container's.
	if cc := s.Hooks.CreateContainer; len(cc) != 2 || cc[0].Path != "/bin/sh" ||
		cc[1].Path != "/run/vzrun/shares/rootfs/opt/vzrun-test/absent-hook" || len(cc[1].Args) != 2 {
		t.Errorf("createContainer hooks %+v", cc)
	}
	if s.Mounts[1].Source != "/run/vzrun/shares/m0/resolv.conf" || s.Mounts[2].Source != "/run/vzrun/shares/m1" || s.Mounts[0].Source != "proc" {
		t.Errorf("mounts %+v", s.Mounts)
	}
	if got := s.Mounts[2].Options; len(got) != 2 || got[0] != "bind" || got[1] != "ro" {
		t.Errorf("bind mount options %v, want [bind ro]", got)
	}
	if d := s.Linux.Devices; d[0].Major != 0 || d[0].Minor != 0 || d[1].Major != 1 || d[1].Minor != 3 {
		t.Errorf("devices %+v", d)
	}
	if s.Linux.CgroupsPath != "/vzrun/c1" {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	want := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace}}
	if len(s.Linux.Namespaces) != 3 || s.Linux.Namespaces[0] != want[0] || s.Linux.Namespaces[1] != want[1] || s.Linux.Namespaces[2] != want[2] {
		t.Errorf("namespaces %+v, want %+v", s.Linux.Namespaces, want)
	}
	if s.Linux.Resources.BlockIO != nil {
		t.Errorf("host block I/O limits kept")
	}

	unshared := &specs.Spec{Root: &specs.Root{Path: "r"}, Process: &specs.Process{}, Mounts: []specs.Mount{{Destination: "/x", Type: "bind", Source: "/nope"}}}
	if err := guestSpec(unshared, "c2", "/r", nil); err == nil {
		t.Error("bind mount of an unshared source accepted")
	}
}

func TestTakeAddressSpaceLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in, left []specs.POSIXRlimit
		taken    *specs.POSIXRlimit
	}{
		{name: "none"},
		{name: "others only", in: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 4, Soft: 3}},
			left: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 4, Soft: 3}}},
		{name: "as among others",
			in:    []specs.POSIXRlimit{{Type: "RLIMIT_CORE", Hard: 1, Soft: 1}, {Type: "RLIMIT_AS", Hard: 2 << 30, Soft: 1 << 30}, {Type: "RLIMIT_NOFILE", Hard: 4, Soft: 3}},
			left:  []specs.POSIXRlimit{{Type: "RLIMIT_CORE", Hard: 1, Soft: 1}, {Type: "RLIMIT_NOFILE", Hard: 4, Soft: 3}},
			taken: &specs.POSIXRlimit{Type: "RLIMIT_AS", Hard: 2 << 30, Soft: 1 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &specs.Process{Rlimits: tc.in}
			got := takeAddressSpaceLimit(p)
			if !reflect.DeepEqual(got, tc.taken) {
				t.Errorf("taken %+v, want %+v", got, tc.taken)
			}
			if len(p.Rlimits) != len(tc.left) || (len(tc.left) > 0 && !reflect.DeepEqual(p.Rlimits, tc.left)) {
				t.Errorf("left %+v, want %+v", p.Rlimits, tc.left)
			}
		})
	}
}

// Devices the guest kernel has nothing behind are left out and named;
// FIFOs and those it has are kept.
func TestGuestSpecLeavesOutMissingDevices(t *testing.T) {
	has := guestHasDevice
	defer func() { guestHasDevice = has }()
	guestHasDevice = func(typ string, major, minor int64) bool { return typ == "c" && major == 10 && minor == 200 }
	s := &specs.Spec{
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: []string{"true"}},
		Linux: &specs.Linux{Devices: []specs.LinuxDevice{
			{Path: "/dev/net/tun", Type: "c", Major: 10, Minor: 200},
			{Path: "/dev/kvm", Type: "c", Major: 10, Minor: 232},
			{Path: "/dev/fifo", Type: "p"},
		}},
	}
	if err := guestSpec(s, "c3", "/r", nil); err != nil {
		t.Fatal(err)
	}
	dropped := dropMissingDevices(s)
	if len(dropped) != 1 || dropped[0] != "/dev/kvm (c 10:232)" {
		t.Errorf("dropped %q, want /dev/kvm", dropped)
	}
	if len(s.Linux.Devices) != 2 || s.Linux.Devices[0].Path != "/dev/net/tun" || s.Linux.Devices[1].Path != "/dev/fifo" {
		t.Errorf("kept %+v", s.Linux.Devices)
	}
}

func TestNetSysctls(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{Sysctl: map[string]string{
		"net.ipv4.conf.eth1.arp_ignore":                  "2",
		"net/ipv6/conf/eth0.100/mtu":                     "1400",
		"net.ipv4.neigh.net1.ucast_solicit":              "5",
		"net.ipv4.conf.all.rp_filter":                    "1",
		"net.ipv4.ip_forward":                            "0",
		"net.ipv4.conf.lo.arp_ignore":                    "1",
		"net/ipv4/conf/../../../kernel/core_pattern":     "|/x",
		"net/ipv4/conf/eth0/../../../../kernel/modprobe": "/x",
		"kernel.msgmax":                                  "8192",
	}}}
	ifs, again := netSysctls(s)
	want := map[string]string{"net/ipv4/conf/eth1/arp_ignore": "2", "net/ipv6/conf/eth0.100/mtu": "1400", "net/ipv4/neigh/net1/ucast_solicit": "5"}
	if fmt.Sprint(ifs) != fmt.Sprint(want) {
		t.Errorf("interface sysctls: %v, want %v", ifs, want)
	}
	wantAgain := map[string]string{"net/ipv4/conf/all/rp_filter": "1", "net/ipv4/ip_forward": "0", "net/ipv4/conf/lo/arp_ignore": "1"}
	if fmt.Sprint(again) != fmt.Sprint(wantAgain) {
		t.Errorf("sysctls set again: %v, want %v", again, wantAgain)
	}
	// Left in the spec: all but the interfaces' (runc refuses the ..
	// ones, as it would on the host).
	if len(s.Linux.Sysctl) != 6 || s.Linux.Sysctl["net.ipv4.conf.eth1.arp_ignore"] != "" || s.Linux.Sysctl["kernel.msgmax"] != "8192" {
		t.Errorf("left in the spec: %v", s.Linux.Sysctl)
	}
}
