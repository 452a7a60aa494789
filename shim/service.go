package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"time"

	cgroupstats "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/internal/sockpath"
	vzruntime "github.com/vzrun/vzrun/runtime"
)

func newRuntime(ns string) *vzruntime.Runtime {
	// The rootfs is in containerd's bundle directory, which goes with
	// the task: an ext4 image not synced back stays with the state.
	return &vzruntime.Runtime{Root: filepath.Join(StateRoot, ns), ImagesStayWithState: true}
}

// process is the task's init or one of its execs.
type process struct {
	execID   string
	pid      uint32
	terminal bool
	spec     *specs.Process
	stdio    stdioPaths

	mu       sync.Mutex
	status   task.Status
	exitCode uint32
	exitedAt time.Time
	done     chan struct{}
	// ended closes when the guest reports the exit, done once the exit
	// is the shim's answer: later for a container whose rootfs is synced
	// back when its VM stops (done waits for the sync). Each closes once,
	// through end and finish: the waiter and Delete (of a created task)
	// can both get there.
	ended             chan struct{}
	endOnce, doneOnce sync.Once
	// waiter starts waitExit once: at start, or at a kill of a process
	// that was never started.
	waiter  sync.Once
	closers []io.Closer
	stdin   io.Closer
	// stdinHold is the shim's own write end of the stdin fifo.
	stdinHold io.Closer
	relay     *vzruntime.Relay
}

type stdioPaths struct{ stdin, stdout, stderr string }

// service is the task API of one container.
type service struct {
	ctx       context.Context
	publisher shim.Publisher
	sd        shutdown.Service

	mu       sync.Mutex
	creating bool
	c        *vzruntime.Container
	bundle   string
	init     *process
	execs    map[string]*process
	paused   bool
	metrics  *http.Server

	// vmMu keeps the VM from being stopped while its host processes are
	// read; destroyed says it has been (the container's process ended,
	// or the task was deleted).
	vmMu      sync.RWMutex
	destroyed bool
	// vmKilled says a SIGKILL the guest did not take killed the VM.
	vmKilled bool
	// sentinel is the task's pid (sentinel.go); sentinelStopping says its
	// end is ours.
	sentinel         *sentinel
	sentinelStopping bool
}

var _ taskAPI.TTRPCTaskService = (*service)(nil)

func newService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (*service, error) {
	s := &service{ctx: ctx, publisher: publisher, sd: sd, execs: map[string]*process{}}
	if address, err := shim.ReadAddress("address"); err == nil {
		sd.RegisterCallback(func(context.Context) error { return shim.RemoveSocket(address) })
	}
	return s, nil
}

func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

func (s *service) publish(ctx context.Context, topic string, ev any) {
	if err := s.publisher.Publish(ctx, topic, ev); err != nil {
		log.G(ctx).WithError(err).WithField("topic", topic).Warn("publishing event")
	}
}

