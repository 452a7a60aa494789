package main

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/vzrun/vzrun/runtime"
)

var killCommand = &cli.Command{
	Name:      "kill",
	Usage:     "send a signal (default SIGTERM) to a container's init, or all its processes",
	ArgsUsage: "<container-id> [signal]",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "obsolete, as in runc 1.5: the signal goes to the container's init (a KILL of init ends every process of its PID namespace); a stopped container is no error"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() < 1 || c.NArg() > 2 {
			return fmt.Errorf("kill: want <container-id> [signal], got %d arguments", c.NArg())
		}
		id, name := c.Args().First(), "SIGTERM"
		if c.NArg() == 2 {
			name = c.Args().Get(1)
		}
		var sig unix.Signal
		// Signal 0 checks that the container is running, as with runc.
		if name != "0" {
			var err error
			if sig, err = runtime.ParseSignal(name); err != nil {
				return err
			}
		}
		r := newRuntime(c)
		err := r.Kill(c.Context, id, sig, c.Bool("all"))
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			if st, serr := r.State(c.Context, id); serr == nil && st.Status == runtime.StatusStopped {
				if c.Bool("all") {
					return nil
				}
				return fmt.Errorf("container %s: container not running: %w", id, errdefs.ErrFailedPrecondition)
			}
		}
		return err
	},
}
