package runtime

import (
	"context"
	goruntime "runtime"

	"github.com/vzrun/vzrun/runtime/hypervisor"
	"github.com/vzrun/vzrun/runtime/hypervisor/vz"
)

func newVM(cfg hypervisor.Config) (hypervisor.VM, error) { return vz.New(cfg) }

// chooseAccel has nothing to choose: Virtualization.framework runs on the
// Mac's hypervisor (hvf) or not at all.
func chooseAccel(context.Context, string, string, string) (string, string) {
	return hypervisor.AccelHVF, "Virtualization.framework"
}

// guestFile names the installed guest files for this Mac: Apple silicon
// boots the uncompressed arm64 Image that `make kernel ARCH=arm64` builds.
func guestFile(name string) string {
	if goruntime.GOARCH == "arm64" {
		if name == "kernel" {
			return "Image"
		}
		return "initrd-arm64.img"
	}
	// Intel Macs are not a target yet: no one has booted our x86_64
	// kernel with the framework's boot loader; these are the Linux names.
	if name == "kernel" {
		return "vmlinux"
	}
	return "initrd.img"
}

// bindFilesAlone: Virtualization.framework shares directories from the
// process that runs the VM, where no private mount namespace can hide
// the rest of a bound file's directory.
const bindFilesAlone = false