func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("checkpoints: %w", errdefs.ErrNotImplemented)
	}
	// The VM's boot and the guest's create take seconds under emulation;
	// the other calls answer meanwhile (NotFound until the task exists),
	// as they do while runc's quick create runs: containerd gives State
	// 2 s, and nerdctl's logger gives up on a State that times out.
	s.mu.Lock()
	if s.c != nil || s.creating {
		s.mu.Unlock()
		return nil, fmt.Errorf("this shim already runs a container: %w", errdefs.ErrAlreadyExists)
	}
	s.creating = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.creating = false
		s.mu.Unlock()
	}()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(r.Bundle, "rootfs")
	if len(r.Rootfs) > 0 {
		var mounts []mount.Mount
		for _, m := range r.Rootfs {
			mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
		}
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, err
		}
		if err := mount.All(mounts, rootfs); err != nil {
			return nil, fmt.Errorf("mounting rootfs: %w", err)
		}
		defer func() {
			if retErr != nil {
				_ = mount.UnmountRecursive(rootfs, 0)
			}
		}()
	}
	rt := newRuntime(ns)
	// A state this container's last task left (its shim killed, and an
	// ext4 image too large to sync back in the clean-up containerd
	// allows): what it holds is synced into the rootfs, mounted again
	// now, before the new task starts on it.
	if _, err := rt.State(ctx, r.ID); err == nil {
		log.G(ctx).WithField("id", r.ID).Warn("the container's last task left its state: syncing and removing it first")
		if err := rt.Delete(ctx, r.ID, true); err != nil {
			return nil, fmt.Errorf("the state the container's last task left: %w", err)
		}
	}
	c, err := rt.NewContainer(ctx, r.ID, r.Bundle)
	if err != nil {
		return nil, err
	}
	sent, err := startSentinel(rootfs)
	if err != nil {
		c.Destroy(context.WithoutCancel(ctx))
		return nil, err
	}
	p := &process{pid: uint32(sent.pid()), terminal: r.Terminal, status: task.Status_CREATED, done: make(chan struct{}), ended: make(chan struct{}),
		stdio: stdioPaths{r.Stdin, r.Stdout, r.Stderr}}
	if err := s.startIO(ctx, c, p); err != nil {
		sent.stop()
		c.Destroy(context.WithoutCancel(ctx))
		return nil, err
	}
	metrics := serveMetrics(ctx, c.Dir.File(MetricsSocket), ns, r.ID, s.footprint)
	s.mu.Lock()
	s.c, s.bundle, s.sentinel, s.init, s.metrics = c, r.Bundle, sent, p, metrics
	s.mu.Unlock()
	go s.watchSentinel(r.ID, sent)
	s.publish(ctx, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO:  &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid: p.pid,
	})
	go s.watchOOM(r.ID, c.Agent)
	return &taskAPI.CreateTaskResponse{Pid: p.pid}, nil
}

// watchOOM publishes TaskOOM each time the kernel in the guest OOM-kills a
// process of the container's cgroup, until the container is gone.
func (s *service) watchOOM(id string, agent api.AgentService) {
	var seen uint64
	for {
		r, err := agent.WaitOOM(s.ctx, &api.WaitOOMRequest{ContainerId: id, After: seen})
		if err != nil {
			return
		}
		seen = r.OomKills
		s.publish(s.ctx, runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: id})
	}
}

// startIO opens the process's stdio as containerd gave it (fifos, or
// file:// URIs) and relays it through the agent.
func (s *service) startIO(ctx context.Context, c *vzruntime.Container, p *process) error {
	var stdin io.ReadCloser
	var stdout, stderr io.WriteCloser
	var err error
	if p.stdio.stdin != "" {
		if stdin, err = fifo.OpenFifo(context.WithoutCancel(ctx), p.stdio.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			return fmt.Errorf("opening stdin %s: %w", p.stdio.stdin, err)
		}
		p.closers = append(p.closers, stdin)
		p.stdin = stdin
		// As containerd's runc shim does, the shim holds a write end
		// too: a client that goes away (a detach, a killed nerdctl) is
		// not the end of the process's input, and a later attach feeds
		// it; CloseIO is.
		hold, err := fifo.OpenFifo(context.WithoutCancel(ctx), p.stdio.stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("opening stdin %s: %w", p.stdio.stdin, err)
		}
		p.closers = append(p.closers, hold)
		p.stdinHold = hold
	}
	if u, err := url.Parse(p.stdio.stdout); err == nil && (u.Scheme == "binary" || u.Scheme == "binary-v2") {
		if stdout, stderr, err = startLogger(ctx, u, c.ID); err != nil {
			return err
		}
		p.closers = append(p.closers, stdout, stderr)
	} else if stdout, err = openOutput(ctx, p.stdio.stdout); err != nil {
		return err
	} else if stdout != nil {
		p.closers = append(p.closers, stdout)
	}
	if stderr == nil && !p.terminal && p.stdio.stderr != "" {
		if p.stdio.stderr == p.stdio.stdout {
			stderr = stdout
		} else if stderr, err = openOutput(ctx, p.stdio.stderr); err != nil {
			return err
		} else if stderr != nil {
			p.closers = append(p.closers, stderr)
		}
	}
	var in io.Reader
	if stdin != nil {
		in = stdin
	}
	var out, errw io.Writer
	if stdout != nil {
		out = stdout
	}
	if stderr != nil {
		errw = stderr
	}
	relay := c.Relay(context.WithoutCancel(ctx), p.execID, in, out, errw, p.terminal)
	p.relay = relay
	go func() {
		relay.Wait()
		<-p.done
		for _, c := range p.closers {
			if c != p.stdin {
				c.Close()
			}
		}
	}()
	return nil
}

