package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"
)

var updateCommand = &cli.Command{
	Name:      "update",
	Usage:     "change a container's resource limits (its cgroup in the guest)",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "resources", Aliases: []string{"r"}, Usage: "linux.resources JSON file, - for stdin"},
		&cli.StringFlag{Name: "memory", Usage: "memory limit in bytes (k, m, g suffixes)"},
		&cli.StringFlag{Name: "memory-reservation", Usage: "memory soft limit in bytes"},
		&cli.StringFlag{Name: "memory-swap", Usage: "memory plus swap limit in bytes"},
		&cli.StringFlag{Name: "cpu-period", Usage: "CPU CFS period in µs"},
		&cli.StringFlag{Name: "cpu-quota", Usage: "CPU CFS quota in µs"},
		&cli.StringFlag{Name: "cpu-share", Usage: "CPU shares"},
		&cli.StringFlag{Name: "cpuset-cpus", Usage: "CPUs to use"},
		&cli.StringFlag{Name: "cpuset-mems", Usage: "memory nodes to use"},
		&cli.IntFlag{Name: "pids-limit", Usage: "maximum number of pids"},
		&cli.StringFlag{Name: "blkio-weight", Usage: "block IO weight (not in the guest: no io.weight)"},
		&cli.StringFlag{Name: "cpu-rt-period", Usage: "CPU real-time period in µs"},
		&cli.StringFlag{Name: "cpu-rt-runtime", Usage: "CPU real-time runtime in µs"},
		&cli.StringFlag{Name: "cpu-idle", Usage: "1: the cgroup's CPU weight is the idle policy's (0: not)"},
		&cli.StringFlag{Name: "cpu-burst", Usage: "CPU CFS burst in µs"},
		&cli.StringFlag{Name: "l3-cache-schema", Usage: "Intel RDT L3 cache schema (not in a VM)"},
		&cli.StringFlag{Name: "mem-bw-schema", Usage: "Intel RDT memory bandwidth schema (not in a VM)"},
	},
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		res := &specs.LinuxResources{}
		if path := c.String("resources"); path != "" {
			var b []byte
			if path == "-" {
				b, err = io.ReadAll(os.Stdin)
			} else {
				b, err = os.ReadFile(path)
			}
			if err != nil {
				return fmt.Errorf("reading resources: %w", err)
			}
			if err := json.Unmarshal(b, res); err != nil {
				return fmt.Errorf("parsing resources %s: %w", path, err)
			}
		}
		if err := resourcesFromFlags(c, res); err != nil {
			return err
		}
		return newRuntime(c).Update(c.Context, id, res)
	},
}

func resourcesFromFlags(c *cli.Context, r *specs.LinuxResources) error {
	num := func(name string) (*int64, error) {
		if !c.IsSet(name) {
			return nil, nil
		}
		v, err := parseBytes(c.String(name))
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", name, c.String(name), err)
		}
		return &v, nil
	}
	mem := func(dst **int64, name string) error {
		v, err := num(name)
		if err != nil || v == nil {
			return err
		}
		if r.Memory == nil {
			r.Memory = &specs.LinuxMemory{}
		}
		*dst = v
		return nil
	}
	if r.Memory == nil {
		r.Memory = &specs.LinuxMemory{}
	}
	for name, dst := range map[string]**int64{"memory": &r.Memory.Limit, "memory-reservation": &r.Memory.Reservation, "memory-swap": &r.Memory.Swap} {
		if err := mem(dst, name); err != nil {
			return err
		}
	}
	if r.CPU == nil {
		r.CPU = &specs.LinuxCPU{}
	}
	if v, err := num("cpu-quota"); err != nil {
		return err
	} else if v != nil {
		r.CPU.Quota = v
	}
	for name, dst := range map[string]**uint64{"cpu-period": &r.CPU.Period, "cpu-share": &r.CPU.Shares,
		"cpu-rt-period": &r.CPU.RealtimePeriod, "cpu-burst": &r.CPU.Burst} {
		if c.IsSet(name) {
			v, err := strconv.ParseUint(c.String(name), 10, 64)
			if err != nil {
				return fmt.Errorf("--%s %q: %w", name, c.String(name), err)
			}
			*dst = &v
		}
	}
	for name, dst := range map[string]**int64{"cpu-rt-runtime": &r.CPU.RealtimeRuntime, "cpu-idle": &r.CPU.Idle} {
		if c.IsSet(name) {
			v, err := strconv.ParseInt(c.String(name), 10, 64)
			if err != nil {
				return fmt.Errorf("--%s %q: %w", name, c.String(name), err)
			}
			*dst = &v
		}
	}
	if c.IsSet("cpuset-cpus") {
		r.CPU.Cpus = c.String("cpuset-cpus")
	}
	if c.IsSet("cpuset-mems") {
		r.CPU.Mems = c.String("cpuset-mems")
	}
	if c.IsSet("pids-limit") {
		limit := int64(c.Int("pids-limit"))
		r.Pids = &specs.LinuxPids{Limit: &limit}
	}
	if c.IsSet("blkio-weight") {
		return fmt.Errorf("--blkio-weight: the guest kernel has no I/O weight control (io.weight): %w", errdefs.ErrNotImplemented)
	}
	for _, name := range []string{"l3-cache-schema", "mem-bw-schema"} {
		if c.IsSet(name) {
			return fmt.Errorf("--%s: Intel RDT is the host's, a container in a VM has none: %w", name, errdefs.ErrNotImplemented)
		}
	}
	return nil
}

// parseBytes reads 1024, 512k, 64m, 2g.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:n-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:n-1]
		case 'g', 'G':
			mult, s = 1<<30, s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a size")
	}
	return v * mult, nil
}
