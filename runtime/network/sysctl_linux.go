package network

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ChangedSysctls lists the network sysctls of the namespace at nsPath
// that differ from those of a new namespace: what CNI plugins set there
// (the tuning plugin's somaxconn, an interface's arp_ignore), which the
// guest's namespace must get too. Keys are paths under /proc/sys
// ("net/core/somaxconn"); of the per-interface ones only those of ifNames
// are read, compared with what a new interface gets (conf/default).
func ChangedSysctls(nsPath string, ifNames ...string) (map[string]string, error) {
	// The two namespaces are read at once, each on a thread of its own.
	var in, fresh map[string]string
	freshErr := make(chan error, 1)
	go func() {
		freshErr <- onThread(func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("making a network namespace to compare sysctls with: %w", err)
			}
			return nil
		}, func() error {
			var err error
			fresh, err = readNetSysctls()
			return err
		})
	}()
	err := inNS(nsPath, func() error {
		var err error
		in, err = readNetSysctls(ifNames...)
		return err
	})
	if ferr := <-freshErr; err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	changed := map[string]string{}
	for k, v := range in {
		// A new namespace inherits the host's IPv4 settings (all,
		// default, and through default its interfaces'), which a
		// new namespace here has too, but the guest's does not: they
		// go whatever the host's new namespace says, and the guest
		// sets those that differ from its own.
		if inheritedIPv4(k, ifNames) {
			changed[k] = v
			continue
		}
		base := k
		for _, n := range ifNames {
			if strings.Contains(k, "/"+n+"/") {
				base = strings.Replace(k, "/"+n+"/", "/default/", 1)
				break
			}
		}
		if was, ok := fresh[base]; ok && was != v {
			changed[k] = v
		}
	}
	return changed, nil
}

// inheritedIPv4 says k is an IPv4 setting a new network namespace takes
// from the host's (net.core.devconf_inherit_init_net 0, the default):
// ip_forward, and conf/all, conf/default and ifNames' conf.
func inheritedIPv4(k string, ifNames []string) bool {
	if k == "net/ipv4/ip_forward" {
		return true
	}
	rest, ok := strings.CutPrefix(k, "net/ipv4/conf/")
	if !ok {
		return false
	}
	dev, _, _ := strings.Cut(rest, "/")
	return dev == "all" || dev == "default" || slices.Contains(ifNames, dev)
}

// readNetSysctls reads the writable sysctls under /proc/sys/net of this
// thread's network namespace, skipping per-interface directories other
// than all, default and those of ifNames.
func readNetSysctls(ifNames ...string) (map[string]string, error) {
	out := map[string]string{}
	buf := make([]byte, 4096)
	root := "/proc/sys/net"
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // gone, or unreadable: not ours to copy
		}
		if d.IsDir() {
			// Connection tracking's tables are the host's business,
			// and the walk's largest part.
			if d.Name() == "netfilter" {
				return filepath.SkipDir
			}
			parent := filepath.Base(filepath.Dir(path))
			if (parent == "conf" || parent == "neigh") && path != root {
				if n := d.Name(); n != "all" && n != "default" && !slices.Contains(ifNames, n) {
					return filepath.SkipDir
				}
			}
			return nil
		}
		// An interface's MTU is its link's, which the guest's NIC takes.
		if d.Name() == "mtu" {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Mode().Perm()&0o200 == 0 {
			return nil // read-only: nothing to copy
		}
		if v, ok := readSysctl(path, buf); ok {
			out[strings.TrimPrefix(path, "/proc/sys/")] = v
		}
		return nil
	})
	return out, err
}

// readSysctl reads a sysctl file with raw calls (a walk reads hundreds);
// false for one that cannot be read (write-only: flush) or is longer
// than buf.
func readSysctl(path string, buf []byte) (string, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", false
	}
	defer unix.Close(fd)
	n, err := unix.Read(fd, buf)
	if err != nil || n == len(buf) {
		return "", false
	}
	return strings.TrimSpace(string(buf[:n])), true
}
