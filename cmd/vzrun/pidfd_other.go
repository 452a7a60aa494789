//go:build !linux

package main

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

// sendPidfd: there are no pidfds outside Linux.
func sendPidfd(c *cli.Context, _ *runtime.Runtime, _ string) error {
	if c.String("pidfd-socket") == "" {
		return nil
	}
	return fmt.Errorf("--pidfd-socket: pidfds are Linux only: %w", errdefs.ErrNotImplemented)
}

func sendPidfdOf(string, int, string) error {
	return fmt.Errorf("--pidfd-socket: pidfds are Linux only: %w", errdefs.ErrNotImplemented)
}
