package agent

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// sealRunc copies the runc binary at path into a sealed memfd, once, and
// returns the path that executes it. runc re-executes itself for every
// `runc init` from a copy the container cannot write to (CVE-2019-5736):
// when its own binary is not a sealed memfd it makes that copy per create
// and exec (by default a private overlayfs mount over its directory). A
// runc started from a sealed memfd uses itself as is, which saves that
// mount each time, and in a VM restored from a template the memfd is
// already in the guest's memory.
func sealRunc(path string) (string, error) {
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("runc", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return "", fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "runc")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return "", fmt.Errorf("copying %s: %w", path, err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if err := f.Chmod(0o511); err != nil {
		f.Close()
		return "", err
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return "", fmt.Errorf("sealing the runc memfd: %w", err)
	}
	// A descriptor without an *os.File (whose finalizer would close it)
	// stays open for the agent's life; a child execs it by this path
	// before its close-on-exec descriptors are closed.
	keep, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/proc/self/fd/%d", keep), nil
}
