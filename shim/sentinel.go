package shim

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// The task's pid is a sentinel: a process of the shim's, in the container's
// network namespace (the shim's), chrooted into the container's rootfs as
// the host sees it (the bundle's rootfs, shared live with the guest). Tools
// that reach a running container through /proc/PID/root, as `nerdctl cp`
// does, then read and write the container's files, not the host's (with the
// shim's own pid they reached the host's root). The container's own
// processes are in the guest and have no host pid.

// sentinelArg, as argv[1], makes the shim binary a sentinel.
const sentinelArg = "vz-sentinel"

// runSentinel is the sentinel's body: chroot into root, say so on stdout,
// and wait to be killed.
func runSentinel(root string) {
	if err := unix.Chroot(root); err != nil {
		fmt.Fprintf(os.Stderr, "sentinel: chroot %s: %v\n", root, err)
		os.Exit(1)
	}
	_ = unix.Chdir("/")
	_, _ = os.Stdout.Write([]byte{'k'})
	os.Stdout.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	os.Exit(0)
}

// sentinel is a running sentinel and its end.
type sentinel struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startSentinel starts a sentinel in root; it dies with the shim.
func startSentinel(root string) (*sentinel, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, sentinelArg, root)
	cmd.SysProcAttr = sentinelAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the task's sentinel: %w", err)
	}
	b := make([]byte, 1)
	if _, err := out.Read(b); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the task's sentinel did not chroot into %s", root)
	}
	s := &sentinel{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

func (s *sentinel) pid() int { return s.cmd.Process.Pid }

// stop kills the sentinel and waits for it (its root keeps the rootfs
// mount busy).
func (s *sentinel) stop() {
	if s == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}
