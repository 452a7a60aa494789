package runtime

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// State returns the state of a container as runc prints it: the
// runtime-spec state plus rootfs, created and owner. A container whose
// owning host process is gone is reported stopped, whatever its file says.
func (r *Runtime) State(ctx context.Context, id string) (*ListEntry, error) {
	dir, st, err := r.open(id)
	if err != nil {
		return nil, err
	}
	dir.Unlock()
	e := entryOf(st)
	return &e, nil
}

// entryOf is what state and list print of a container. Until its process
// exists (creating) and once it is gone (stopped) there is no pid.
func entryOf(st *State) ListEntry {
	pid := st.Pid
	if st.Status == StatusStopped || st.Status == StatusCreating {
		pid = 0
	}
	return ListEntry{OCIVersion: specs.Version, ID: st.ID, Pid: pid, Status: st.Status, Bundle: st.Bundle,
		Rootfs: st.Rootfs, Created: st.Created, Annotations: st.Annotations, Owner: st.Owner}
}

// ownsState says whether pid is a live process of this state dir: its
// command line names the directory, or it runs in it (the VMM and
// virtiofsd do).
func ownsState(pid int, stateDir string) bool {
	if pid <= 0 {
		return false
	}
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	if err != nil || len(b) == 0 {
		return false
	}
	if cwd, err := os.Readlink(filepath.Join(proc, "cwd")); err == nil && cwd == filepath.Clean(stateDir) {
		return true
	}
	return bytes.Contains(b, []byte(stateDir+"/"))
}

// killStateProcesses SIGKILLs every process whose command line names the
// state dir (the VMM, virtiofsd) and waits for them to go.
func killStateProcesses(stateDir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if pid != os.Getpid() && ownsState(pid, stateDir) {
			_ = unix.Kill(pid, unix.SIGKILL)
			pids = append(pids, pid)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for ownsState(pid, stateDir) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}
