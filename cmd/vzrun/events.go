package main

import (
	"encoding/json"
	"errors"
	"os"
	"sync"
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
		var mu sync.Mutex
		emit := func(e *runc.Event) error {
			mu.Lock()
			defer mu.Unlock()
			return enc.Encode(e)
		}
		if !c.Bool("stats") {
			// As runc does, an OOM kill in the container is an event.
			go func() {
				var seen uint64
				for {
					n, err := r.WaitOOM(c.Context, id, seen)
					if err != nil {
						return
					}
					seen = n
					_ = emit(&runc.Event{Type: "oom", ID: id})
				}
			}()
		}
		interval := c.Duration("interval")
		if interval <= 0 {
			return errors.New("duration interval must be greater than 0")
		}
		for {
			// As runc, the first statistics come after one interval.
			if !c.Bool("stats") {
				select {
				case <-c.Context.Done():
					return nil
				case <-time.After(interval):
				}
			}
			s, err := r.Stats(c.Context, id)
			if err != nil {
				return err
			}
			if err := emit(&runc.Event{Type: "stats", ID: id, Stats: s}); err != nil {
				return err
			}
			if c.Bool("stats") {
				return nil
			}
		}
	},
}
