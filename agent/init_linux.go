package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// guestMounts are the file systems PID 1 provides before anything else runs.
var guestMounts = []struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
}

// setupGuest prepares the guest as PID 1: a root that runc can pivot_root
// away from, the API file systems, cgroup v2 with every controller
// delegated, and loopback up.
func setupGuest() error {
	if err := leaveInitramfs(); err != nil {
		return err
	}
	for _, m := range guestMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
		}
	}
	_ = os.Symlink("/proc/self/fd", "/dev/fd")
	_ = os.Symlink("pts/ptmx", "/dev/ptmx")
	if err := enableControllers("/sys/fs/cgroup"); err != nil {
		return err
	}
	// A block-device rootfs (ext4) loses what sits dirty in the guest's
	// page cache if the VM is killed: write it back within ~0.1 s rather
	// than the kernel's 30 s (the host keeps what reached the disk).
	// overcommit_memory=1: the VM is sized to the container's memory
	// limit, and the kernel's heuristic refused any allocation larger
	// than the VM (a 200 MB buffer under --memory 64m failed with
	// ENOMEM) where a host runc runs on allows it and the container's
	// cgroup limit then OOM-kills the process, as it does here now.
	for name, v := range map[string]string{"dirty_expire_centisecs": "10", "dirty_writeback_centisecs": "10", "overcommit_memory": "1"} {
		if err := os.WriteFile("/proc/sys/vm/"+name, []byte(v), 0o644); err != nil {
			return fmt.Errorf("vm.%s: %w", name, err)
		}
	}
	return setLinkUp("lo")
}

// leaveInitramfs moves / onto a bind mount of itself. The initramfs is the
// kernel's rootfs, which pivot_root(2) cannot move away from; a bind mount
// of it can, so runc works as it does on a normal host.
func leaveInitramfs() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return err
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return nil
	}
	if _, err := os.Stat("/.root-bound"); err == nil {
		return nil
	}
	const next = "/.newroot"
	if err := os.MkdirAll(next, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/", next, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting the initramfs: %w", err)
	}
	if err := os.WriteFile(filepath.Join(next, ".root-bound"), nil, 0o644); err != nil {
		return err
	}
	if err := unix.Chdir(next); err != nil {
		return err
	}
	if err := unix.Mount(next, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return unix.Chdir("/")
}

// enableControllers delegates every available controller to children of dir.
func enableControllers(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	var ctrls []string
	for _, c := range strings.Fields(string(b)) {
		ctrls = append(ctrls, "+"+c)
	}
	if len(ctrls) == 0 {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(ctrls, " ")), 0o644)
}

// setLinkUp sets IFF_UP on an interface.
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

// uptime is the guest's CLOCK_BOOTTIME in nanoseconds.
func uptime() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}

// powerOff syncs and powers the VM off; it does not return on success.
func powerOff() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
