//go:build darwin && !cgo

package vz

import (
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// New fails: Virtualization.framework is reached through cgo, and this
// binary was built without it (CGO_ENABLED=0, as cross-builds from Linux
// are). `make darwin` on a Mac builds it with cgo and signs it.
func New(cfg hypervisor.Config) (hypervisor.VM, error) {
	return nil, fmt.Errorf("vm %s: this vzrun was built without cgo; the macOS backend needs it: %w", cfg.ID, errdefs.ErrNotImplemented)
}
