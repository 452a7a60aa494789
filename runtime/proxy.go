package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// proxy is what a monitor serves to the other vzrun commands: the agent's
// API, forwarded, with the monitor's own part where the host is involved
// (state file, host hooks, the VM's vCPUs).
type proxy struct {
	api.AgentService
	m *monitor
}

// withVCPUs runs fn with the VM's vCPUs running: the agent cannot answer
// while the VM is paused, but a paused container can still be signalled
// and inspected (its processes stay frozen by the cgroup freezer).
func (p *proxy) withVCPUs(ctx context.Context, fn func() error) error {
	m := p.m
	m.vcpus.Lock()
	defer m.vcpus.Unlock()
	if pauser, ok := m.c.sb.VM.(hypervisor.Pauser); ok && m.paused {
		if err := pauser.Resume(ctx); err != nil {
			return err
		}
		defer func() {
			if err := pauser.Pause(ctx); err != nil {
				log.G(ctx).WithError(err).Warn("re-pausing vcpus")
			}
		}()
	}
	return fn()
}

func (p *proxy) setStatus(status string) error {
	st, err := p.m.dir.Load()
	if err != nil {
		return err
	}
	st.Status = status
	return p.m.dir.Update(st)
}

// Start, Pause and Resume change the container's state: they finish, and
// the state file says what happened, even when the command that asked
// dies half-way (a kill -9 of `vzrun start` must not leave a running
// container recorded as created). stateChangeTimeout still bounds them,
// for a guest that does not answer.
const stateChangeTimeout = 2 * time.Minute

// detached is ctx without its cancellation, bounded by stateChangeTimeout.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), stateChangeTimeout)
}

func (p *proxy) Start(ctx context.Context, req *api.StartRequest) (*api.StartResponse, error) {
	ctx, cancel := detached(ctx)
	defer cancel()
	if req.ExecId != "" {
		done := make(chan struct{})
		p.m.starting.Store(req.ExecId, done)
		defer func() {
			p.m.starting.Delete(req.ExecId)
			close(done)
		}()
		if _, gone := p.m.orphaned.Load(req.ExecId); gone {
			return nil, errgrpc.ToGRPC(fmt.Errorf("exec %s: the process that asked for it is gone: %w", req.ExecId, errdefs.ErrFailedPrecondition))
		}
	}
	resp, err := p.AgentService.Start(ctx, req)
	if err != nil || req.ExecId != "" {
		return resp, err
	}
	if err := p.setStatus(StatusRunning); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// A failing poststart hook fails the start and kills the process, as
	// in runc (the spec asks only for a warning).
	st, _ := p.m.dir.Load()
	if st != nil {
		if err := runHooks(ctx, "poststart", p.m.hooks.poststart, specState(st, StatusRunning)); err != nil {
			if _, kerr := p.AgentService.Signal(ctx, &api.SignalRequest{ContainerId: req.ContainerId, Signal: uint32(unix.SIGKILL)}); kerr != nil {
				log.G(ctx).WithError(kerr).Warn("killing the container after its poststart hook failed")
			}
			return nil, errgrpc.ToGRPC(err)
		}
	}
	return resp, nil
}

func (p *proxy) Pause(ctx context.Context, req *api.ContainerRequest) (*api.Empty, error) {
	ctx, cancel := detached(ctx)
	defer cancel()
	m := p.m
	m.vcpus.Lock()
	defer m.vcpus.Unlock()
	if m.paused {
		return &api.Empty{}, nil
	}
	st, err := m.dir.Load()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp, err := p.AgentService.Pause(ctx, req)
	if err != nil {
		return nil, err
	}
	if pauser, ok := m.c.sb.VM.(hypervisor.Pauser); ok {
		if err := pauser.Pause(ctx); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
	}
	m.paused = true
	m.unpaused = st.Status
	return resp, errgrpc.ToGRPC(p.setStatus(StatusPaused))
}

func (p *proxy) Resume(ctx context.Context, req *api.ContainerRequest) (*api.Empty, error) {
	ctx, cancel := detached(ctx)
	defer cancel()
	return &api.Empty{}, p.thaw(ctx, req.ContainerId)
}

func (p *proxy) Signal(ctx context.Context, req *api.SignalRequest) (resp *api.Empty, err error) {
	if req.Signal == uint32(unix.SIGKILL) && req.ExecId == "" {
		// As runc: a KILL of a paused container kills it. The VM and the
		// container's cgroup are thawed first, or the signal would wait
		// in a frozen guest.
		if err := p.thaw(ctx, req.ContainerId); err != nil {
			return nil, err
		}
	}
	err = p.withVCPUs(ctx, func() (err error) { resp, err = p.AgentService.Signal(ctx, req); return err })
	return resp, err
}