func openOutput(ctx context.Context, path string) (io.WriteCloser, error) {
	if path == "" {
		return nil, nil
	}
	u, err := url.Parse(path)
	if err == nil && u.Scheme == "file" {
		if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
			return nil, err
		}
		return os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	}
	if err == nil && u.Scheme != "" && u.Scheme != "fifo" {
		return nil, fmt.Errorf("stdio %s: scheme %s: %w", path, u.Scheme, errdefs.ErrNotImplemented)
	}
	f, err := fifo.OpenFifo(context.WithoutCancel(ctx), path, syscall.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return f, nil
}

func (s *service) process(id, execID string) (*process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil || s.c.ID != id {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return s.init, nil
	}
	p, ok := s.execs[execID]
	if !ok {
		return nil, fmt.Errorf("process %s of %s: %w", execID, id, errdefs.ErrNotFound)
	}
	return p, nil
}

func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (_ *taskAPI.StartResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	resp, err := s.c.Agent.Start(ctx, &api.StartRequest{ContainerId: r.ID, ExecId: r.ExecID})
	if err != nil {
		return nil, errgrpc.ToNative(err)
	}
	// An exec's pipes exist in the guest once it started; what it writes
	// before the relay runs waits in them.
	if r.ExecID != "" {
		if err := s.startIO(ctx, s.c, p); err != nil {
			_, _ = s.c.Agent.Signal(ctx, &api.SignalRequest{ContainerId: r.ID, ExecId: r.ExecID, Signal: 9})
			return nil, err
		}
	}
	p.mu.Lock()
	p.status = task.Status_RUNNING
	if r.ExecID != "" {
		p.pid = resp.Pid
	}
	p.mu.Unlock()
	// Published before the waiter exists, so no exit precedes its start.
	if r.ExecID == "" {
		_ = s.c.SetStatus(vzruntime.StatusRunning)
		// As runc: a failing poststart hook fails the start and kills the
		// process (whose exit the waiter then reports).
		if err := s.c.RunHooks(ctx, "poststart"); err != nil {
			_, _ = s.c.Agent.Signal(ctx, &api.SignalRequest{ContainerId: r.ID, Signal: 9})
			s.startWaiter(r.ID, p)
			return nil, errgrpc.ToGRPC(err)
		}
		s.publish(ctx, runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: p.pid})
	} else {
		s.publish(ctx, runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: p.pid})
	}
	s.startWaiter(r.ID, p)
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

// watchSentinel ends the container if its sentinel, the task's pid, is
// killed (kill -9 of the task's pid ends a container, as with runc).
func (s *service) watchSentinel(id string, sent *sentinel) {
	<-sent.done
	s.mu.Lock()
	stopping, c, init := s.sentinelStopping, s.c, s.init
	s.mu.Unlock()
	if stopping || c == nil {
		return
	}
	log.G(s.ctx).WithField("id", id).Warn("the task's pid (its sentinel) was killed: killing the container")
	_ = s.signal(s.ctx, id, "", 9, true)
	if init != nil {
		s.startWaiter(id, init)
	}
}

// stopSentinel ends the sentinel, on purpose.
func (s *service) stopSentinel() {
	s.mu.Lock()
	s.sentinelStopping = true
	sent := s.sentinel
	s.mu.Unlock()
	sent.stop()
}

// end says the process's exit is known; finish that it is the answer.
func (p *process) end()    { p.endOnce.Do(func() { close(p.ended) }) }
func (p *process) finish() { p.doneOnce.Do(func() { close(p.done) }) }

// startWaiter has waitExit follow p, once.
func (s *service) startWaiter(id string, p *process) {
	p.waiter.Do(func() { go s.waitExit(id, p) })
}

