package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

var specCommand = &cli.Command{
	Name:  "spec",
	Usage: "write a new config.json for a busybox-style rootfs",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "directory to write config.json in"},
	},
	Action: func(c *cli.Context) error {
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
