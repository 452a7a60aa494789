package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/internal/specjson"
	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// Container is a container whose VM this process owns: the monitor of a
// detached vzrun container, or the containerd shim.
type Container struct {
	ID     string
	Bundle string
	Spec   *specs.Spec
	Dir    *StateDir
	State  *State
	// Agent talks to the VM's agent.
	Agent api.AgentService

	sb   *Sandbox
	plan *containerVM
	// stopPublishing closes the published ports' listeners.
	stopPublishing func()
	// clearONLCR: a foreground run relays the container's terminal to its
	// caller's, which translates newlines itself; runc clears ONLCR then.
	clearONLCR bool
}

// NewContainer makes the state dir, boots the VM and creates the
// container's init process in it, not started. On error nothing is left.
func (r *Runtime) NewContainer(ctx context.Context, id, bundle string) (_ *Container, retErr error) {
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, err
	}
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	spec, err := LoadSpec(bundle)
	if err != nil {
		return nil, err
	}
	dir, err := CreateStateDir(r.Root, id)
	if err != nil {
		return nil, err
	}
	c := &Container{ID: id, Bundle: bundle, Spec: spec, Dir: dir, State: newState(id, bundle, spec)}
	defer func() {
		if retErr != nil {
			// As runc: a container that fails to be created is destroyed,
			// and its poststop hooks undo what hooks before did.
			c.Destroy(context.WithoutCancel(ctx))
			c.poststop(context.WithoutCancel(ctx))
		}
	}()
	if err := dir.Save(c.State); err != nil {
		return nil, err
	}
	dir.Unlock()
	if err := c.boot(ctx, r); err != nil {
		return nil, err
	}
	if err := c.prepare(ctx); err != nil {
		return nil, err
	}
	c.State.Status = StatusCreated
	return c, dir.Update(c.State)
}

// boot starts the VM of c and creates the container in it.
func (c *Container) boot(ctx context.Context, r *Runtime) error {
	plan, err := r.planVM(ctx, c.ID, c.Bundle, c.Spec, c.Dir)
	if err != nil {
		return err
	}
	c.plan = plan
	sb, err := r.boot(ctx, plan)
	if err != nil {
		return err
	}
	c.sb, c.Agent = sb, sb.Agent
	c.State.Accel, c.State.VMMPid = sb.VM.Accel(), sb.VM.Pid()
	specJSON, err := specjson.Marshal(c.Spec)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if specJSON, err = stageSpec(ctx, sb.Agent, c.ID, specJSON); err != nil {
		return fmt.Errorf("sending the spec of %s: %w", c.ID, errgrpc.ToNative(err))
	}
	resp, err := sb.Agent.CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: c.ID, Spec: specJSON, Rootfs: plan.rootfs, Shares: plan.shares, Stdin: true,
		ClearOnlcr: c.clearONLCR, Debug: debugLogging(),
	})
	if err != nil {
		return fmt.Errorf("creating container %s: %w", c.ID, c.vmExited(errgrpc.ToNative(err)))
	}
	logGuestRunc(ctx, resp.RuncLog)
	log.G(ctx).WithFields(log.Fields{"id": c.ID, "create": time.Since(t0)}).Debug("container created")
	return nil
}

// specChunk is the largest piece of a spec sent in one message: ttrpc's
// limit is 4 MiB a message, headers included.
const specChunk = 3 << 20

// stageSpec sends a spec too large for one message in pieces, and returns
// what CreateContainer is to carry: the spec, or nothing if it was staged.
func stageSpec(ctx context.Context, agent api.AgentService, id string, spec []byte) ([]byte, error) {
	if len(spec) <= specChunk {
		return spec, nil
	}
	for len(spec) > 0 {
		n := min(len(spec), specChunk)
		if _, err := agent.StageSpec(ctx, &api.StageSpecRequest{ContainerId: id, Chunk: spec[:n]}); err != nil {
			return nil, err
		}
		spec = spec[n:]
	}
	return nil, nil
}

// prepare runs the host's prestart and createRuntime hooks on the created
// container, then connects the VM to the network they set up.
func (c *Container) prepare(ctx context.Context) error {
	if h := c.Spec.Hooks; h != nil {
		// Still creating, as runc says to these hooks.
		state := specState(c.State, string(specs.StateCreating))
		//lint:ignore SA1019 prestart is deprecated but still honoured
		err := runHooks(ctx, "prestart", h.Prestart, state)
		if err == nil {
			err = runHooks(ctx, "createRuntime", h.CreateRuntime, state)
		}
		if err != nil {
			return err
		}
	}
	if err := c.connectNetwork(ctx); err != nil {
		return err
	}
	return c.publish(ctx)
}

// poststop runs the poststop hooks; as with runc, their failure is only
// logged (the container is gone either way).
func (c *Container) poststop(ctx context.Context) {
	if err := c.RunHooks(ctx, "poststop"); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.ID).Warn("poststop hook")
	}
}

// RunHooks runs the host hooks of one kind (poststart, poststop) with the
// container's state.
func (c *Container) RunHooks(ctx context.Context, kind string) error {
	h := c.Spec.Hooks
	if h == nil {
		return nil
	}
	switch kind {
	case "poststart":
		return runHooks(ctx, kind, h.Poststart, specState(c.State, StatusRunning))
	case "poststop":
		return runHooks(ctx, kind, h.Poststop, specState(c.State, StatusStopped))
	}
	return fmt.Errorf("hooks %q: not run by the host", kind)
}

// VMMPid is the hypervisor process.
func (c *Container) VMMPid() int { return c.sb.VM.Pid() }

