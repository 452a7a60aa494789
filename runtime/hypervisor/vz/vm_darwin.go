//go:build darwin && cgo

package vz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"sync"
	"time"

	vz "github.com/Code-Hex/vz/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// BootTimeout bounds how long a guest may take to accept the agent channel.
var BootTimeout = 30 * time.Second

// stopTimeout bounds how long a stopped VM may take to say so.
const stopTimeout = 10 * time.Second

type vm struct {
	cfg hypervisor.Config

	mu       sync.Mutex
	machine  *vz.VirtualMachine
	conn     net.Conn
	done     chan struct{} // closed when the VM has stopped
	quit     chan struct{} // ends the state watcher once Stop is done
	quitOnce sync.Once
	failed   error // set when the VM ended in the error state
	stopped  bool  // Stop was called
	timings  hypervisor.Timings
}

var (
	_ hypervisor.VM        = (*vm)(nil)
	_ hypervisor.Pauser    = (*vm)(nil)
	_ hypervisor.Ballooner = (*vm)(nil)
)

// New returns a VM for cfg; nothing runs until Start.
func New(cfg hypervisor.Config) (hypervisor.VM, error) {
	if err := checkConfig(cfg, goruntime.GOARCH); err != nil {
		return nil, err
	}
	if n := uint(cfg.CPUs); n < vz.VirtualMachineConfigurationMinimumAllowedCPUCount() || n > vz.VirtualMachineConfigurationMaximumAllowedCPUCount() {
		return nil, fmt.Errorf("vm %s: %d vCPUs: this Mac allows %d to %d: %w", cfg.ID, n,
			vz.VirtualMachineConfigurationMinimumAllowedCPUCount(), vz.VirtualMachineConfigurationMaximumAllowedCPUCount(), errdefs.ErrInvalidArgument)
	}
	if b := uint64(cfg.MemoryMiB) << 20; b < vz.VirtualMachineConfigurationMinimumAllowedMemorySize() || b > vz.VirtualMachineConfigurationMaximumAllowedMemorySize() {
		return nil, fmt.Errorf("vm %s: %d MiB of memory: this Mac allows %d to %d MiB: %w", cfg.ID, cfg.MemoryMiB,
			vz.VirtualMachineConfigurationMinimumAllowedMemorySize()>>20, vz.VirtualMachineConfigurationMaximumAllowedMemorySize()>>20, errdefs.ErrInvalidArgument)
	}
	cfg.Accel = hypervisor.AccelHVF
	return &vm{cfg: cfg, done: make(chan struct{}), quit: make(chan struct{})}, nil
}

// configure turns the VM config into the framework's.
func (v *vm) configure() (*vz.VirtualMachineConfiguration, error) {
	c := v.cfg
	boot, err := vz.NewLinuxBootLoader(c.Kernel, vz.WithCommandLine(kernelCmdline(c)), vz.WithInitrd(c.Initrd))
	if err != nil {
		return nil, fmt.Errorf("boot loader: %w", err)
	}
	conf, err := vz.NewVirtualMachineConfiguration(boot, uint(c.CPUs), uint64(c.MemoryMiB)<<20)
	if err != nil {
		return nil, err
	}

	// The console: a virtio console (hvc0) whose output goes to the log.
	logf, err := vz.NewFileSerialPortAttachment(c.ConsoleLog, false)
	if err != nil {
		return nil, fmt.Errorf("console log %s: %w", c.ConsoleLog, err)
	}
	console, err := vz.NewVirtioConsoleDeviceSerialPortConfiguration(logf)
	if err != nil {
		return nil, err
	}
	conf.SetSerialPortsVirtualMachineConfiguration([]*vz.VirtioConsoleDeviceSerialPortConfiguration{console})

	// The agent channel: the host connects to the guest's vsock port.
	sock, err := vz.NewVirtioSocketDeviceConfiguration()
	if err != nil {
		return nil, err
	}
	conf.SetSocketDevicesVirtualMachineConfiguration([]vz.SocketDeviceConfiguration{sock})

	entropy, err := vz.NewVirtioEntropyDeviceConfiguration()
	if err != nil {
		return nil, err
	}
	conf.SetEntropyDevicesVirtualMachineConfiguration([]*vz.VirtioEntropyDeviceConfiguration{entropy})

	// A traditional balloon: the host can take memory back (SetMemory).
	balloon, err := vz.NewVirtioTraditionalMemoryBalloonDeviceConfiguration()
	if err != nil {
		return nil, err
	}
	conf.SetMemoryBalloonDevicesVirtualMachineConfiguration([]vz.MemoryBalloonDeviceConfiguration{balloon})

	var nics []*vz.VirtioNetworkDeviceConfiguration
	for i, n := range c.NICs {
		nat, err := vz.NewNATNetworkDeviceAttachment()
		if err != nil {
			return nil, fmt.Errorf("nic %d: %w", i, err)
		}
		nic, err := vz.NewVirtioNetworkDeviceConfiguration(nat)
		if err != nil {
			return nil, fmt.Errorf("nic %d: %w", i, err)
		}
		// The MAC is the container's, stable across restarts: the agent
		// finds the NIC by it, and the NAT's DHCP leases follow it.
		mac, err := vz.NewMACAddress(n.MAC)
		if err != nil {
			return nil, fmt.Errorf("nic %d: %w", i, err)
		}
		nic.SetMACAddress(mac)
		nics = append(nics, nic)
	}
	conf.SetNetworkDevicesVirtualMachineConfiguration(nics)

	var disks []vz.StorageDeviceConfiguration
	for _, d := range c.Disks {
		// Cached with fsync on flush, as QEMU's cache=none gives the guest
		// a disk that honours flushes; the automatic mode has corrupted
		// ext4 on some macOS releases.
		caching, sync := vz.DiskImageCachingModeCached, vz.DiskImageSynchronizationModeFsync
		if d.ReadOnly {
			sync = vz.DiskImageSynchronizationModeNone
		}
		att, err := vz.NewDiskImageStorageDeviceAttachmentWithCacheAndSync(d.Path, d.ReadOnly, caching, sync)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Serial, err)
		}
		blk, err := vz.NewVirtioBlockDeviceConfiguration(att)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Serial, err)
		}
		// The agent finds a disk by its virtio-blk serial (macOS 12.3+).
		if err := blk.SetBlockDeviceIdentifier(d.Serial); err != nil {
			return nil, fmt.Errorf("disk %s: setting its serial: %w", d.Serial, err)
		}
		disks = append(disks, blk)
	}
	conf.SetStorageDevicesVirtualMachineConfiguration(disks)

	var shares []vz.DirectorySharingDeviceConfiguration
	for _, s := range c.Shares {
		dir, err := vz.NewSharedDirectory(s.Path, s.ReadOnly)
		if err != nil {
			return nil, fmt.Errorf("share %s: %w", s.Tag, err)
		}
		single, err := vz.NewSingleDirectoryShare(dir)
		if err != nil {
			return nil, fmt.Errorf("share %s: %w", s.Tag, err)
		}
		fs, err := vz.NewVirtioFileSystemDeviceConfiguration(s.Tag)
		if err != nil {
			return nil, fmt.Errorf("share %s: %w", s.Tag, err)
		}
		fs.SetDirectoryShare(single)
		shares = append(shares, fs)
	}
	conf.SetDirectorySharingDevicesVirtualMachineConfiguration(shares)

	if ok, err := conf.Validate(); !ok || err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return conf, nil
}

