package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// A share's Binds are mounted in a mount namespace of its file server's
// own: the server starts as this same binary with bindsEnv set, whose
// init (below) mounts the files over their entries and execs the server.
// The mounts go when the server does, even by kill -9, so nothing is
// left on the host to unmount, and the guest (where a process that gets
// out of its container finds every share mounted by the agent) reaches a
// bound file and not the host directory it is in (/etc for a bind of
// /etc/localtime).
const bindsEnv = "_VZRUN_FILE_SERVER_BINDS"

type bindsPlan struct {
	Binary string
	Binds  []bindMount
}

type bindMount struct {
	Source, Target string
	ReadOnly       bool
}

func init() {
	v, ok := os.LookupEnv(bindsEnv)
	if !ok {
		return
	}
	if err := mountAndExec(v); err != nil {
		fmt.Fprintf(os.Stderr, "vzrun: a file server's bind mounts: %v\n", err)
		os.Exit(1)
	}
}

func mountAndExec(v string) error {
	var p bindsPlan
	if err := json.Unmarshal([]byte(v), &p); err != nil {
		return err
	}
	for _, b := range p.Binds {
		if err := unix.Mount(b.Source, b.Target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", b.Source, b.Target, err)
		}
		if b.ReadOnly {
			if err := unix.Mount("", b.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("read-only bind %s: %w", b.Source, err)
			}
		}
	}
	if err := os.Unsetenv(bindsEnv); err != nil {
		return err
	}
	return unix.Exec(p.Binary, os.Args, os.Environ())
}

// shareMounts are what the file server of share s mounts first: the
// share itself read-only if it is (virtiofsd has no read-only mode), then
// its Binds.
func shareMounts(s hypervisor.Share) []bindMount {
	var ms []bindMount
	if s.ReadOnly {
		ms = append(ms, bindMount{Source: s.Path, Target: s.Path, ReadOnly: true})
	}
	for _, b := range s.Binds {
		ms = append(ms, bindMount{Source: b.Source, Target: filepath.Join(s.Path, b.Name), ReadOnly: b.ReadOnly})
	}
	return ms
}

// withBinds makes cmd, a file server, start with mounts made (in a new
// mount namespace, which Go makes private, so nothing propagates to the
// host's).
func withBinds(cmd *exec.Cmd, mounts []bindMount) error {
	if len(mounts) == 0 {
		return nil
	}
	j, err := json.Marshal(bindsPlan{Binary: cmd.Path, Binds: mounts})
	if err != nil {
		return err
	}
	// /proc/self/exe runs even when the binary was replaced on disk.
	cmd.Path = "/proc/self/exe"
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, bindsEnv+"="+string(j))
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Unshareflags |= syscall.CLONE_NEWNS
	return nil
}