// thaw resumes a paused container (vCPUs and cgroup) and returns it to
// the status it was paused from.
func (p *proxy) thaw(ctx context.Context, id string) error {
	m := p.m
	m.vcpus.Lock()
	defer m.vcpus.Unlock()
	if !m.paused {
		return nil
	}
	if pauser, ok := m.c.sb.VM.(hypervisor.Pauser); ok {
		if err := pauser.Resume(ctx); err != nil {
			return errgrpc.ToGRPC(err)
		}
	}
	m.paused = false
	if _, err := p.AgentService.Resume(ctx, &api.ContainerRequest{ContainerId: id}); err != nil {
		return err
	}
	status := m.unpaused
	if status != StatusCreated {
		status = StatusRunning
	}
	return errgrpc.ToGRPC(p.setStatus(status))
}

func (p *proxy) State(ctx context.Context, req *api.StateRequest) (resp *api.StateResponse, err error) {
	err = p.withVCPUs(ctx, func() (err error) { resp, err = p.AgentService.State(ctx, req); return err })
	return resp, err
}

func (p *proxy) Stats(ctx context.Context, req *api.ContainerRequest) (resp *api.StatsResponse, err error) {
	err = p.withVCPUs(ctx, func() (err error) { resp, err = p.AgentService.Stats(ctx, req); return err })
	return resp, err
}

func (p *proxy) Pids(ctx context.Context, req *api.PidsRequest) (resp *api.PidsResponse, err error) {
	err = p.withVCPUs(ctx, func() (err error) { resp, err = p.AgentService.Pids(ctx, req); return err })
	return resp, err
}

// execOwnerKey marks the Wait of the host process that is an exec's pid
// (a detached exec's relay, a foreground vzrun exec). When that process
// goes, even by kill -9, its connection closes and the exec is killed:
// with runc the exec's pid is the process itself.
const execOwnerKey = "io.vzrun.exec-owner"

func (p *proxy) Wait(ctx context.Context, req *api.WaitRequest) (*api.WaitResponse, error) {
	resp, err := p.AgentService.Wait(ctx, req)
	if err == nil || req.ExecId == "" || ctx.Err() == nil {
		return resp, err
	}
	if _, owned := ttrpc.GetMetadataValue(ctx, execOwnerKey); owned {
		// A start the owner asked for before it died finishes first
		// (it has its own time limit): the process it starts is killed
		// below, not forgotten; one that comes later is refused.
		p.m.orphaned.Store(req.ExecId, struct{}{})
		time.AfterFunc(stateChangeTimeout+time.Minute, func() { p.m.orphaned.Delete(req.ExecId) })
		if done, ok := p.m.starting.Load(req.ExecId); ok {
			<-done.(chan struct{})
		}
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		kill := func() error {
			return p.withVCPUs(kctx, func() error {
				_, err := p.AgentService.Signal(kctx, &api.SignalRequest{ContainerId: req.ContainerId, ExecId: req.ExecId, Signal: uint32(unix.SIGKILL)})
				return err
			})
		}
		kerr := kill()
		log.G(ctx).WithError(kerr).WithFields(log.Fields{"id": req.ContainerId, "exec": req.ExecId}).Debug("the exec's host process is gone: killed the exec")
		if kerr != nil {
			// Not running: never started (its owner died first), or
			// ended. Either way it can go now. Refused, it was started
			// meanwhile (a start the owner sent before it died).
			derr := p.withVCPUs(kctx, func() error {
				_, err := p.AgentService.DeleteProcess(kctx, &api.DeleteProcessRequest{ContainerId: req.ContainerId, ExecId: req.ExecId})
				return err
			})
			if derr == nil {
				return resp, err
			}
			_ = kill()
		}
		// No one is left to delete it: once it has ended, the agent
		// forgets it and releases its stdio.
		derr := p.withVCPUs(kctx, func() error {
			if _, err := p.AgentService.Wait(kctx, req); err != nil {
				return err
			}
			_, err := p.AgentService.DeleteProcess(kctx, &api.DeleteProcessRequest{ContainerId: req.ContainerId, ExecId: req.ExecId})
			return err
		})
		if derr != nil {
			log.G(ctx).WithError(derr).WithFields(log.Fields{"id": req.ContainerId, "exec": req.ExecId}).Debug("deleting the killed exec")
		}
	}
	return resp, err
}

func (p *proxy) Update(ctx context.Context, req *api.UpdateRequest) (resp *api.Empty, err error) {
	err = p.withVCPUs(ctx, func() error { return p.m.c.Update(ctx, req.Resources) })
	return &api.Empty{}, err
}
