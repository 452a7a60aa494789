package runtime

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	cgroupstats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// open locks a container's state, loads it and corrects its status: a
// container whose owner is gone is stopped.
func (r *Runtime) open(id string) (*StateDir, *State, error) {
	dir, err := OpenStateDir(r.Root, id)
	if err != nil {
		return nil, nil, err
	}
	st, err := dir.Load()
	if err != nil {
		dir.Unlock()
		return nil, nil, err
	}
	if st.Status != StatusStopped && !st.alive() {
		st.Status = StatusStopped
	}
	return dir, st, nil
}

// withMonitor runs fn with a client of the container's monitor, after
// checking its status is one of want.
func (r *Runtime) withMonitor(ctx context.Context, id string, want []string, fn func(api.AgentService) error) error {
	dir, st, err := r.open(id)
	if err != nil {
		return err
	}
	dir.Unlock()
	ok := false
	for _, w := range want {
		ok = ok || st.Status == w
	}
	if !ok {
		return fmt.Errorf("container %s is %s: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	client, closeFn, err := Connect(ctx, dir)
	if err != nil {
		return err
	}
	defer closeFn()
	return errgrpc.ToNative(fn(client))
}

// Start starts a created container. A start that fails after the
// process ran (a failing poststart hook, which kills it) destroys the
// container, as runc does: runc runs poststart hooks in create, and a
// create that fails leaves nothing behind.
func (r *Runtime) Start(ctx context.Context, id string) error {
	sent := false
	err := r.withMonitor(ctx, id, []string{StatusCreated}, func(c api.AgentService) error {
		sent = true
		_, err := c.Start(ctx, &api.StartRequest{ContainerId: id})
		return err
	})
	if err == nil || !sent {
		return err
	}
	if dir, st, oerr := r.open(id); oerr == nil {
		dir.Unlock()
		if st.Status == StatusRunning || st.Status == StatusStopped {
			if derr := r.Delete(ctx, id, true); derr != nil {
				log.G(ctx).WithError(derr).WithField("id", id).Warn("removing the container after its start failed")
			}
		}
	}
	return err
}

// ParseSignal accepts runc's forms: KILL, SIGKILL, kill, 9.
func ParseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("invalid signal %q: %w", s, errdefs.ErrInvalidArgument)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("invalid signal %q: %w", s, errdefs.ErrInvalidArgument)
	}
	return sig, nil
}

// Kill signals the container's init (or, with all, every process).
func (r *Runtime) Kill(ctx context.Context, id string, sig unix.Signal, all bool) error {
	closed := false
	err := r.withMonitor(ctx, id, []string{StatusCreated, StatusRunning, StatusPaused}, func(c api.AgentService) error {
		_, err := c.Signal(ctx, &api.SignalRequest{ContainerId: id, Signal: uint32(sig), All: all})
		closed = agentClosed(err)
		return err
	})
	// A signal that ends the container can end its monitor before the
	// answer is back; the container having stopped is the answer.
	if closed {
		if dir, st, oerr := r.open(id); oerr == nil {
			dir.Unlock()
			for deadline := time.Now().Add(5 * time.Second); st.alive() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if !st.alive() {
				return nil
			}
		}
	}
	return err
}

// Pause freezes the container and the VM's vCPUs. As runc, a created
// container can be paused too; Resume returns it to created.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	return r.withMonitor(ctx, id, []string{StatusCreated, StatusRunning}, func(c api.AgentService) error {
		_, err := c.Pause(ctx, &api.ContainerRequest{ContainerId: id})
		return err
	})
}

// Resume undoes Pause.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	return r.withMonitor(ctx, id, []string{StatusPaused}, func(c api.AgentService) error {
		_, err := c.Resume(ctx, &api.ContainerRequest{ContainerId: id})
		return err
	})
}

