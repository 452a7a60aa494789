package main

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
)

func notSupported(name, why string) *cli.Command {
	return &cli.Command{
		Name:            name,
		Usage:           "not supported: " + why,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			// Flags are not parsed (any of runc's are accepted), so help is asked here.
			if a := c.Args().First(); a == "-h" || a == "--help" {
				cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, c.Command)
				return nil
			}
			return fmt.Errorf("%s is not supported by vzrun: %s: %w", name, why, errdefs.ErrNotImplemented)
		},
	}
}

var (
	checkpointCommand = notSupported("checkpoint", "a container in a VM cannot be checkpointed with CRIU yet")
	restoreCommand    = notSupported("restore", "a container in a VM cannot be restored with CRIU yet")
)
