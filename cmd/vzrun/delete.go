package main

import (
	"errors"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
)

var deleteCommand = &cli.Command{
	Name:      "delete",
	Usage:     "delete a container and everything its VM left behind",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill a running container first; a missing container is no error"},
	},
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		err = newRuntime(c).Delete(c.Context, id, c.Bool("force"))
		// As with runc: what is forced away may already be gone.
		if c.Bool("force") && errors.Is(err, errdefs.ErrNotFound) {
			return nil
		}
		return err
	},
}
