package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

// createFlags are create's flags, which run shares.
var createFlags = []cli.Flag{
	&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "path to the OCI bundle"},
	&cli.StringFlag{Name: "console-socket", Usage: "unix socket to send the terminal's master to"},
	&cli.StringFlag{Name: "pid-file", Usage: "file to write the container's pid (its VM's owner) to"},
	&cli.BoolFlag{Name: "no-pivot", Usage: "accepted for runc compatibility"},
	&cli.BoolFlag{Name: "no-new-keyring", Usage: "accepted for runc compatibility"},
	&cli.IntFlag{Name: "preserve-fds", Usage: "pass N extra fds (only 0 is supported in a VM)"},
	&cli.StringFlag{Name: "pidfd-socket", Usage: "unix socket to send a pidfd of the container's pid (its VM's owner) to"},
}

var createCommand = &cli.Command{
	Name:      "create",
	Usage:     "boot a container's VM and create its process, not started",
	ArgsUsage: "<container-id>",
	Flags:     createFlags,
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		if err := noPreservedFds(c); err != nil {
			return err
		}
		r := newRuntime(c)
		if err := r.Create(c.Context, createOptions(c, id)); err != nil {
			return err
		}
		if err := sendPidfd(c, r, id); err != nil {
			_ = r.Delete(c.Context, id, true)
			return err
		}
		return nil
	},
}

func createOptions(c *cli.Context, id string) runtime.CreateOptions {
	return runtime.CreateOptions{
		ID: id, Bundle: c.String("bundle"), PidFile: c.String("pid-file"),
		ConsoleSocket: c.String("console-socket"), Monitor: selfWithGlobals(c),
	}
}

// selfWithGlobals is this binary with the global flags it was given.
func selfWithGlobals(c *cli.Context) []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	args := []string{exe}
	for _, name := range []string{"root", "log", "log-format", "kernel", "initrd", "accel"} {
		if c.IsSet(name) {
			args = append(args, "--"+name, c.String(name))
		}
	}
	if c.Bool("debug") {
		args = append(args, "--debug")
	}
	return args
}