// Update applies new resources to the container's cgroup in the guest.
func (r *Runtime) Update(ctx context.Context, id string, res *specs.LinuxResources) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return r.withMonitor(ctx, id, []string{StatusCreated, StatusRunning, StatusPaused}, func(c api.AgentService) error {
		_, err := c.Update(ctx, &api.UpdateRequest{ContainerId: id, Resources: b})
		return err
	})
}

// Pids lists the container's host processes, as runc's ps lists its
// container's: the process that owns the VM (the monitor, a foreground
// run, or the containerd shim), the VMM and its helpers (virtiofsd). The
// container's own processes run in the guest, where their pids name
// nothing on the host (`vzrun exec ID ps` lists them). Unlike the
// commands served by the monitor, it reads the host only, so it works for
// any owner.
func (r *Runtime) Pids(ctx context.Context, id string) ([]int, error) {
	dir, st, err := r.open(id)
	if err != nil {
		return nil, err
	}
	dir.Unlock()
	// As runc: a stopped container has no processes (not an error).
	if st.Status == StatusStopped {
		return []int{}, nil
	}
	return ownedPids(st.Pid, st.VMMPid, dir.Path), nil
}

// Stats reads the container's cgroup in the guest, in runc's events form.
// WaitOOM blocks until the guest's kernel has OOM-killed more of the
// container's processes than after, and returns the count.
func (r *Runtime) WaitOOM(ctx context.Context, id string, after uint64) (uint64, error) {
	var n uint64
	err := r.withMonitor(ctx, id, []string{StatusCreated, StatusRunning, StatusPaused}, func(c api.AgentService) error {
		resp, err := c.WaitOOM(ctx, &api.WaitOOMRequest{ContainerId: id, After: after})
		if err != nil {
			return err
		}
		n = resp.OomKills
		return nil
	})
	return n, err
}

func (r *Runtime) Stats(ctx context.Context, id string) (*runc.Stats, error) {
	var m cgroupstats.Metrics
	err := r.withMonitor(ctx, id, []string{StatusCreated, StatusRunning, StatusPaused}, func(c api.AgentService) error {
		resp, err := c.Stats(ctx, &api.ContainerRequest{ContainerId: id})
		if err != nil {
			return err
		}
		return proto.Unmarshal(resp.CgroupV2Metrics, &m)
	})
	if err != nil {
		return nil, err
	}
	return runcStats(&m), nil
}

// runcStats converts cgroup v2 metrics to what `runc events --stats` prints.
func runcStats(m *cgroupstats.Metrics) *runc.Stats {
	s := &runc.Stats{}
	if c := m.CPU; c != nil {
		s.Cpu.Usage = runc.CpuUsage{Total: c.UsageUsec * 1000, Kernel: c.SystemUsec * 1000, User: c.UserUsec * 1000}
		s.Cpu.Throttling = runc.Throttling{Periods: c.NrPeriods, ThrottledPeriods: c.NrThrottled, ThrottledTime: c.ThrottledUsec * 1000}
	}
	if mem := m.Memory; mem != nil {
		s.Memory.Usage = runc.MemoryEntry{Usage: mem.Usage, Limit: mem.UsageLimit, Max: mem.MaxUsage}
		s.Memory.Swap = runc.MemoryEntry{Usage: mem.SwapUsage, Limit: mem.SwapLimit}
		s.Memory.Cache = mem.File
		s.Memory.Raw = map[string]uint64{
			"anon": mem.Anon, "file": mem.File, "kernel_stack": mem.KernelStack, "slab": mem.Slab,
			"sock": mem.Sock, "shmem": mem.Shmem, "file_mapped": mem.FileMapped, "pgfault": mem.Pgfault,
			"pgmajfault": mem.Pgmajfault, "inactive_anon": mem.InactiveAnon, "active_anon": mem.ActiveAnon,
			"inactive_file": mem.InactiveFile, "active_file": mem.ActiveFile,
		}
	}
	if p := m.Pids; p != nil {
		s.Pids = runc.Pids{Current: p.Current, Limit: p.Limit}
	}
	if io := m.Io; io != nil {
		for _, e := range io.Usage {
			s.Blkio.IoServiceBytesRecursive = append(s.Blkio.IoServiceBytesRecursive,
				runc.BlkioEntry{Major: e.Major, Minor: e.Minor, Op: "Read", Value: e.Rbytes},
				runc.BlkioEntry{Major: e.Major, Minor: e.Minor, Op: "Write", Value: e.Wbytes})
			s.Blkio.IoServicedRecursive = append(s.Blkio.IoServicedRecursive,
				runc.BlkioEntry{Major: e.Major, Minor: e.Minor, Op: "Read", Value: e.Rios},
				runc.BlkioEntry{Major: e.Major, Minor: e.Minor, Op: "Write", Value: e.Wios})
		}
	}
	return s
}