// waitExit records a process's exit and publishes it.
func (s *service) waitExit(id string, p *process) {
	ctx := s.ctx
	w, err := s.c.Agent.Wait(ctx, &api.WaitRequest{ContainerId: id, ExecId: p.execID})
	status, at := uint32(255), time.Now()
	if err == nil {
		status, at = w.ExitStatus, time.Unix(0, w.ExitedAtUnixNano)
	} else {
		s.mu.Lock()
		killed := s.vmKilled
		s.mu.Unlock()
		if killed {
			status = 128 + uint32(unix.SIGKILL)
		} else {
			log.G(ctx).WithError(errgrpc.ToNative(err)).WithField("exec", p.execID).Warn("waiting for process")
		}
	}
	// What the process wrote last is out before its exit is reported:
	// a client (nerdctl run -it) stops reading at the exit event.
	if p.relay != nil {
		drained := make(chan struct{})
		go func() { p.relay.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(outputDrainTimeout):
			log.G(ctx).WithField("exec", p.execID).Warn("the process's output did not end with it")
		}
	}
	p.end()
	// A rootfs synced back when the VM stops (the ext4 mode) holds the
	// container's writes only after that: the exit is reported once they
	// are there, as under runc, where they are in the rootfs as the
	// process ends. A client acting on the exit (nerdctl cp, which mounts
	// the snapshot a second time; start, which deletes the task) would
	// otherwise see the rootfs without them, or break the sync.
	syncFirst := p.execID == "" && s.c.SyncsBack()
	if syncFirst {
		s.stopVM(ctx)
	}
	p.mu.Lock()
	p.status, p.exitCode, p.exitedAt = task.Status_STOPPED, status, at
	p.mu.Unlock()
	p.finish()
	if p.execID == "" {
		_ = s.c.SetStatus(vzruntime.StatusStopped)
	}
	s.publish(ctx, runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: id, ID: execOrID(id, p.execID), Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	})
	if p.execID == "" && !syncFirst {
		s.stopVM(ctx)
	}
}

// outputDrainTimeout bounds the wait for a process's output after its
// exit (a process of its own may still hold the stream).
const outputDrainTimeout = 5 * time.Second

// stopVM stops the VM once the container's process has ended, as runc
// leaves nothing of a container but its shim: the VM, its file servers
// and the task's pid (the sentinel) go; the rootfs mount and the state
// stay until Delete. The execs end with the container's PID namespace;
// their exits are waited for first.
func (s *service) stopVM(ctx context.Context) {
	s.mu.Lock()
	var execs []*process
	for _, e := range s.execs {
		execs = append(execs, e)
	}
	s.mu.Unlock()
	for _, e := range execs {
		e.mu.Lock()
		started := e.status == task.Status_RUNNING
		e.mu.Unlock()
		if started {
			select {
			case <-e.done:
			case <-time.After(outputDrainTimeout):
			}
		}
	}
	s.vmMu.Lock()
	if !s.destroyed {
		if err := s.c.Stop(ctx); err != nil {
			log.G(ctx).WithError(err).Warn("stopping the VM of an ended container")
		}
		s.destroyed = true
	}
	s.vmMu.Unlock()
	s.stopSentinel()
}

// signalTimeout bounds the wait for the guest to take a signal.
const signalTimeout = 10 * time.Second

