package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// guestSpec turns the host's OCI spec into the one runc applies in the
// guest: the root and bind-mount sources become guest paths, host-only
// settings (hooks, namespace paths, host devices' I/O limits, LSM labels)
// are dropped, and the container gets its own cgroup under /vzrun.
//
// shares maps a host path to where the guest sees it.
func guestSpec(s *specs.Spec, id, rootPath string, shares map[string]string) error {
	if s.Root == nil {
		return fmt.Errorf("spec has no root: %w", errdefs.ErrInvalidArgument)
	}
	if s.Process == nil {
		return fmt.Errorf("spec has no process: %w", errdefs.ErrInvalidArgument)
	}
	s.Root.Path = rootPath
	// prestart, createRuntime, poststart and poststop run on the host,
	// where vzrun runs them; createContainer and startContainer run in the
	// container's namespaces, which are here, so runc runs those.
	if h := s.Hooks; h != nil {
		s.Hooks = nil
		if len(h.CreateContainer)+len(h.StartContainer) > 0 {
			s.Hooks = &specs.Hooks{CreateContainer: guestHookPaths(h.CreateContainer, rootPath), StartContainer: h.StartContainer}
		}
	}
	s.Process.ApparmorProfile = ""
	s.Process.SelinuxLabel = ""

	for i, m := range s.Mounts {
		if !isBind(m) {
			continue
		}
		src, ok := shares[m.Source]
		if !ok {
			return fmt.Errorf("bind mount %s: source %s is not shared with the VM: %w", m.Destination, m.Source, errdefs.ErrInvalidArgument)
		}
		s.Mounts[i].Source = src
		// A bind mount takes flags only; data options (mode=, size=) that
		// runc on the host ignores, the guest's newer runc refuses.
		var opts []string
		for _, o := range m.Options {
			if !strings.Contains(o, "=") {
				opts = append(opts, o)
			}
		}
		s.Mounts[i].Options = opts
	}

	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	s.Linux.CgroupsPath = filepath.Join("/vzrun", id)
	s.Linux.MountLabel = ""
	// A namespace path names a host namespace, which the guest does not
	// have: each becomes a new namespace in the guest. The container's
	// network namespace starts with loopback only; the VM's NIC moves in
	// when the host has found what the host-side namespace holds
	// (ConfigureNetwork).
	for i := range s.Linux.Namespaces {
		s.Linux.Namespaces[i].Path = ""
	}
	// A FIFO has no device number; runc on the host ignores one given,
	// the guest's newer runc refuses it.
	for i, d := range s.Linux.Devices {
		if d.Type == "p" {
			s.Linux.Devices[i].Major, s.Linux.Devices[i].Minor = 0, 0
		}
	}
	if r := s.Linux.Resources; r != nil {
		// Host block devices, hugepages, RDMA and net_cls have no meaning
		// in the guest.
		r.BlockIO = nil
		r.HugepageLimits = nil
		r.Rdma = nil
		r.Network = nil
	}
	return nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// takeAddressSpaceLimit removes RLIMIT_AS from the process's rlimits and
// returns it. runc init applies the spec's rlimits to itself and then
// still has to load the seccomp filter: runc 1.5 (Go 1.21+ reserves ~1.2
// GiB of address space at start, glibc's malloc arenas more) needs ~1.5
// GiB, so a smaller RLIMIT_AS fails the create with ENOMEM. The agent sets
// it on the created init process instead (setAddressSpaceLimit), which
// only waits for start and then execs the container's process, so that
// process starts with exactly the spec's limit.
func takeAddressSpaceLimit(p *specs.Process) *specs.POSIXRlimit {
	for i, r := range p.Rlimits {
		if r.Type == "RLIMIT_AS" {
			p.Rlimits = append(p.Rlimits[:i:i], p.Rlimits[i+1:]...)
			return &r
		}
	}
	return nil
}

// setAddressSpaceLimit applies a limit takeAddressSpaceLimit took to pid.
func setAddressSpaceLimit(pid int, r *specs.POSIXRlimit) error {
	if r == nil {
		return nil
	}
	lim := unix.Rlimit{Cur: r.Soft, Max: r.Hard}
	if err := unix.Prlimit(pid, unix.RLIMIT_AS, &lim, nil); err != nil {
		return fmt.Errorf("setting RLIMIT_AS on the container's process: %w", err)
	}
	return nil
}

// guestHookPaths resolves createContainer hooks. Their path resolves in
// the runtime's namespace, which for the guest's runc is the initramfs:
// it has none of the host's programs. A path missing there is taken from
// the container's root instead (runc runs these hooks before pivot_root,
// with the root mounted at rootPath), so a hook can be a program of the
// image or of a bind mount.
func guestHookPaths(hooks []specs.Hook, rootPath string) []specs.Hook {
	out := make([]specs.Hook, len(hooks))
	for i, h := range hooks {
		if _, err := os.Stat(h.Path); err != nil && filepath.IsAbs(h.Path) {
			h.Path = filepath.Join(rootPath, h.Path)
		}
		out[i] = h
	}
	return out
}

// guestHasDevice says whether the guest kernel has a device of type (c, u
// or b) and number.
var guestHasDevice = func(typ string, major, minor int64) bool {
	class := "char"
	if typ == "b" {
		class = "block"
	}
	_, err := os.Stat(fmt.Sprintf("/sys/dev/%s/%d:%d", class, major, minor))
	return err == nil
}

// dropMissingDevices leaves out of a guest spec the devices the guest
// kernel has nothing behind (nerdctl --device /dev/kvm, --privileged's
// copy of the host's /dev): such a node would fail every open (ENXIO,
// ENODEV), or be another device. It returns what it left out.
func dropMissingDevices(s *specs.Spec) []string {
	var kept []specs.LinuxDevice
	var dropped []string
	for _, d := range s.Linux.Devices {
		if d.Type != "p" && !guestHasDevice(d.Type, d.Major, d.Minor) {
			dropped = append(dropped, fmt.Sprintf("%s (%s %d:%d)", d.Path, d.Type, d.Major, d.Minor))
			continue
		}
		kept = append(kept, d)
	}
	s.Linux.Devices = kept
	return dropped
}

// netSysctls splits the spec's network sysctls: those of interfaces other
// than all, default and lo (net.ipv4.conf.eth0.rp_filter) are removed
// from the spec, and returned in ifs by path under /proc/sys: under runc
// the hooks have made those interfaces by the time runc sets sysctls; here
// the VM's NICs move into the container's namespace after the create
// (ConfigureNetwork), where they are set instead. The spec's other net
// sysctls stay for runc and are returned in again too: ConfigureNetwork
// copies the host namespace's settings after runc has set them, and a
// spec's own (net.ipv4.ip_forward=0, which is also conf.all.forwarding)
// must win as under runc. A key with an empty, . or .. element is left
// to runc, which refuses it.
func netSysctls(s *specs.Spec) (ifs, again map[string]string) {
	if s.Linux == nil {
		return nil, nil
	}
	for k, v := range s.Linux.Sysctl {
		path, ok := sysctlPath(k)
		if !ok || !strings.HasPrefix(path, "net/") {
			continue
		}
		f := strings.Split(path, "/")
		if len(f) >= 5 && (f[1] == "ipv4" || f[1] == "ipv6") && (f[2] == "conf" || f[2] == "neigh") &&
			f[3] != "all" && f[3] != "default" && f[3] != "lo" {
			if ifs == nil {
				ifs = map[string]string{}
			}
			ifs[path] = v
			delete(s.Linux.Sysctl, k)
			continue
		}
		if again == nil {
			again = map[string]string{}
		}
		again[path] = v
	}
	return ifs, again
}

// sysctlPath is a sysctl's path under /proc/sys, as runc reads the key
// (slashes as they are, or dots for slashes); false for one with an
// empty, . or .. element, which could name a file outside it.
func sysctlPath(k string) (string, bool) {
	path := k
	if !strings.Contains(k, "/") {
		path = strings.ReplaceAll(k, ".", "/")
	}
	for _, e := range strings.Split(path, "/") {
		if e == "" || e == "." || e == ".." {
			return "", false
		}
	}
	return path, true
}
