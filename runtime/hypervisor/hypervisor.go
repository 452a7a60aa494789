// Package hypervisor is the small VMM-neutral interface every vzrun backend
// implements: boot a Linux guest with our kernel and agent, hand back the
// agent channel, stop it. Backends live in sub-packages (qemu on Linux, vz
// on macOS); optional capabilities are small interfaces found by type
// assertion (Pauser), not methods every backend must fake.
//
// It must not import runtime, shim or agent.
package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Accelerators a backend may report.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
	AccelHVF = "hvf"
)

// Config describes one VM.
type Config struct {
	// ID names the VM in logs and errors.
	ID string
	// StateDir holds the VM's sockets and logs; it must exist.
	StateDir string
	// Kernel and Initrd are the guest kernel (vmlinux for PVH on x86_64,
	// Image on arm64) and the initramfs whose /init is the agent.
	Kernel string
	Initrd string
	// KernelArgs are appended to the backend's own command line.
	KernelArgs []string
	CPUs       int
	MemoryMiB  int
	// Shares are host directories exported with virtio-fs.
	Shares []Share
	// Disks are raw images attached as virtio-blk devices.
	Disks []Disk
	// NICs are virtio-net interfaces.
	NICs []NIC
	// Restorable asks for the device layout a VM can be saved in as a
	// template and restored from (see Templater): shares over virtio-9p
	// (QEMU cannot migrate virtio-fs) in TemplateShares fixed slots, and
	// exactly one NIC.
	Restorable bool
	// Template, if set, is a saved VM (Templater.SaveTemplate) to restore
	// instead of booting; the VM must be Restorable with the same kernel,
	// initrd, CPUs, memory and accelerator. Shares, the NIC's tap, the
	// console log and the state dir are the new VM's own.
	Template string
	// Accel forces an accelerator; empty lets the backend choose.
	Accel string
	// ConsoleLog receives the guest console; kept after the VM stops.
	ConsoleLog string
}

// Share is a host directory exported to the guest under Tag.
type Share struct {
	Tag      string
	Path     string
	ReadOnly bool
	// Binds are files the guest reaches through this share on their own:
	// each is bind-mounted over the entry Name of Path, in a mount
	// namespace of the share's file server only, so the guest sees those
	// files and nothing else of their directories. A backend that cannot
	// (vz: the framework serves shares in-process) refuses them.
	Binds []Bind
}

// Bind is a host file (any type but a directory) shown as entry Name of
// a share.
type Bind struct {
	Name     string
	Source   string
	ReadOnly bool
}

// Disk is a raw disk image; the guest finds it by Serial.
type Disk struct {
	Path     string
	Serial   string
	ReadOnly bool
}

// NIC is a virtio-net interface.
type NIC struct {
	// MAC is the address the guest sees at boot; the agent finds the NIC
	// by it.
	MAC net.HardwareAddr
	// Tap is an open tap device (Linux backends): what the guest sends
	// leaves by it. Without one the NIC is the backend's NAT, with a DHCP
	// server (QEMU's user networking, Virtualization.framework's NAT).
	Tap *os.File
}

var tagRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,20}$`)

// Validate reports the first thing wrong with c.
func (c *Config) Validate() error {
	if c.ID == "" {
		return fmt.Errorf("vm config: no id: %w", errdefs.ErrInvalidArgument)
	}
	for what, p := range map[string]string{"state dir": c.StateDir, "kernel": c.Kernel, "initrd": c.Initrd} {
		if p == "" {
			return fmt.Errorf("vm config: no %s: %w", what, errdefs.ErrInvalidArgument)
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("vm config: %s: %w", what, err)
		}
	}
	if c.CPUs < 1 || c.CPUs > 64 {
		return fmt.Errorf("vm config: %d vCPUs (want 1 to 64): %w", c.CPUs, errdefs.ErrInvalidArgument)
	}
	if c.MemoryMiB < 64 {
		return fmt.Errorf("vm config: %d MiB of memory (want at least 64): %w", c.MemoryMiB, errdefs.ErrInvalidArgument)
	}
	for _, s := range c.Shares {
		if !tagRE.MatchString(s.Tag) {
			return fmt.Errorf("vm config: share tag %q: %w", s.Tag, errdefs.ErrInvalidArgument)
		}
		if fi, err := os.Stat(s.Path); err != nil {
			return fmt.Errorf("vm config: share %s: %w", s.Tag, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("vm config: share %s: %s is not a directory: %w", s.Tag, s.Path, errdefs.ErrInvalidArgument)
		}
		for _, b := range s.Binds {
			if b.Name == "" || b.Name == "." || b.Name == ".." || strings.Contains(b.Name, "/") {
				return fmt.Errorf("vm config: share %s: bind entry %q is not a plain name: %w", s.Tag, b.Name, errdefs.ErrInvalidArgument)
			}
			if fi, err := os.Stat(b.Source); err != nil {
				return fmt.Errorf("vm config: share %s: bind %s: %w", s.Tag, b.Name, err)
			} else if fi.IsDir() || !filepath.IsAbs(b.Source) {
				return fmt.Errorf("vm config: share %s: bind %s: %s is a directory or not absolute: %w", s.Tag, b.Name, b.Source, errdefs.ErrInvalidArgument)
			}
			if fi, err := os.Lstat(filepath.Join(s.Path, b.Name)); err != nil || fi.IsDir() {
				return fmt.Errorf("vm config: share %s: bind %s: no file %s to mount it over: %w", s.Tag, b.Name, filepath.Join(s.Path, b.Name), errdefs.ErrInvalidArgument)
			}
		}
	}
	for _, d := range c.Disks {
		if !tagRE.MatchString(d.Serial) {
			return fmt.Errorf("vm config: disk serial %q: %w", d.Serial, errdefs.ErrInvalidArgument)
		}
		if _, err := os.Stat(d.Path); err != nil {
			return fmt.Errorf("vm config: disk %s: %w", d.Serial, err)
		}
	}
	if c.Restorable && (len(c.Shares) > TemplateShares || len(c.NICs) != 1 || len(c.Disks) > 0) {
		return fmt.Errorf("vm config: a restorable vm has at most %d shares, one nic and no disks: %w", TemplateShares, errdefs.ErrInvalidArgument)
	}
	if c.Template != "" && !c.Restorable {
		return fmt.Errorf("vm config: template %s for a vm that is not restorable: %w", c.Template, errdefs.ErrInvalidArgument)
	}
	for i, n := range c.NICs {
		if len(n.MAC) != 6 || n.MAC[0]&1 != 0 {
			return fmt.Errorf("vm config: nic %d: mac %q is not a unicast ethernet address: %w", i, n.MAC, errdefs.ErrInvalidArgument)
		}
	}
	switch c.Accel {
	case "", AccelKVM, AccelTCG, AccelHVF:
	default:
		return fmt.Errorf("vm config: accelerator %q (want kvm, tcg or hvf): %w", c.Accel, errdefs.ErrInvalidArgument)
	}
	return nil
}

// VM is a handle to one virtual machine.
//
// Start must be called once; Stop is safe on a VM that failed to start or
// already stopped, and releases everything the backend made (processes,
// sockets) but the console log.
type VM interface {
	// Start boots the VM and returns once the guest agent's channel is
	// open, or the VM died (the error then carries the console's tail).
	Start(ctx context.Context) error
	// AgentConn is the connection to the guest agent, valid after Start.
	AgentConn() net.Conn
	// Wait blocks until the VM has stopped.
	Wait(ctx context.Context) error
	// Stop ends the VM at once.
	Stop(ctx context.Context) error
	// Pid is the host process that owns the VM (the VMM).
	Pid() int
	// Accel is the accelerator the VM runs on.
	Accel() string
	// Timings says how long the VM took to come up.
	Timings() Timings
}

// Pauser is a VM whose vCPUs can be paused and resumed.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// Ballooner is a VM whose memory can be given back to the host and taken
// again, within the size it booted with, through a memory balloon.
type Ballooner interface {
	// SetMemory asks the guest to make do with mib MiB; it returns the
	// target set (capped to the boot size).
	SetMemory(ctx context.Context, mib int) (int, error)
}

// TemplateShares is how many shares a Restorable VM has slots for: the
// rootfs and eight bind-mount sources.
const TemplateShares = 9

// SlotTag is the tag of a Restorable VM's share slot i: the guest learns
// tags when it boots, so a clone keeps its template's.
func SlotTag(i int) string { return "s" + strconv.Itoa(i) }

// Templater is a backend that can save a booted VM as a template: a VM
// booted once to the agent's greeting and frozen, which VMs restore from
// in a fraction of a boot, sharing its memory copy-on-write.
type Templater interface {
	// SaveTemplate boots a Restorable VM from cfg, saves it in dir once
	// the agent has greeted and stops it.
	SaveTemplate(ctx context.Context, cfg Config, dir string) error
}

// Timings of one VM's start, measured on the host.
type Timings struct {
	// Launched is when the VMM process was started.
	Launched time.Time
	// VMMReady is when the VMM accepted the agent channel's connection.
	VMMReady time.Time
	// AgentReady is when the agent greeted the host.
	AgentReady time.Time
}

// ErrVMExited is returned when the VM stopped before it was ready.
var ErrVMExited = errors.New("vm exited")