// signal sends a signal to a process in the guest. A VM that does not
// answer (hung, or stopped on the host) still ends on a SIGKILL of the
// container, as a frozen process does with runc: the VM is killed.
func (s *service) signal(ctx context.Context, id, execID string, sig uint32, all bool) error {
	sctx, cancel := context.WithTimeout(ctx, signalTimeout)
	defer cancel()
	_, err := s.c.Agent.Signal(sctx, &api.SignalRequest{ContainerId: id, ExecId: execID, Signal: sig, All: all})
	if errors.Is(err, ttrpc.ErrClosed) {
		// A signal that ends the container can have its VM stopped (at
		// the container's end) before the answer is back: the end is
		// the answer.
		if p, perr := s.process(id, ""); perr == nil {
			select {
			case <-p.ended:
				select {
				case <-p.done:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			case <-time.After(5 * time.Second):
			}
		}
	}
	if err == nil || ctx.Err() != nil || !errors.Is(sctx.Err(), context.DeadlineExceeded) {
		return errgrpc.ToNative(err)
	}
	if execID != "" || sig != uint32(unix.SIGKILL) {
		return fmt.Errorf("signal %d to %s: the VM did not answer within %s: %w", sig, execOrID(id, execID), signalTimeout, errdefs.ErrUnavailable)
	}
	log.G(ctx).WithField("id", id).Warnf("the VM did not take SIGKILL within %s: killing it", signalTimeout)
	s.mu.Lock()
	s.vmKilled = true
	s.mu.Unlock()
	s.vmMu.Lock()
	if !s.destroyed {
		s.c.Kill(ctx)
	}
	s.vmMu.Unlock()
	return nil
}

// stopped fails if the container's process has ended (its VM with it).
func (s *service) stopped(id string) error {
	p, err := s.process(id, "")
	if err != nil {
		return err
	}
	select {
	case <-p.ended:
		return fmt.Errorf("container %s is stopped: %w", id, errdefs.ErrFailedPrecondition)
	default:
		return nil
	}
}

func execOrID(id, execID string) string {
	if execID != "" {
		return execID
	}
	return id
}

func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (_ *taskAPI.DeleteResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	status := p.status
	p.mu.Unlock()
	if status == task.Status_RUNNING {
		return nil, fmt.Errorf("process %s is running: %w", execOrID(r.ID, r.ExecID), errdefs.ErrFailedPrecondition)
	}
	if r.ExecID != "" {
		s.mu.Lock()
		delete(s.execs, r.ExecID)
		c := s.c
		s.mu.Unlock()
		// The agent forgets it too and releases its stdio (gone with
		// the VM if that has stopped).
		if _, err := c.Agent.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: r.ID, ExecId: r.ExecID}); err != nil {
			log.G(ctx).WithError(errgrpc.ToNative(err)).WithField("exec", r.ExecID).Debug("deleting the exec in the guest")
		}
		return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
	}
	s.mu.Lock()
	c, metrics := s.c, s.metrics
	s.metrics = nil
	s.mu.Unlock()
	if metrics != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = metrics.Shutdown(sctx)
		cancel()
	}
	s.vmMu.Lock()
	c.Destroy(ctx)
	s.destroyed = true
	s.vmMu.Unlock()
	// Poststop hooks (nerdctl's releases the container's network) run
	// while this process, and so its network namespace, still exists.
	if err := c.RunHooks(ctx, "poststop"); err != nil {
		log.G(ctx).WithError(err).Warn("poststop hook")
	}
	p.mu.Lock()
	created := p.status == task.Status_CREATED
	if created {
		p.status, p.exitCode, p.exitedAt = task.Status_STOPPED, 128+9, time.Now()
	}
	p.mu.Unlock()
	if created {
		p.end()
		p.finish()
	}
	s.stopSentinel()
	if err := mount.UnmountRecursive(filepath.Join(s.bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmounting rootfs")
	}
	s.publish(ctx, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: r.ID, Pid: p.pid, ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt),
	})
	return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	init, err := s.process(r.ID, "")
	if err != nil {
		return nil, err
	}
	select {
	case <-init.ended:
		// The runc shim's words, which tools and users match on.
		return nil, errors.New("cannot exec in a stopped state")
	default:
	}
	s.mu.Lock()
	paused := s.paused
	s.mu.Unlock()
	if paused {
		return nil, fmt.Errorf("cannot exec in a paused state: %w", errdefs.ErrFailedPrecondition)
	}
	var ps specs.Process
	if r.Spec == nil || json.Unmarshal(r.Spec.GetValue(), &ps) != nil {
		return nil, fmt.Errorf("exec %s: bad process spec: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	if _, ok := s.execs[r.ExecID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("exec %s: %w", r.ExecID, errdefs.ErrAlreadyExists)
	}
	s.mu.Unlock()
	if _, err := s.c.Agent.Exec(ctx, &api.ExecRequest{ContainerId: r.ID, ExecId: r.ExecID, Process: r.Spec.GetValue(), Stdin: r.Stdin != ""}); err != nil {
		return nil, errgrpc.ToNative(err)
	}
	p := &process{execID: r.ExecID, terminal: r.Terminal, spec: &ps, status: task.Status_CREATED, done: make(chan struct{}), ended: make(chan struct{}),
		stdio: stdioPaths{r.Stdin, r.Stdout, r.Stderr}}
	s.mu.Lock()
	s.execs[r.ExecID] = p
	s.mu.Unlock()
	s.publish(ctx, runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if _, err := s.process(r.ID, r.ExecID); err != nil {
		return nil, err
	}
	_, err := s.c.Agent.ResizePty(ctx, &api.ResizePtyRequest{ContainerId: r.ID, ExecId: r.ExecID, Width: r.Width, Height: r.Height})
	return &ptypes.Empty{}, errgrpc.ToNative(err)
}

func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (_ *taskAPI.StateResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.status
	s.mu.Lock()
	if s.paused && st == task.Status_RUNNING {
		st = task.Status_PAUSED
	}
	s.mu.Unlock()
	return &taskAPI.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: s.bundle, Pid: p.pid, Status: st,
		Stdin: p.stdio.stdin, Stdout: p.stdio.stdout, Stderr: p.stdio.stderr, Terminal: p.terminal,
		ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt),
	}, nil
}

