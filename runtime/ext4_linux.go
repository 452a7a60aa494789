package runtime

import (
	"errors"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// punch deallocates the given ranges of a file, which hold zeros.
func punch(path string, ranges []span) error {
	if len(ranges) == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, r := range ranges {
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r.off, r.len); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return nil // the bundle's file system has no holes
			}
			return err
		}
	}
	return nil
}

// dieWithParent has cmd killed when this process dies: a debugfs writing
// a dump must not outlive the sync that wanted it (a killed monitor or
// shim), writing into the rootfs meanwhile.
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
