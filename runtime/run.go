package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// RunOptions is a foreground `vzrun run`.
type RunOptions struct {
	ID     string
	Bundle string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Console is the caller's terminal for a spec with process.terminal;
	// it is put in raw mode and sized for the container.
	Console console.Console
	// PidFile receives the pid of the process that owns the VM (this one).
	PidFile string
	// Keep leaves the stopped container for `delete` (BuildKit's --keep).
	Keep bool
}

// Run boots a VM for the bundle, runs its process with the caller's stdio,
// and removes everything once the process has exited. It returns the
// process's exit status (128+signal when killed).
func (r *Runtime) Run(ctx context.Context, o RunOptions) (status int, retErr error) {
	if err := checkPrivileges(); err != nil {
		return -1, err
	}
	bundle, err := filepath.Abs(o.Bundle)
	if err != nil {
		return -1, err
	}
	if err := ValidateID(o.ID); err != nil {
		return -1, err
	}
	spec, err := LoadSpec(bundle)
	if err != nil {
		return -1, err
	}
	if status, handled, child, err := runInNetNS(spec); handled {
		// The run itself went on in a child in a new network namespace;
		// killed, it left its state: remove it, as it would have.
		if child > 0 && !o.Keep {
			if dir, st, oerr := r.open(o.ID); oerr == nil {
				dir.Unlock()
				if st.Pid == child || st.Pid == 0 {
					if derr := r.Delete(ctx, o.ID, true); derr != nil {
						log.G(ctx).WithError(derr).WithField("id", o.ID).Warn("removing the state of a killed run")
					}
				}
			}
		}
		return status, err
	}
	// A SIGPIPE (vzrun's own log written to a pipe whose reader is gone)
	// must not kill the run half-way: caught, and dropped unread.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, unix.SIGPIPE)
	defer signal.Stop(sigpipe)
	// Until signals go to the container, one that would end this process
	// ends the run instead, cleanly: the VM stops and the state goes.
	bootCtx, interrupt := context.WithCancelCause(ctx)
	defer interrupt(nil)
	early := make(chan os.Signal, 1)
	signal.Notify(early, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	earlyDone := make(chan struct{})
	go func() {
		select {
		case s := <-early:
			interrupt(fmt.Errorf("%v while creating container %s", s, o.ID))
		case <-earlyDone:
		}
	}()
	endEarly := sync.OnceFunc(func() { signal.Stop(early); close(earlyDone) })
	defer endEarly()
	dir, err := CreateStateDir(r.Root, o.ID)
	if err != nil {
		return -1, err
	}
	st := newState(o.ID, bundle, spec)
	defer func() {
		// A sync back of an ext4 rootfs that failed left the image, the
		// container's data, in the state dir: the container stays,
		// stopped, for delete to sync it.
		var kept *imageKeptError
		if errors.As(retErr, &kept) {
			st.Status = StatusStopped
			_ = dir.Update(st)
			return
		}
		if o.Keep && retErr == nil {
			st.Status, st.ExitStatus = StatusStopped, status
			if err := dir.Update(st); err != nil {
				retErr = err
			}
			return
		}
		if err := dir.Remove(); err != nil && retErr == nil {
			retErr = err
		}
		// After a failure too (as runc destroys a container that failed
		// to be created); a poststop failure is only logged.
		if spec.Hooks != nil {
			if err := runHooks(ctx, "poststop", spec.Hooks.Poststop, specState(st, StatusStopped)); err != nil {
				log.G(ctx).WithError(err).WithField("id", o.ID).Warn("poststop hook")
			}
		}
	}()
	if err := dir.Save(st); err != nil {
		return -1, err
	}
	// Other commands (state, delete) may look while it runs; a foreground
	// run only writes the state again at start.
	dir.Unlock()
	c := &Container{ID: o.ID, Bundle: bundle, Spec: spec, Dir: dir, State: st, clearONLCR: spec.Process.Terminal}
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop(context.WithoutCancel(ctx))
		}
	}()
	if err := c.boot(bootCtx, r); err != nil {
		return -1, errors.Join(context.Cause(bootCtx), err)
	}
	tp := time.Now()
	if err := c.prepare(bootCtx); err != nil {
		return -1, errors.Join(context.Cause(bootCtx), err)
	}
	if err := context.Cause(bootCtx); err != nil {
		return -1, err
	}
	endEarly()
	log.G(ctx).WithFields(log.Fields{"id": o.ID, "prepare": time.Since(tp)}).Debug("hooks and network done")
	// Other shells reach the container as they reach a detached one's
	// monitor: vzrun kill, exec, pause, ps.
	m := &monitor{r: r, dir: dir, c: c}
	if err := m.serve(ctx); err != nil {
		return -1, err
	}
	defer m.stopServing(ctx)
	t0 := time.Now()
	if o.PidFile != "" {
		if err := WritePidFile(o.PidFile, os.Getpid()); err != nil {
			return -1, err
		}
	}
	if o.Console != nil && spec.Process.Terminal {
		if err := o.Console.SetRaw(); err == nil {
			defer o.Console.Reset()
		}
		resize(ctx, c.Agent, o.ID, "", o.Console)
	}
	relay := c.Relay(ctx, "", o.Stdin, o.Stdout, o.Stderr, spec.Process.Terminal)
	stopSignals := forwardSignals(ctx, c.Agent, o.ID, o.Console)
	defer stopSignals()
	if _, err := c.Agent.Start(ctx, &api.StartRequest{ContainerId: o.ID}); err != nil {
		return -1, fmt.Errorf("starting container %s: %w", o.ID, errgrpc.ToNative(err))
	}
	st.Status = StatusRunning
	if err := dir.Update(st); err != nil {
		return -1, err
	}
	log.G(ctx).WithFields(log.Fields{"id": o.ID, "start": time.Since(t0)}).Debug("container started")
	if spec.Hooks != nil {
		// runc fails the run on a poststart hook's failure (the spec only
		// asks for a warning); callers of runc expect its behaviour. The
		// deferred Stop takes the VM down with the process.
		if err := runHooks(ctx, "poststart", spec.Hooks.Poststart, specState(st, StatusRunning)); err != nil {
			return -1, err
		}
	}

	w, err := c.Agent.Wait(ctx, &api.WaitRequest{ContainerId: o.ID})
	if err != nil {
		return -1, fmt.Errorf("waiting for container %s: %w", o.ID, c.vmExited(errgrpc.ToNative(err)))
	}
	tw := time.Now()
	relay.wait()
	log.G(ctx).WithFields(log.Fields{"id": o.ID, "wait": tw.Sub(t0), "output": time.Since(tw)}).Debug("container exited")
	// No runc delete in the guest: the whole VM goes, and the agent
	// unmounts the container's file systems before it powers off.
	t1 := time.Now()
	m.stopServing(ctx)
	stopped = true
	err = c.Stop(ctx)
	log.G(ctx).WithFields(log.Fields{"id": o.ID, "run": t1.Sub(t0), "shutdown": time.Since(t1)}).Debug("container done")
	if err != nil {
		return -1, fmt.Errorf("container %s exited with %d, but: %w", o.ID, w.ExitStatus, err)
	}
	return int(w.ExitStatus), nil
}