// Pids lists the host processes that make up the container: its VM's VMM
// (QEMU) and helpers (virtiofsd), so that `nerdctl top` and `ctr task ps`,
// which look the pids up in the host's /proc, show real processes and their
// memory. The container's own processes are in the guest, where their pids
// name nothing on the host; `nerdctl exec ID ps` lists them. The shim, the
// task's pid, is not listed, as the runc shim is not for runc containers.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (_ *taskAPI.PidsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if _, err := s.process(r.ID, ""); err != nil {
		return nil, err
	}
	procs, err := s.footprint()
	if err != nil {
		return nil, err
	}
	out := &taskAPI.PidsResponse{}
	for _, p := range procs {
		out.Processes = append(out.Processes, &task.ProcessInfo{Pid: uint32(p.Pid)})
	}
	return out, nil
}

// footprint reads the VM's host processes; none once the VM is destroyed.
func (s *service) footprint() ([]vzruntime.HostProcess, error) {
	s.vmMu.RLock()
	defer s.vmMu.RUnlock()
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	if c == nil || s.destroyed {
		return nil, nil
	}
	procs, err := c.HostProcesses()
	// The sentinel runs beside QEMU but is the shim's, and costs nothing.
	if s.sentinel != nil {
		kept := procs[:0]
		for _, p := range procs {
			if p.Pid != s.sentinel.pid() {
				kept = append(kept, p)
			}
		}
		procs = kept
	}
	return procs, err
}

func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if err := s.stopped(r.ID); err != nil {
		return nil, err
	}
	if _, err := s.c.Agent.Pause(ctx, &api.ContainerRequest{ContainerId: r.ID}); err != nil {
		return nil, errgrpc.ToNative(err)
	}
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
	_ = s.c.SetStatus(vzruntime.StatusPaused)
	s.publish(ctx, runtime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: r.ID})
	return &ptypes.Empty{}, nil
}

func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if err := s.stopped(r.ID); err != nil {
		return nil, err
	}
	if _, err := s.c.Agent.Resume(ctx, &api.ContainerRequest{ContainerId: r.ID}); err != nil {
		return nil, errgrpc.ToNative(err)
	}
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
	_ = s.c.SetStatus(vzruntime.StatusRunning)
	s.publish(ctx, runtime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: r.ID})
	return &ptypes.Empty{}, nil
}

func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("checkpoint of a container in a VM: %w", errdefs.ErrNotImplemented))
}

func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
		return nil, fmt.Errorf("process %s has exited: %w", execOrID(r.ID, r.ExecID), errdefs.ErrNotFound)
	default:
	}
	select {
	case <-p.ended:
		// Its exit is not reported yet (the rootfs is being synced
		// back): the signal is answered by that end.
		select {
		case <-p.done:
			return &ptypes.Empty{}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	default:
	}
	err = s.signal(ctx, r.ID, r.ExecID, r.Signal, r.All)
	if err == nil && r.ExecID == "" {
		// A created container killed before it started (nerdctl rm -f
		// during create) exits too: its Wait and exit event must come.
		s.startWaiter(r.ID, p)
	}
	return &ptypes.Empty{}, err
}

func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	// The client closes stdin but may keep its end of the fifo open, so
	// the relay would never see EOF: stop it, let it finish what it read,
	// and make sure the process's stdin is closed in the guest.
	if p.stdinHold != nil {
		_ = p.stdinHold.Close()
	}
	if p.stdin != nil {
		// What the client wrote before closing may still sit in the fifo
		// (a loaded machine): closing it now would drop that input.
		waitDrained(p.stdin, time.Second)
		_ = p.stdin.Close()
	}
	if p.relay != nil {
		select {
		case <-p.relay.StdinDone():
		case <-time.After(time.Second):
		}
	}
	_, err = s.c.Agent.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: r.ID, ExecId: r.ExecID})
	return &ptypes.Empty{}, errgrpc.ToNative(err)
}