// Delete removes a container. A created or stopped one goes at once; a
// running or paused one only with force, which kills it first. Poststop
// hooks run before it returns.
// stoppingTimeout bounds delete's wait for a monitor that is stopping its
// container's VM (an ext4 sync back of a large rootfs takes a while).
const stoppingTimeout = 10 * time.Minute

func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	// Deletes of one container take turns for all they do (the state
	// lock is let go while the container is killed: its monitor takes it
	// to record the exit); the next finds it gone.
	release, err := lockDelete(r.Root, id)
	if err != nil {
		return err
	}
	defer release()
	dir, st, err := r.open(id)
	if err != nil {
		if !force || errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		// A state dir whose state cannot be read (a crash while it was
		// made, a damaged file) goes with --force, as runc's does, and
		// whatever runs from it.
		path := filepath.Join(r.Root, id)
		if _, serr := os.Stat(filepath.Join(path, "rootfs.ext4")); serr == nil {
			return fmt.Errorf("%w; %s holds an ext4 image with what the container wrote: move it away to delete the container", err, path)
		}
		log.G(ctx).WithError(err).WithField("id", id).Warn("removing a container whose state cannot be read")
		killStateProcesses(path)
		return (&StateDir{Path: path}).Remove()
	}
	if st.Status == StatusRunning && !force && st.alive() {
		if _, serr := os.Stat(dir.File("monitor.sock")); errors.Is(serr, os.ErrNotExist) {
			// Its process has ended and the monitor, no longer serving,
			// is stopping the VM (syncing an ext4 rootfs back): the
			// container is stopped once that is done. (kill says "not
			// running" meanwhile.)
			dir.Unlock()
			for deadline := time.Now().Add(stoppingTimeout); st.alive() && ctx.Err() == nil && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			if dir, st, err = r.open(id); err != nil {
				return err
			}
		}
	}
	if (st.Status == StatusRunning || st.Status == StatusPaused || st.Status == StatusCreating) && !force {
		dir.Unlock()
		return fmt.Errorf("container %s is %s: stop it or use --force: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	dir.Unlock()
	// A container still being created has no monitor to ask yet: its VM's
	// processes are killed below, and its create fails.
	if st.alive() && st.Status != StatusCreating {
		// Bounded: a monitor or guest that does not answer is killed
		// below.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if client, closeFn, err := Connect(cctx, dir); err == nil {
			if st.Status == StatusPaused {
				_, _ = client.Resume(cctx, &api.ContainerRequest{ContainerId: id})
			}
			_, _ = client.Signal(cctx, &api.SignalRequest{ContainerId: id, Signal: uint32(unix.SIGKILL), All: true})
			closeFn()
		}
		cancel()
		for deadline := time.Now().Add(15 * time.Second); st.alive() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if st.alive() {
			_ = unix.Kill(st.Pid, unix.SIGKILL)
		}
	}
	killStateProcesses(dir.Path)
	// No data is lost to a kill -9 of the monitor: what an ext4 rootfs
	// holds is synced back before its state dir goes.
	sctx, cancel := ctx, context.CancelFunc(func() {})
	if r.LeftSyncTimeout > 0 {
		sctx, cancel = context.WithTimeout(ctx, r.LeftSyncTimeout)
	}
	if r.NoLeftSync {
		err = keepLeftImage(dir, st)
	} else {
		err = syncLeftImage(sctx, dir, st, r.ImagesStayWithState)
	}
	cancel()
	if err != nil {
		return err
	}
	disconnectNetwork(ctx, st)
	spec, specErr := LoadSpec(st.Bundle)
	if err := dir.Remove(); err != nil {
		return err
	}
	// As runc: a poststop hook's failure is logged; the container is gone.
	if specErr == nil && spec.Hooks != nil {
		if err := runHooks(ctx, "poststop", spec.Hooks.Poststop, specState(st, StatusStopped)); err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("poststop hook")
		}
	}
	return nil
}

