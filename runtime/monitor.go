package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/internal/sockpath"
)

// CreateOptions is `vzrun create` (and `run --detach`).
type CreateOptions struct {
	ID            string
	Bundle        string
	PidFile       string
	ConsoleSocket string
	// Monitor is the command that becomes the container's monitor: the
	// vzrun binary and its global flags; "monitor" and its own flags are
	// appended.
	Monitor []string
}

// Create boots the container's VM and creates its process, not started.
// The VM is owned by a monitor process (a re-executed vzrun) that outlives
// this call: it holds the VM, relays the container's stdio (inherited
// from the caller, as runc's container inherits runc's), serves the other
// commands on a socket in the state dir and exits with the container's
// exit status. Its pid is the container's pid.
func (r *Runtime) Create(ctx context.Context, o CreateOptions) (retErr error) {
	if err := checkPrivileges(); err != nil {
		return err
	}
	bundle, err := filepath.Abs(o.Bundle)
	if err != nil {
		return err
	}
	if err := ValidateID(o.ID); err != nil {
		return err
	}
	spec, err := LoadSpec(bundle)
	if err != nil {
		return err
	}
	if spec.Process.Terminal && o.ConsoleSocket == "" {
		return fmt.Errorf("process.terminal is set: a detached container needs --console-socket: %w", errdefs.ErrInvalidArgument)
	}
	if !spec.Process.Terminal && o.ConsoleSocket != "" {
		return fmt.Errorf("--console-socket given but process.terminal is not set: %w", errdefs.ErrInvalidArgument)
	}
	dir, err := CreateStateDir(r.Root, o.ID)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			killStateProcesses(dir.Path)
			_ = dir.Remove()
		}
	}()
	// Until the monitor writes its own pid, this process owns the state:
	// it is "creating" while this process lives.
	st := newState(o.ID, bundle, spec)
	if err := dir.Save(st); err != nil {
		return err
	}
	dir.Unlock()

	args := append(o.Monitor[1:], "monitor", "--bundle", bundle, "--state-dir", dir.Path+"/")
	if o.ConsoleSocket != "" {
		cs, err := filepath.Abs(o.ConsoleSocket)
		if err != nil {
			return err
		}
		args = append(args, "--console-socket", cs)
	}
	cmd := exec.Command(o.Monitor[0], append(args, o.ID)...)
	cmd.ExtraFiles = []*os.File{nil} // fd 3: the ready pipe, set by spawnDetached
	started, err := StartInNetNS(cmd, spec)
	if err != nil {
		return err
	}
	defer started()
	return spawnDetached(cmd, o.ConsoleSocket == "", o.PidFile, "creating container "+o.ID, "the monitor exited")
}

