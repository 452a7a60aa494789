package main

import (
	"encoding/json"
	"os"
	"time"

	runc "github.com/containerd/go-runc"
	"github.com/urfave/cli/v2"
)

var eventsCommand = &cli.Command{
	Name:      "events",
	Usage:     "print a container's resource statistics (from its cgroup in the guest) as JSON events",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "stats", Usage: "print statistics once and exit"},
		&cli.DurationFlag{Name: "interval", Value: 5 * time.Second, Usage: "time between statistics"},
	},
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		r := newRuntime(c)
		enc := json.NewEncoder(os.Stdout)
		for {
			s, err := r.Stats(c.Context, id)
			if err != nil {
				return err
			}
			if err := enc.Encode(&runc.Event{Type: "stats", ID: id, Stats: s}); err != nil {
				return err
			}
			if c.Bool("stats") {
				return nil
			}
			select {
			case <-c.Context.Done():
				return nil
			case <-time.After(c.Duration("interval")):
			}
		}
	},
}
