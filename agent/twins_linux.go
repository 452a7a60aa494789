package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// twinsDir holds, per container, guest copies of special files of its
// root (see twinSpecialFiles); a tmpfs without nodev, so device twins
// open.
const twinsDir = "/run/vzrun/twins"

// twinSpecialFiles covers each read-only path of a 9p root that is a
// device node, FIFO or socket with a twin made here. runc makes a
// read-only path read-only with a bind mount and a remount that first
// statfs()es it, and QEMU 7.2's 9p server refuses any operation that would
// open a special file on the host (its fix for CVE-2023-2861): the statfs
// fails with ENXIO and so would the create. The twin has the node's type,
// device number, mode and owner, and lives in the guest.
func (c *container) twinSpecialFiles(root string, readonly []string) error {
	var dir string
	for _, p := range readonly {
		host := filepath.Join(root, p)
		if !strings.HasPrefix(host, root+"/") {
			continue
		}
		fi, err := os.Lstat(host)
		if err != nil {
			continue // runc skips a missing path; a symlink runc resolves
		}
		if fi.Mode()&(os.ModeDevice|os.ModeNamedPipe|os.ModeSocket) == 0 {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		if dir == "" {
			dir = filepath.Join(twinsDir, c.id)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0700"); err != nil {
				return fmt.Errorf("mounting %s: %w", dir, err)
			}
			c.mounts = append(c.mounts, dir)
		}
		twin := filepath.Join(dir, fmt.Sprint(len(c.mounts)))
		if err := unix.Mknod(twin, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("making a twin of read-only path %s: %w", p, err)
		}
		if err := unix.Chmod(twin, st.Mode&07777); err != nil {
			return err
		}
		if err := unix.Lchown(twin, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if err := unix.Mount(twin, host, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("covering read-only path %s with its twin: %w", p, err)
		}
		c.mounts = append(c.mounts, host)
	}
	return nil
}