// ListEntry is one line of `vzrun list`, in runc's JSON form.
type ListEntry struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Owner       string            `json:"owner"`
}

// List returns every container under the root, by id.
func (r *Runtime) List(ctx context.Context) ([]ListEntry, error) {
	entries, err := os.ReadDir(cmp.Or(r.Root, "."))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []ListEntry
	for _, e := range entries {
		if !e.IsDir() || ValidateID(e.Name()) != nil {
			continue
		}
		dir, st, err := r.open(e.Name())
		if err != nil {
			// As runc: said, and the others listed.
			fmt.Fprintf(os.Stderr, "load container %s: %v\n", e.Name(), err)
			continue
		}
		dir.Unlock()
		// The directory is the container's name, whatever its state
		// file says.
		st.ID = e.Name()
		out = append(out, entryOf(st))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ExecOptions is `vzrun exec`.
type ExecOptions struct {
	ID            string
	Process       *specs.Process
	ConsoleSocket string
	PidFile       string
	// Detach: return once the process runs; a background copy of this
	// command (Self, plus --ready-fd) relays its stdio and is its pid.
	Detach bool
	Self   []string
	// Ready is told "ok" or the error once the process started.
	Ready *os.File
}

// Exec runs a new process in a running container and returns its exit
// status (or, detached, 0 once it started).
func (r *Runtime) Exec(ctx context.Context, o ExecOptions) (int, error) {
	if o.Detach {
		return 0, r.execDetached(ctx, o)
	}
	status, err := r.exec(ctx, o)
	if o.Ready != nil {
		if err != nil {
			fmt.Fprint(o.Ready, err.Error())
		}
		o.Ready.Close()
	}
	return status, err
}

func (r *Runtime) exec(ctx context.Context, o ExecOptions) (int, error) {
	if o.Process.Terminal && o.ConsoleSocket == "" && o.Ready != nil {
		return -1, fmt.Errorf("a detached exec with a terminal needs --console-socket: %w", errdefs.ErrInvalidArgument)
	}
	if len(o.Process.Args) == 0 {
		return -1, fmt.Errorf("process has no args: %w", errdefs.ErrInvalidArgument)
	}
	dir, st, err := r.open(o.ID)
	if err != nil {
		return -1, err
	}
	dir.Unlock()
	// As runc: a created container (its init waiting for start) takes
	// execs too.
	if st.Status != StatusRunning && st.Status != StatusCreated {
		return -1, fmt.Errorf("cannot exec in container %s: it is %s: %w", o.ID, st.Status, errdefs.ErrFailedPrecondition)
	}
	client, closeFn, err := Connect(ctx, dir)
	if err != nil {
		return -1, err
	}
	defer closeFn()
	procJSON, err := json.Marshal(o.Process)
	if err != nil {
		return -1, err
	}
	execID := randomID()
	if _, err := client.Exec(ctx, &api.ExecRequest{ContainerId: o.ID, ExecId: execID, Process: procJSON, Stdin: true,
		ClearOnlcr: o.Process.Terminal && o.ConsoleSocket == "", Debug: debugLogging()}); err != nil {
		return -1, errgrpc.ToNative(err)
	}
	// Once it has ended and its output is out (or it never started), the
	// agent forgets it and releases its stdio.
	defer func() {
		_, _ = client.DeleteProcess(context.WithoutCancel(ctx), &api.DeleteProcessRequest{ContainerId: o.ID, ExecId: execID})
	}()
	// This process owns the exec from here on (its pid is the exec's, in
	// the pid file too): the monitor kills the exec when the connection
	// of this Wait closes, even by a kill -9 before it has started.
	type waited struct {
		resp *api.WaitResponse
		err  error
	}
	wait := make(chan waited, 1)
	go func() {
		md := ttrpc.MD{}
		md.Set(execOwnerKey, "1")
		w, err := client.Wait(ttrpc.WithMetadata(ctx, md), &api.WaitRequest{ContainerId: o.ID, ExecId: execID})
		wait <- waited{w, err}
	}()
	var stdin io.Reader = os.Stdin
	var stdout, stderr io.Writer = os.Stdout, os.Stderr
	var con console.Console
	switch {
	case o.ConsoleSocket != "":
		slave, err := newTerminal(o.ConsoleSocket, o.Process.ConsoleSize)
		if err != nil {
			return -1, err
		}
		defer slave.Close()
		stdin, stdout, stderr = slave, slave, nil
		con, _ = console.ConsoleFromFile(slave)
	case o.Process.Terminal:
		if c, err := console.ConsoleFromFile(os.Stdin); err == nil {
			con = c
			if err := con.SetRaw(); err == nil {
				defer con.Reset()
			}
		}
	}
	started, err := client.Start(ctx, &api.StartRequest{ContainerId: o.ID, ExecId: execID})
	if err != nil {
		return -1, errgrpc.ToNative(err)
	}
	logGuestRunc(ctx, started.RuncLog)
	if con != nil {
		resize(ctx, client, o.ID, execID, con)
	}
	rel := startRelay(ctx, client, o.ID, execID, stdin, stdout, stderr, o.Process.Terminal)
	stop := forwardExecSignals(ctx, client, o.ID, execID, con)
	defer stop()
	if o.Ready != nil {
		fmt.Fprint(o.Ready, "ok")
		o.Ready.Close()
		o.Ready = nil
	}
	w := <-wait
	if w.err != nil {
		return -1, fmt.Errorf("waiting for the process: %w", errgrpc.ToNative(w.err))
	}
	rel.wait()
	return int(w.resp.ExitStatus), nil
}

// execDetached starts a background `vzrun exec` that relays the process's
// stdio and exits with its status; its pid is the process's pid.
func (r *Runtime) execDetached(ctx context.Context, o ExecOptions) error {
	cmd := exec.Command(o.Self[0], o.Self[1:]...)
	return spawnDetached(cmd, o.ConsoleSocket == "", o.PidFile, "exec in "+o.ID, "the relay process exited")
}

// forwardExecSignals sends the signals an exec relay receives to its
// process, and terminal size changes to its pty.
func forwardExecSignals(ctx context.Context, agent api.AgentService, id, execID string, con console.Console) func() {
	return forwardSignalsTo(ctx, agent, id, execID, con)
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ExecProcess builds an exec's process from the container's own, as runc
// does: its env, cwd, user and capabilities unless overridden.
func (r *Runtime) ExecProcess(id string) (*specs.Process, error) {
	dir, st, err := r.open(id)
	if err != nil {
		return nil, err
	}
	dir.Unlock()
	spec, err := LoadSpec(st.Bundle)
	if err != nil {
		return nil, err
	}
	p := *spec.Process
	p.Terminal = false
	p.Args = nil
	p.ConsoleSize = nil
	return &p, nil
}