func (v *vm) Start(ctx context.Context) (retErr error) {
	defer func() {
		if retErr != nil {
			_ = v.Stop(context.WithoutCancel(ctx))
		}
	}()
	conf, err := v.configure()
	if err != nil {
		return fmt.Errorf("vm %s: %w", v.cfg.ID, err)
	}
	v.timings.Launched = time.Now()
	machine, err := vz.NewVirtualMachine(conf)
	if err != nil {
		return fmt.Errorf("vm %s: %w", v.cfg.ID, err)
	}
	v.mu.Lock()
	v.machine = machine
	v.mu.Unlock()
	go v.watch(ctx, machine)
	if err := machine.Start(); err != nil {
		return fmt.Errorf("starting vm %s: %w%s", v.cfg.ID, err, consoleTail(v.cfg.ConsoleLog))
	}
	v.timings.VMMReady = time.Now()
	conn, err := v.dialAgent(ctx, machine)
	if err != nil {
		return err
	}
	v.timings.AgentReady = time.Now()
	v.mu.Lock()
	v.conn = conn
	v.mu.Unlock()
	return nil
}

// watch follows the machine's state notifications until it has stopped.
func (v *vm) watch(ctx context.Context, machine *vz.VirtualMachine) {
	l := log.G(ctx).WithField("id", v.cfg.ID)
	states := machine.StateChangedNotify()
	started := false
	for {
		select {
		case state := <-states:
			l.Debugf("vm state %s", state)
			switch state {
			case vz.VirtualMachineStateStarting, vz.VirtualMachineStateRunning:
				started = true
			case vz.VirtualMachineStateStopped:
				// The initial state is Stopped too; only a started
				// machine stopping means the guest is gone.
				if started {
					close(v.done)
					return
				}
			case vz.VirtualMachineStateError:
				v.mu.Lock()
				v.failed = fmt.Errorf("vm %s: the framework reported an internal error%s: %w", v.cfg.ID, consoleTail(v.cfg.ConsoleLog), hypervisor.ErrVMExited)
				v.mu.Unlock()
				close(v.done)
				return
			}
		case <-v.quit:
			return
		}
	}
}