// Relay copies a process's stdio between the given streams and the agent
// until the process's output ends; Wait on the result.
func (c *Container) Relay(ctx context.Context, execID string, stdin io.Reader, stdout, stderr io.Writer, terminal bool) *Relay {
	return startRelay(ctx, c.Agent, c.ID, execID, stdin, stdout, stderr, terminal)
}

// Relay is a running stdio relay.
type Relay = relay

// Wait blocks until the process's output has been copied out.
func (r *Relay) Wait() { r.wait() }

// StdinDone is closed once the relay has copied stdin to its end and
// closed the process's stdin.
func (r *Relay) StdinDone() <-chan struct{} { return r.stdinDone }

// SetStatus records a new status in the state file.
func (c *Container) SetStatus(status string) error {
	c.State.Status = status
	return c.Dir.Update(c.State)
}

// Destroy stops the VM, syncs a block rootfs back and removes the state.
func (c *Container) Destroy(ctx context.Context) {
	if err := c.Stop(ctx); err != nil {
		log.G(ctx).WithError(err).Error("stopping the container")
		// The image that could not be synced back is the container's
		// data: its state dir stays with it (the error says where).
		var kept *imageKeptError
		if errors.As(err, &kept) {
			killStateProcesses(c.Dir.Path)
			return
		}
	}
	killStateProcesses(c.Dir.Path)
	_ = c.Dir.Remove()
	_ = os.Remove(c.Dir.Path)
}

// vmExited explains an agent call that failed because the VM is gone
// (the connection closed): it names the VM's exit, not just "ttrpc:
// closed". Other errors are returned as they are.
func (c *Container) vmExited(err error) error {
	if c.sb == nil || !agentClosed(err) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	werr := c.sb.VM.Wait(ctx)
	switch {
	case errors.Is(werr, context.DeadlineExceeded):
		return err
	case werr != nil:
		return fmt.Errorf("the VM exited (%v): %w", werr, err)
	default:
		return fmt.Errorf("the VM powered off: %w", err)
	}
}

// agentClosed says err is the agent's (or a monitor's) connection closing,
// also once errgrpc.ToNative or a monitor has kept only its message.
func agentClosed(err error) bool {
	return err != nil && (errors.Is(err, ttrpc.ErrClosed) || strings.HasSuffix(err.Error(), ttrpc.ErrClosed.Error()))
}

// Kill stops the VM at once, without asking the guest; Stop or Destroy
// still follow to clean up.
func (c *Container) Kill(ctx context.Context) {
	if c.sb != nil {
		c.sb.Kill(ctx)
	}
}

// SyncsBack says the container's rootfs gets its writes only when the VM
// stops (the ext4 mode): Stop syncs them back.
func (c *Container) SyncsBack() bool { return c.plan != nil && c.plan.afterStop != nil }

// Stop stops the VM and syncs a block rootfs back; the state stays.
func (c *Container) Stop(ctx context.Context) error {
	if c.stopPublishing != nil {
		c.stopPublishing()
	}
	if c.plan != nil {
		defer c.plan.closeTaps()
	}
	if c.sb == nil {
		return nil
	}
	c.sb.Shutdown(ctx)
	c.sb = nil
	disconnectNetwork(ctx, c.State)
	c.releaseNetwork(ctx)
	if c.plan.afterStop != nil {
		if err := c.plan.afterStop(ctx); err != nil {
			return fmt.Errorf("syncing the rootfs of %s back: %w", c.ID, err)
		}
	}
	return nil
}

// Update applies new linux.resources (JSON) to the container's cgroup in
// the guest, and sizes the VM's memory to a new memory limit plus the
// agent's headroom through the balloon: down to give memory back to the
// host, up again to at most what the VM booted with (-M microvm has no
// memory hotplug, so a VM never grows past its boot size).
func (c *Container) Update(ctx context.Context, resources []byte) error {
	var r specs.LinuxResources
	uerr := json.Unmarshal(resources, &r)
	// A VM's vCPUs are fixed when it is made: a cpuset naming more
	// cannot be set in the guest.
	if uerr == nil && r.CPU != nil && r.CPU.Cpus != "" && c.plan != nil {
		if n, err := highestCPU(r.CPU.Cpus); err == nil && n >= c.plan.cfg.CPUs {
			return fmt.Errorf("cpuset %q names CPU %d, but the VM of %s has %d vCPU(s), numbered from 0 (they are fixed at create: size the VM with the %s annotation or a cpuset in config.json): %w",
				r.CPU.Cpus, n, c.ID, c.plan.cfg.CPUs, AnnotationCPUs, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := c.Agent.Update(ctx, &api.UpdateRequest{ContainerId: c.ID, Resources: resources}); err != nil {
		return errgrpc.ToNative(err)
	}
	if uerr != nil || r.Memory == nil || r.Memory.Limit == nil || c.sb == nil {
		return nil
	}
	b, ok := c.sb.VM.(hypervisor.Ballooner)
	if !ok {
		return nil
	}
	boot := c.plan.cfg.MemoryMiB
	target := boot
	if l := *r.Memory.Limit; l > 0 {
		target = min(boot, int(l>>20)+agentHeadroomMiB)
	}
	set, err := b.SetMemory(ctx, target)
	if err != nil {
		return fmt.Errorf("resizing the memory of %s: %w", c.ID, err)
	}
	log.G(ctx).WithFields(log.Fields{"id": c.ID, "memory_mib": set, "boot_mib": boot}).Debug("balloon")
	return nil
}
