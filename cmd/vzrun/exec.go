package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

var execCommand = &cli.Command{
	Name:      "exec",
	Usage:     "run a new process in a running container",
	ArgsUsage: "<container-id> [command [args...]]",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "process", Aliases: []string{"p"}, Usage: "process.json (an OCI process) to run"},
		&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "give the process a terminal"},
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "return once the process runs"},
		&cli.StringFlag{Name: "pid-file", Usage: "file to write the process's pid (its host relay) to"},
		&cli.StringFlag{Name: "console-socket", Usage: "unix socket to send the terminal's master to"},
		&cli.StringFlag{Name: "cwd", Usage: "working directory in the container"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "KEY=VALUE to add to the environment"},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "UID[:GID]"},
		&cli.StringSliceFlag{Name: "cap", Aliases: []string{"c"}, Usage: "capability to add"},
		&cli.BoolFlag{Name: "no-new-privs", Usage: "set no_new_privs"},
		&cli.IntFlag{Name: "preserve-fds", Usage: "pass N extra fds (only 0 is supported in a VM)"},
		&cli.IntFlag{Name: "ready-fd", Hidden: true},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() < 1 {
			return fmt.Errorf("exec: want <container-id> [command [args...]]")
		}
		if err := noPreservedFds(c); err != nil {
			return err
		}
		id := c.Args().First()
		r := newRuntime(c)
		proc, err := execProcess(c, r, id)
		if err != nil {
			return err
		}
		o := runtime.ExecOptions{ID: id, Process: proc, ConsoleSocket: c.String("console-socket"), PidFile: c.String("pid-file")}
		if c.Bool("detach") {
			o.Detach = true
			o.Self = detachedSelf(c)
		}
		if fd := c.Int("ready-fd"); fd > 0 {
			if o.Ready, err = readyPipe(fd); err != nil {
				return err
			}
			o.PidFile = ""
		}
		status, err := r.Exec(c.Context, o)
		if err != nil {
			return err
		}
		if !o.Detach {
			os.Exit(status)
		}
		return nil
	},
}

// execProcess is --process, or the container's process with the command
// line's args and overrides.
func execProcess(c *cli.Context, r *runtime.Runtime, id string) (p *specsProcess, err error) {
	if path := c.String("process"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading process %s: %w", path, err)
		}
		p = &specsProcess{}
		if err := json.Unmarshal(b, p); err != nil {
			return nil, fmt.Errorf("parsing process %s: %w", path, err)
		}
		if len(p.Args) == 0 {
			return nil, fmt.Errorf("process %s: args is empty", path)
		}
		if p.Cwd == "" {
			p.Cwd = "/"
		}
		return p, nil
	}
	if c.NArg() < 2 {
		return nil, fmt.Errorf("exec: no command given (args or --process)")
	}
	if p, err = r.ExecProcess(id); err != nil {
		return nil, err
	}
	p.Args = c.Args().Slice()[1:]
	p.Terminal = c.Bool("tty")
	p.Env = append(p.Env, c.StringSlice("env")...)
	if cwd := c.String("cwd"); cwd != "" {
		p.Cwd = cwd
	}
	if u := c.String("user"); u != "" {
		uid, gid, hasGID := strings.Cut(u, ":")
		n, err := strconv.ParseUint(uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--user %q: want UID[:GID]", u)
		}
		p.User.UID = uint32(n)
		if hasGID {
			g, err := strconv.ParseUint(gid, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--user %q: want UID[:GID]", u)
			}
			p.User.GID = uint32(g)
		}
	}
	if caps := c.StringSlice("cap"); len(caps) > 0 && p.Capabilities != nil {
		p.Capabilities.Bounding = append(p.Capabilities.Bounding, caps...)
		p.Capabilities.Effective = append(p.Capabilities.Effective, caps...)
		p.Capabilities.Permitted = append(p.Capabilities.Permitted, caps...)
	}
	if c.Bool("no-new-privs") {
		p.NoNewPrivileges = true
	}
	return p, nil
}

// detachedSelf is this command line without --detach, to run in the
// background as the exec's relay.
func detachedSelf(c *cli.Context) []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	args := []string{exe}
	done := false
	for _, a := range os.Args[1:] {
		if !done {
			switch a {
			case "-d", "--detach", "-detach", "--detach=true":
				continue
			}
			if a == "exec" {
				args = append(args, a, "--ready-fd", "3")
				continue
			}
			if a == c.Args().First() {
				done = true
			}
		}
		args = append(args, a)
	}
	return args
}

func noPreservedFds(c *cli.Context) error {
	if n := c.Int("preserve-fds"); n != 0 {
		return fmt.Errorf("--preserve-fds %d: file descriptors cannot be passed into a VM", n)
	}
	return nil
}
