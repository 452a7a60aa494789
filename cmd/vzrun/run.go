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
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "return once the container runs"},
		&cli.BoolFlag{Name: "keep", Usage: "keep the stopped container until delete"},
		&cli.StringFlag{Name: "pid-file", Usage: "file to write the container's pid (its VM's owner) to"},
		&cli.StringFlag{Name: "console-socket", Usage: "unix socket to send the terminal's master to (with --detach)"},
		&cli.BoolFlag{Name: "no-pivot", Usage: "accepted for runc compatibility"},
		&cli.BoolFlag{Name: "no-new-keyring", Usage: "accepted for runc compatibility"},
		&cli.IntFlag{Name: "preserve-fds", Usage: "pass N extra fds (only 0 is supported in a VM)"},
	},
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
			if err := r.Start(c.Context, id); err != nil {
				_ = r.Delete(c.Context, id, true)
				return err
			}
			return nil
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