// isTerminal says whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := console.ConsoleFromFile(f)
	return err == nil
}

// relay copies a process's stdio between the caller and the agent.
type relay struct {
	out sync.WaitGroup
	// stdinDone is closed once stdin has been copied and closed.
	stdinDone chan struct{}
}

func startRelay(ctx context.Context, agent api.AgentService, id, execID string, stdin io.Reader, stdout, stderr io.Writer, terminal bool) *relay {
	r := &relay{stdinDone: make(chan struct{})}
	copyOut := func(fd uint32, w io.Writer) {
		defer r.out.Done()
		for {
			resp, err := agent.ReadStdio(ctx, &api.ReadStdioRequest{ContainerId: id, ExecId: execID, Fd: fd})
			if err != nil {
				// The VM going away ends the output; what ended it is
				// reported where it happened.
				l := log.G(ctx).WithError(errgrpc.ToNative(err)).WithField("fd", fd)
				if errors.Is(err, ttrpc.ErrClosed) {
					l.Debug("reading container output")
				} else {
					l.Warn("reading container output")
				}
				return
			}
			if len(resp.Data) > 0 && w != nil {
				if _, err := w.Write(resp.Data); err != nil {
					// The reader is gone (EPIPE): so is the process's
					// end in the guest, and its next write fails as it
					// would writing to that reader under runc.
					log.G(ctx).WithError(err).WithField("fd", fd).Debug("container output: the reader is gone")
					if _, err := agent.CloseOutput(ctx, &api.CloseOutputRequest{ContainerId: id, ExecId: execID, Fd: fd}); err != nil {
						log.G(ctx).WithError(errgrpc.ToNative(err)).WithField("fd", fd).Debug("closing container output")
					}
					return
				}
			}
			if resp.Eof {
				return
			}
		}
	}
	r.out.Add(1)
	go copyOut(1, stdout)
	if !terminal {
		r.out.Add(1)
		go copyOut(2, stderr)
	}
	if stdin == nil {
		close(r.stdinDone)
	} else {
		// Asked before: a terminal that has been hung up answers no
		// terminal ioctl.
		stdinTerminal := isTerminal(stdin)
		go func() {
			defer close(r.stdinDone)
			buf := make([]byte, 256<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if _, werr := agent.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: id, ExecId: execID, Data: buf[:n]}); werr != nil {
						return
					}
				}
				if err != nil {
					// A terminal whose other end is gone (the master
					// sent to --console-socket closed, the caller's
					// terminal hung up: a raw terminal reads EOF or EIO
					// only then) hangs up the process's, as under runc,
					// where that master is its terminal's; other input
					// that ends (/dev/null) leaves the terminal as it is.
					hangup := errors.Is(err, unix.EIO) || stdinTerminal
					log.G(ctx).WithError(err).WithFields(log.Fields{"id": id, "exec": execID, "hangup": hangup && terminal}).Debug("stdin ended")
					if terminal && !hangup {
						return
					}
					_, _ = agent.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: id, ExecId: execID, Hangup: hangup})
					return
				}
			}
		}()
	}
	return r
}

