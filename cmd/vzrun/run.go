package main

import (
	"os"

	"github.com/containerd/console"
	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "create and run a container in its own VM",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "path to the OCI bundle"},
	},
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		opts := runtime.RunOptions{ID: id, Bundle: c.String("bundle"), Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
		if con, err := console.ConsoleFromFile(os.Stdin); err == nil {
			opts.Console = con
		}
		status, err := newRuntime(c).Run(c.Context, opts)
		if err != nil {
			return err
		}
		os.Exit(status)
		return nil
	},
}
