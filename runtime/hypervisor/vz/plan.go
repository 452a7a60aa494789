package vz

import (
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// kernelCmdline is the guest's command line: the console is the first
// virtio console (hvc0), a panic powers the VM off at once.
func kernelCmdline(cfg hypervisor.Config) string {
	return strings.Join(append([]string{"console=hvc0", "quiet", "panic=-1"}, cfg.KernelArgs...), " ")
}

// checkConfig refuses what the framework cannot do, before it fails with
// a less helpful message: another accelerator, another architecture's
// kernel, a template, a tap device.
func checkConfig(cfg hypervisor.Config, hostArch string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Accel != "" && cfg.Accel != hypervisor.AccelHVF {
		return fmt.Errorf("vm %s: accelerator %s: Virtualization.framework runs on hvf only: %w", cfg.ID, cfg.Accel, errdefs.ErrInvalidArgument)
	}
	arch, err := hypervisor.KernelArch(cfg.Kernel)
	if err != nil {
		return fmt.Errorf("vm %s: %w", cfg.ID, err)
	}
	if arch != hostArch {
		return fmt.Errorf("vm %s: kernel %s is for %s, this Mac is %s (make kernel ARCH=arm64 builds the Apple silicon guest): %w",
			cfg.ID, cfg.Kernel, arch, hostArch, errdefs.ErrInvalidArgument)
	}
	if cfg.Restorable || cfg.Template != "" {
		return fmt.Errorf("vm %s: templates are QEMU's; Virtualization.framework boots every vm: %w", cfg.ID, errdefs.ErrNotImplemented)
	}
	for _, s := range cfg.Shares {
		if len(s.Binds) > 0 {
			return fmt.Errorf("vm %s: share %s: file binds need a file server of vzrun's own; the framework shares directories: %w", cfg.ID, s.Tag, errdefs.ErrNotImplemented)
		}
	}
	for i, n := range cfg.NICs {
		if n.Tap != nil {
			return fmt.Errorf("vm %s: nic %d: tap devices are Linux only; on macOS each NIC is the framework's NAT: %w", cfg.ID, i, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// consoleTail is the end of the guest console log, for error messages.
func consoleTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(b), "\r", ""), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return fmt.Sprintf("\nthe guest console's last lines:\n%s", strings.Join(lines, "\n"))
}