func (r *relay) wait() { r.out.Wait() }

// forwardSignals sends the signals vzrun receives to the container, as
// runc run does, and window size changes to its terminal.
func forwardSignals(ctx context.Context, agent api.AgentService, id string, con console.Console) (stop func()) {
	return forwardSignalsTo(ctx, agent, id, "", con)
}

func forwardSignalsTo(ctx context.Context, agent api.AgentService, id, execID string, con console.Console) (stop func()) {
	ch := make(chan os.Signal, 32)
	signal.Notify(ch)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case s := <-ch:
				sig, ok := s.(unix.Signal)
				if !ok || sig == unix.SIGCHLD || sig == unix.SIGURG || sig == unix.SIGPIPE {
					continue
				}
				if sig == unix.SIGWINCH {
					if con != nil {
						resize(ctx, agent, id, execID, con)
					}
					continue
				}
				if _, err := agent.Signal(ctx, &api.SignalRequest{ContainerId: id, ExecId: execID, Signal: uint32(sig)}); err != nil {
					log.G(ctx).WithError(errgrpc.ToNative(err)).Debugf("forwarding %v", sig)
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// resize gives the container's terminal the size of con.
func resize(ctx context.Context, agent api.AgentService, id, execID string, con console.Console) {
	ws, err := con.Size()
	if err != nil {
		return
	}
	_, err = agent.ResizePty(ctx, &api.ResizePtyRequest{ContainerId: id, ExecId: execID, Width: uint32(ws.Width), Height: uint32(ws.Height)})
	if err != nil && !errors.Is(errgrpc.ToNative(err), context.Canceled) {
		log.G(ctx).WithError(errgrpc.ToNative(err)).Debug("resizing terminal")
	}
}

// newState is the state of a container this process owns.
func newState(id, bundle string, spec *specs.Spec) *State {
	start, _ := processStart(os.Getpid())
	return &State{ID: id, Bundle: bundle, Rootfs: RootfsPath(spec, bundle), Status: StatusCreating,
		Pid: os.Getpid(), OwnerStart: start, Created: time.Now().UTC(), Annotations: spec.Annotations,
		Owner: currentUser()}
}
