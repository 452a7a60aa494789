package main

import "github.com/urfave/cli/v2"

var pauseCommand = &cli.Command{
	Name:      "pause",
	Usage:     "freeze a container's processes and its VM's vCPUs",
	ArgsUsage: "<container-id>",
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		return newRuntime(c).Pause(c.Context, id)
	},
}

var resumeCommand = &cli.Command{
	Name:      "resume",
	Usage:     "resume a paused container",
	ArgsUsage: "<container-id>",
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		return newRuntime(c).Resume(c.Context, id)
	},
}
