// Command containerd-shim-vz-v2 is vzrun's containerd shim; see package shim.
package main

import (
	"context"

	vzshim "github.com/vzrun/vzrun/shim"
)

func main() { vzshim.Run(context.Background()) }