// spawnDetached starts cmd in a session of its own with a pipe on fd 3
// on which it reports "ok" or an error once it is ready, writes its pid to
// pidFile and leaves it running. With inheritStdio it gets this process's
// stdio (the container's, as runc's container gets runc's). A SIGINT,
// SIGTERM or SIGHUP while it gets ready kills it and fails: what is being
// done is abandoned, not left running (a kill -9 of this process the child
// sees as the pipe's reader gone, and abandons it itself).
func spawnDetached(cmd *exec.Cmd, inheritStdio bool, pidFile, what, exited string) error {
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer ready.Close()
	if inheritStdio {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	// fd 3 is the ready pipe; a caller may have reserved it.
	if len(cmd.ExtraFiles) == 0 {
		cmd.ExtraFiles = []*os.File{readyW}
	} else {
		cmd.ExtraFiles[0] = readyW
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	defer signal.Stop(sigs)
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	msgc := make(chan []byte, 1)
	go func() { msg, _ := io.ReadAll(ready); msgc <- msg }()
	var msg []byte
	select {
	case msg = <-msgc:
	case sig := <-sigs:
		// What is being done is abandoned as a kill -9 of this process
		// abandons it: the child finds its ready pipe's reader gone
		// when it reports, and undoes what it made (redirects in a
		// network namespace, poststop hooks) itself. Bounded: one that
		// does not end is killed.
		ready.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(abandonTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
		return fmt.Errorf("%v while %s", sig, what)
	}
	if string(msg) != "ok" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if len(msg) == 0 {
			return errors.New(what + ": " + exited)
		}
		return errors.New(string(msg))
	}
	if pidFile != "" {
		if err := WritePidFile(pidFile, cmd.Process.Pid); err != nil {
			return err
		}
	}
	return cmd.Process.Release()
}

// abandonTimeout bounds the wait for an interrupted create's monitor to
// undo what it made.
const abandonTimeout = 2 * time.Minute

// WritePidFile writes pid atomically, as runc does.
func WritePidFile(path string, pid int) error {
	path, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	return os.Rename(tmp, path)
}

// MonitorOptions is the hidden `vzrun monitor` command.
type MonitorOptions struct {
	ID            string
	Bundle        string
	StateDir      string
	ConsoleSocket string
	// Ready is told "ok" or the error once the container is created.
	Ready *os.File
}

// RunMonitor is the body of a container's monitor process; it returns the
// exit status the process should exit with.
func (r *Runtime) RunMonitor(ctx context.Context, o MonitorOptions) int {
	m := &monitor{r: r, o: o}
	if err := m.create(ctx); err != nil {
		log.G(ctx).WithError(err).WithField("id", o.ID).Error("creating container")
		// As runc: a container that fails to be created is destroyed,
		// and its poststop hooks run, before create fails (which kills
		// this process once it has the error: a redirect or a hook's
		// clean-up left half-done would stay).
		m.teardown(ctx)
		if m.c != nil {
			m.c.poststop(ctx)
		}
		if _, werr := fmt.Fprint(o.Ready, err.Error()); werr != nil && m.dir != nil {
			// The create that started this monitor is gone: nobody
			// removes the state of what is already undone (a delete
			// would run the poststop hooks again).
			_ = m.dir.Remove()
		}
		o.Ready.Close()
		return 1
	}
	if _, err := fmt.Fprint(o.Ready, "ok"); err != nil {
		// The create that started this monitor is gone (killed before
		// it could report success): nothing of the container may stay.
		log.G(ctx).WithError(err).WithField("id", o.ID).Warn("the create command is gone: abandoning the container")
		o.Ready.Close()
		m.teardown(ctx)
		m.c.poststop(ctx)
		_ = m.dir.Remove()
		return 1
	}
	o.Ready.Close()
	return m.wait(ctx)
}

type monitor struct {
	r           *Runtime
	o           MonitorOptions
	dir         *StateDir
	c           *Container
	hooks       hooksOf
	server      *ttrpc.Server
	inflight    atomic.Int32
	relay       *relay
	stopSignals func()

	// vcpus serialises pausing and resuming the VM's vCPUs.
	vcpus  sync.Mutex
	paused bool
	// unpaused is the status Resume returns to: created or running.
	unpaused string
	// starting holds, by exec id, a channel closed when that exec's
	// start has returned (a start takes a while: runc exec in the guest).
	starting sync.Map
	// orphaned holds the exec ids whose owner died: a start of one that
	// arrives late is refused.
	orphaned sync.Map
}

// hooksOf keeps the spec's host hooks.
type hooksOf struct {
	prestart, createRuntime, poststart, poststop []specs.Hook
}

func (m *monitor) create(ctx context.Context) error {
	dir := &StateDir{Path: filepath.Clean(m.o.StateDir)}
	m.dir = dir
	st, err := dir.Load()
	if err != nil {
		return err
	}
	spec, err := LoadSpec(m.o.Bundle)
	if err != nil {
		return err
	}
	if spec.Hooks != nil {
		//lint:ignore SA1019 prestart is deprecated but still honoured
		m.hooks = hooksOf{spec.Hooks.Prestart, spec.Hooks.CreateRuntime, spec.Hooks.Poststart, spec.Hooks.Poststop}
	}
	start, _ := processStart(os.Getpid())
	st.Pid, st.OwnerStart = os.Getpid(), start

	m.c = &Container{ID: m.o.ID, Bundle: m.o.Bundle, Spec: spec, Dir: dir, State: st}
	if err := m.c.boot(ctx, m.r); err != nil {
		return err
	}
	sb := m.c.sb

	var stdin io.Reader = os.Stdin
	var stdout, stderr io.Writer = os.Stdout, os.Stderr
	var con console.Console
	if m.o.ConsoleSocket != "" {
		slave, err := newTerminal(m.o.ConsoleSocket, spec.Process.ConsoleSize)
		if err != nil {
			return err
		}
		stdin, stdout, stderr = slave, slave, nil
		con, _ = console.ConsoleFromFile(slave)
	}
	if con != nil {
		resize(ctx, sb.Agent, m.o.ID, "", con)
	}
	m.relay = startRelay(ctx, sb.Agent, m.o.ID, "", stdin, stdout, stderr, spec.Process.Terminal)
	m.stopSignals = forwardSignals(ctx, sb.Agent, m.o.ID, con)

	if err := m.c.prepare(ctx); err != nil {
		return err
	}

	if err := m.serve(ctx); err != nil {
		return err
	}

	st.Status = StatusCreated
	return dir.Update(st)
}

// serve answers the other vzrun commands (kill, exec, pause, ...) on the
// state dir's monitor.sock, through the proxy.
func (m *monitor) serve(ctx context.Context) error {
	server, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(m.track))
	if err != nil {
		return err
	}
	api.RegisterAgentService(server, &proxy{AgentService: m.c.Agent, m: m})
	sock := m.dir.File("monitor.sock")
	_ = os.Remove(sock)
	l, err := sockpath.Listen(sock)
	if err != nil {
		server.Close()
		return err
	}
	m.server = server
	go func() { _ = server.Serve(ctx, l) }()
	return nil
}

// track counts the calls in flight for stopServing.
func (m *monitor) track(ctx context.Context, u ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, h ttrpc.Method) (any, error) {
	m.inflight.Add(1)
	defer m.inflight.Add(-1)
	return h(ctx, u)
}

// stopServing lets calls in flight (a kill that ended the container, a
// start whose poststart hook failed) answer, then removes the socket.
// It waits for them itself: ttrpc's Shutdown takes a connection for idle
// until its loop has seen the call's answer, and would close it under a
// call still running (the caller gets "ttrpc: closed").
func (m *monitor) stopServing(ctx context.Context) {
	if m.server == nil {
		return
	}
	if m.inflight.Load() > 0 {
		for deadline := time.Now().Add(2 * time.Second); m.inflight.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		// The answer leaves after the handler returns.
		time.Sleep(20 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if err := m.server.Shutdown(sctx); err != nil {
		_ = m.server.Close()
	}
	cancel()
	_ = os.Remove(m.dir.File("monitor.sock"))
	m.server = nil
}

// wait follows the container to its end, then stops the VM.
func (m *monitor) wait(ctx context.Context) int {
	w, err := m.c.Agent.Wait(ctx, &api.WaitRequest{ContainerId: m.o.ID})
	status := 255
	if err == nil {
		status = int(w.ExitStatus)
		m.relay.wait()
	} else {
		log.G(ctx).WithError(m.c.vmExited(errgrpc.ToNative(err))).WithField("id", m.o.ID).Error("lost the container")
	}
	m.teardown(ctx)
	if st, err := m.dir.Load(); err == nil {
		st.Status, st.ExitStatus = StatusStopped, status
		_ = m.dir.Update(st)
	}
	return status
}

// teardown stops the VM and whatever the monitor made.
func (m *monitor) teardown(ctx context.Context) {
	if m.stopSignals != nil {
		m.stopSignals()
	}
	m.stopServing(ctx)
	if m.c != nil {
		if err := m.c.Stop(context.WithoutCancel(ctx)); err != nil {
			log.G(ctx).WithError(err).Error("stopping the container")
		}
	}
}

// Connect returns a client of the monitor of a running container.
func Connect(ctx context.Context, dir *StateDir) (api.AgentService, func(), error) {
	conn, err := sockpath.Dial(dir.File("monitor.sock"))
	if err != nil {
		return nil, nil, fmt.Errorf("container %s is not running: %w", filepath.Base(dir.Path), errdefs.ErrFailedPrecondition)
	}
	c := ttrpc.NewClient(conn)
	return api.NewAgentClient(c), func() { c.Close() }, nil
}
