package qemu

import (
	"fmt"
	goruntime "runtime"

	"github.com/containerd/errdefs"

	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// QEMUBinaryARM64 runs arm64 guests: the guest Apple silicon Macs boot,
// checked here under emulation.
var QEMUBinaryARM64 = "qemu-system-aarch64"

// guest is what differs between the guest architectures: which QEMU runs
// the kernel, and the Debian package that has it.
type guest struct {
	arch    string
	binary  string
	pkgHint string
}

// guestFor picks the QEMU for cfg's kernel. An x86_64 kernel, or one whose
// header is not recognised, keeps the microvm path; an arm64 Image runs on
// -M virt, where KVM is only possible on an arm64 host.
func guestFor(cfg hypervisor.Config) (guest, error) {
	arch, err := hypervisor.KernelArch(cfg.Kernel)
	if err != nil || arch != hypervisor.ArchARM64 {
		return guest{arch: hypervisor.ArchAMD64, binary: QEMUBinary, pkgHint: "qemu-system-x86"}, nil
	}
	if cfg.Accel == hypervisor.AccelKVM && goruntime.GOARCH != hypervisor.ArchARM64 {
		return guest{}, fmt.Errorf("vm %s: kvm cannot run an arm64 guest on %s: %w", cfg.ID, goruntime.GOARCH, errdefs.ErrInvalidArgument)
	}
	return guest{arch: arch, binary: QEMUBinaryARM64, pkgHint: "qemu-system-arm"}, nil
}

// arm64Machine is -M virt's share of the command line: the machine, its
// CPU and the kernel's console (virt's PL011).
func arm64Machine(accel string) (machine, cpu string, cmdline []string) {
	machine = "virt,memory-backend=mem"
	// cortex-a72: under TCG our kernel reaches /init in about 1.0 s with
	// it, 1.45 s with "max" (whose pointer authentication is emulated;
	// pauth-impdef=on: 1.15 s), measured on a 2-core x86_64 host.
	cpu = "cortex-a72"
	if accel == hypervisor.AccelKVM {
		cpu = "host"
	}
	return machine, cpu, []string{"console=ttyAMA0", "quiet", "panic=-1"}
}
