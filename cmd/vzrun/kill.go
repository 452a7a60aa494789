package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

var killCommand = &cli.Command{
	Name:      "kill",
	Usage:     "send a signal (default SIGTERM) to a container's init, or all its processes",
	ArgsUsage: "<container-id> [signal]",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "signal every process of the container"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() < 1 || c.NArg() > 2 {
			return fmt.Errorf("kill: want <container-id> [signal], got %d arguments", c.NArg())
		}
		name := "SIGTERM"
		if c.NArg() == 2 {
			name = c.Args().Get(1)
		}
		sig, err := runtime.ParseSignal(name)
		if err != nil {
			return err
		}
		return newRuntime(c).Kill(c.Context, c.Args().First(), sig, c.Bool("all"))
	},
}
