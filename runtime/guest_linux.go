package runtime

import (
	"context"

	"github.com/vzrun/vzrun/runtime/hypervisor"
	"github.com/vzrun/vzrun/runtime/hypervisor/qemu"
)

func init() { templater = qemu.Templater{} }

func newVM(cfg hypervisor.Config) (hypervisor.VM, error) { return qemu.New(cfg) }

func chooseAccel(ctx context.Context, kernel, initrd, cacheDir string) (string, string) {
	return qemu.ChooseAccel(ctx, kernel, initrd, cacheDir)
}

// guestFile names the installed guest files for this host's architecture.
func guestFile(name string) string {
	if name == "kernel" {
		return "vmlinux"
	}
	return "initrd.img"
}

// bindFilesAlone: the QEMU backend serves a file bind on its own
// (hypervisor.Share.Binds).
const bindFilesAlone = true