// dialAgent connects to the agent's vsock port, retrying until the agent
// listens: a refused connection only means the guest is still booting.
func (v *vm) dialAgent(ctx context.Context, machine *vz.VirtualMachine) (net.Conn, error) {
	devs := machine.SocketDevices()
	if len(devs) == 0 {
		return nil, fmt.Errorf("vm %s: no virtio socket device", v.cfg.ID)
	}
	deadline := time.After(BootTimeout)
	timedOut := func() error {
		return fmt.Errorf("vm %s: the agent did not listen on vsock port %d within %s%s",
			v.cfg.ID, api.VsockPort, BootTimeout, consoleTail(v.cfg.ConsoleLog))
	}
	for {
		// Connect has no timeout of its own; a guest that is not
		// listening yet answers at once, a hung one never.
		ch := make(chan dialResult, 1)
		go func() {
			c, err := devs[0].Connect(api.VsockPort)
			ch <- dialResult{c, err}
		}()
		select {
		case r := <-ch:
			if r.err == nil {
				return r.conn, nil
			}
		case <-v.done:
			go closeLate(ch)
			return nil, v.exitError("before the agent listened")
		case <-ctx.Done():
			go closeLate(ch)
			return nil, ctx.Err()
		case <-deadline:
			go closeLate(ch)
			return nil, timedOut()
		}
		select {
		case <-v.done:
			return nil, v.exitError("before the agent listened")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, timedOut()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

type dialResult struct {
	conn *vz.VirtioSocketConnection
	err  error
}

// closeLate closes a connection that arrived after its caller gave up.
func closeLate(ch <-chan dialResult) {
	if r := <-ch; r.err == nil {
		_ = r.conn.Close()
	}
}

// exitError describes a VM that stopped before it was ready.
func (v *vm) exitError(when string) error {
	v.mu.Lock()
	failed := v.failed
	v.mu.Unlock()
	if failed != nil {
		return failed
	}
	return fmt.Errorf("vm %s: the guest stopped %s%s: %w", v.cfg.ID, when, consoleTail(v.cfg.ConsoleLog), hypervisor.ErrVMExited)
}

func (v *vm) AgentConn() net.Conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.conn
}

func (v *vm) Wait(ctx context.Context) error {
	select {
	case <-v.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped {
		return nil
	}
	return v.failed
}

func (v *vm) Stop(ctx context.Context) error {
	v.mu.Lock()
	v.stopped = true
	machine, conn := v.machine, v.conn
	v.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	defer v.quitOnce.Do(func() { close(v.quit) })
	if machine == nil {
		return nil
	}
	select {
	case <-v.done:
		return nil
	default:
	}
	if machine.CanStop() {
		if err := machine.Stop(); err != nil {
			return fmt.Errorf("stopping vm %s: %w", v.cfg.ID, err)
		}
	} else if s := machine.State(); s == vz.VirtualMachineStateStopped || s == vz.VirtualMachineStateError {
		return nil // it never started
	}
	select {
	case <-v.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(stopTimeout):
		return fmt.Errorf("vm %s: still %s %s after stop", v.cfg.ID, machine.State(), stopTimeout)
	}
}

// Pid is this process: the framework runs the VM in an XPC service that
// belongs to it and dies with it.
func (v *vm) Pid() int { return os.Getpid() }

func (v *vm) Accel() string               { return hypervisor.AccelHVF }
func (v *vm) Timings() hypervisor.Timings { return v.timings }

func (v *vm) Pause(ctx context.Context) error {
	m, err := v.running()
	if err != nil {
		return err
	}
	if !m.CanPause() {
		return fmt.Errorf("vm %s: cannot pause in state %s: %w", v.cfg.ID, m.State(), errdefs.ErrFailedPrecondition)
	}
	if err := m.Pause(); err != nil {
		return fmt.Errorf("pausing vm %s: %w", v.cfg.ID, err)
	}
	return nil
}

func (v *vm) Resume(ctx context.Context) error {
	m, err := v.running()
	if err != nil {
		return err
	}
	if !m.CanResume() {
		return fmt.Errorf("vm %s: cannot resume in state %s: %w", v.cfg.ID, m.State(), errdefs.ErrFailedPrecondition)
	}
	if err := m.Resume(); err != nil {
		return fmt.Errorf("resuming vm %s: %w", v.cfg.ID, err)
	}
	return nil
}

// SetMemory inflates or deflates the balloon so that the guest has mib
// MiB of the memory it booted with (64 MiB at least).
func (v *vm) SetMemory(ctx context.Context, mib int) (int, error) {
	m, err := v.running()
	if err != nil {
		return 0, err
	}
	mib = min(max(mib, 64), v.cfg.MemoryMiB)
	for _, d := range m.MemoryBalloonDevices() {
		if b := vz.AsVirtioTraditionalMemoryBalloonDevice(d); b != nil {
			b.SetTargetVirtualMachineMemorySize(uint64(mib) << 20)
			return mib, nil
		}
	}
	return 0, fmt.Errorf("vm %s: no memory balloon: %w", v.cfg.ID, errdefs.ErrNotFound)
}

// running is the machine of a started VM that has not stopped.
func (v *vm) running() (*vz.VirtualMachine, error) {
	v.mu.Lock()
	m := v.machine
	v.mu.Unlock()
	if m == nil {
		return nil, fmt.Errorf("vm %s: not started: %w", v.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	select {
	case <-v.done:
		return nil, fmt.Errorf("vm %s: stopped: %w", v.cfg.ID, errors.Join(errdefs.ErrFailedPrecondition, hypervisor.ErrVMExited))
	default:
	}
	return m, nil
}