func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if err := s.stopped(r.ID); err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return &ptypes.Empty{}, nil
	}
	return &ptypes.Empty{}, s.c.Update(ctx, r.Resources.GetValue())
}

func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (_ *taskAPI.WaitResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &taskAPI.WaitResponse{ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (_ *taskAPI.StatsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	var m cgroupstats.Metrics
	if err := s.stopped(r.ID); errors.Is(err, errdefs.ErrFailedPrecondition) {
		// Its VM is gone with it: nothing in use, as an empty cgroup.
		m.Memory, m.CPU, m.Pids = &cgroupstats.MemoryStat{}, &cgroupstats.CPUStat{}, &cgroupstats.PidsStat{}
	} else if err != nil {
		return nil, err
	} else {
		resp, err := s.c.Agent.Stats(ctx, &api.ContainerRequest{ContainerId: r.ID})
		if err != nil {
			return nil, errgrpc.ToNative(err)
		}
		if err := proto.Unmarshal(resp.CgroupV2Metrics, &m); err != nil {
			return nil, err
		}
	}
	anyStats, err := typeurl.MarshalAnyToProto(&m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: anyStats}, nil
}

func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	if s.init != nil {
		pid = s.init.pid
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	busy := s.creating || s.c != nil && s.init != nil && s.init.status != task.Status_STOPPED
	s.mu.Unlock()
	if busy {
		return &ptypes.Empty{}, nil
	}
	s.sd.Shutdown()
	return &ptypes.Empty{}, nil
}

// MetricsSocket is the unix socket in a container's state dir
// (StateRoot/NAMESPACE/ID/metrics.sock) on which its shim serves, at
// /metrics in Prometheus' text format, what the container costs the host:
// memory and CPU time of the VM's host processes and of the shim.
const MetricsSocket = "metrics.sock"

// roleShim marks the shim itself among the host processes in the metrics.
const roleShim = "shim"

// serveMetrics serves the footprint metrics on path until the returned
// server is shut down; nil if it cannot listen (that is not fatal).
func serveMetrics(ctx context.Context, path, ns, id string, footprint func() ([]vzruntime.HostProcess, error)) *http.Server {
	l, err := sockpath.Listen(path)
	if err != nil {
		log.G(ctx).WithError(err).Warn("listening for footprint metrics")
		return nil
	}
	// The socket goes with the state dir; the name it was bound by may be
	// a /proc/self/fd path that means another directory by the time the
	// listener closes.
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		procs, err := footprint()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if shim, err := vzruntime.ProcessFootprint(os.Getpid(), roleShim); err == nil {
			procs = append(procs, shim)
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, ns, id, procs)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv
}

// writeMetrics writes one gauge or counter per host process and figure.
func writeMetrics(w io.Writer, ns, id string, procs []vzruntime.HostProcess) {
	for _, m := range []struct {
		name, typ, help string
		value           func(vzruntime.HostProcess) string
	}{
		{"vzrun_process_resident_memory_bytes", "gauge", "Resident set size (RSS) of a host process of the container.",
			func(p vzruntime.HostProcess) string { return strconv.FormatUint(p.RSS, 10) }},
		{"vzrun_process_proportional_memory_bytes", "gauge", "Proportional set size (PSS) of a host process of the container: shared pages divided among the processes that map them.",
			func(p vzruntime.HostProcess) string { return strconv.FormatUint(p.PSS, 10) }},
		{"vzrun_process_cpu_seconds_total", "counter", "User and system CPU time of a host process of the container.",
			func(p vzruntime.HostProcess) string { return strconv.FormatFloat(p.CPUSeconds, 'f', -1, 64) }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for _, p := range procs {
			fmt.Fprintf(w, "%s{namespace=%s,container_id=%s,role=%s,pid=\"%d\",comm=%s} %s\n", m.name,
				labelValue(ns), labelValue(id), labelValue(p.Role), p.Pid, labelValue(p.Comm), m.value(p))
		}
	}
}

// labelValue quotes a Prometheus label value.
func labelValue(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// waitDrained waits, at most d, until the relay has read everything
// buffered in the stdin fifo r.
func waitDrained(r io.Closer, d time.Duration) {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n := 0
		if raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), bytesQueued) }) != nil || err != nil || n == 0 {
			return
		}
	}
}
