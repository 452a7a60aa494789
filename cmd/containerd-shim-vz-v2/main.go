// Command containerd-shim-vz-v2 is vzrun's containerd shim; see package shim.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"

	vzshim "github.com/vzrun/vzrun/shim"
)

func main() {
	// The shim waits for its own children (QEMU, virtiofsd); containerd's
	// implicit reaper would take their exit statuses first.
	shim.RunShim(context.Background(), vzshim.NewManager(vzshim.RuntimeName), func(c *shim.Config) { c.NoReaper = true })
}
