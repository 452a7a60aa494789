package main

import (
	"fmt"
	"os"

	"github.com/containerd/console"
	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "create and run a container in its own VM",
	ArgsUsage: "<container-id>",
	Flags: append([]cli.Flag{
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "return once the container runs"},
		&cli.BoolFlag{Name: "keep", Usage: "keep the stopped container until delete"},
		&cli.BoolFlag{Name: "no-subreaper", Usage: "accepted for runc compatibility (runc ignores it too)"},
	}, createFlags...),
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		if err := noPreservedFds(c); err != nil {
			return err
		}
		r := newRuntime(c)
		if c.Bool("detach") {
			if err := r.Create(c.Context, createOptions(c, id)); err != nil {
				return err
			}
			if err := sendPidfd(c, r, id); err != nil {
				_ = r.Delete(c.Context, id, true)
				return err
			}
			if err := r.Start(c.Context, id); err != nil {
				_ = r.Delete(c.Context, id, true)
				return err
			}
			return nil
		}
		if c.IsSet("pidfd-socket") {
			return fmt.Errorf("--pidfd-socket: only with create or run --detach (a foreground run's pid is this process)")
		}
		opts := runtime.RunOptions{ID: id, Bundle: c.String("bundle"), Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
			PidFile: c.String("pid-file"), Keep: c.Bool("keep")}
		if con, err := console.ConsoleFromFile(os.Stdin); err == nil {
			opts.Console = con
		}
		status, err := r.Run(c.Context, opts)
		if err != nil {
			return err
		}
		os.Exit(status)
		return nil
	},
}
