package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

var specCommand = &cli.Command{
	Name:  "spec",
	Usage: "write a new config.json for a busybox-style rootfs",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "directory to write config.json in"},
		&cli.BoolFlag{Name: "rootless", Usage: "a spec for a rootless container (not supported: see vzrun --rootless)"},
	},
	Action: func(c *cli.Context) error {
		if c.Bool("rootless") {
			return fmt.Errorf("--rootless: vzrun has no rootless mode: on Linux it needs root for each VM's network namespace, tap device and file servers; on macOS no spec change is needed (Virtualization.framework needs no root): %w", errdefs.ErrNotImplemented)
		}
		path := c.String("bundle") + "/config.json"
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s already exists; remove it first", path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		b, err := json.MarshalIndent(runtime.ExampleSpec(), "", "\t")
		if err != nil {
			return err
		}
		return os.WriteFile(path, append(b, '\n'), 0o644)
	},
}
