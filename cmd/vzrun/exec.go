package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
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
		&cli.Int64SliceFlag{Name: "additional-gids", Aliases: []string{"g"}, Usage: "additional group id (repeatable)"},
		&cli.StringSliceFlag{Name: "cap", Aliases: []string{"c"}, Usage: "capability to add"},
		&cli.BoolFlag{Name: "no-new-privs", Usage: "set no_new_privs"},
		&cli.StringFlag{Name: "apparmor", Usage: "AppArmor profile for the process"},
		&cli.StringFlag{Name: "process-label", Usage: "SELinux label for the process"},
		&cli.IntFlag{Name: "preserve-fds", Usage: "pass N extra fds (only 0 is supported in a VM)"},
		&cli.StringFlag{Name: "pidfd-socket", Usage: "unix socket to send a pidfd of the process's pid (its host relay) to"},
		&cli.BoolFlag{Name: "ignore-paused", Usage: "exec in a paused container (refused: a paused VM's vCPUs are stopped)"},
		&cli.StringSliceFlag{Name: "cgroup", Usage: "run the process in a sub-cgroup (not supported in a VM)"},
		&cli.IntFlag{Name: "ready-fd", Hidden: true},
	},
	Action: func(c *cli.Context) error {
		// As with runc, an exec that fails exits 255, which the process's
		// own exit status rarely is.
		if err := execAction(c); err != nil {
			return cli.Exit(fmt.Sprintf("vzrun: %v", err), 255)
		}
		return nil
	},
}

func execAction(c *cli.Context) error {
	if c.NArg() < 1 {
		return fmt.Errorf("exec: want <container-id> [command [args...]]")
	}
	if err := noPreservedFds(c); err != nil {
		return err
	}
	// runc's words: a console socket is for a detached exec's terminal
	// (a foreground exec -t relays its terminal itself).
	if c.String("console-socket") != "" && !c.Bool("detach") && c.Int("ready-fd") == 0 {
		return fmt.Errorf("cannot use console socket if vzrun will not detach or allocate tty: %w", errdefs.ErrInvalidArgument)
	}
	id := c.Args().First()
	r := newRuntime(c)
	if st, err := r.State(c.Context, id); err == nil && st.Status == runtime.StatusPaused {
		if c.Bool("ignore-paused") {
			return fmt.Errorf("cannot exec in paused container %s, --ignore-paused or not: pausing stops the VM's vCPUs, so nothing in it can start: %w", id, errdefs.ErrFailedPrecondition)
		}
		// runc's words.
		return fmt.Errorf("cannot exec in a paused container %s: %w", id, errdefs.ErrFailedPrecondition)
	}
	if len(c.StringSlice("cgroup")) > 0 {
		return fmt.Errorf("--cgroup: not supported: the container's cgroups are in its VM, where exec runs the process in the container's own: %w", errdefs.ErrNotImplemented)
	}
	proc, err := execProcess(c, r, id)
	if err != nil {
		return err
	}
	o := runtime.ExecOptions{ID: id, Process: proc, ConsoleSocket: c.String("console-socket"), PidFile: c.String("pid-file")}
	if c.Bool("detach") {
		// The relay reads the process again: hand it the one resolved
		// here, in a file it can open (--process may be a pipe the relay
		// does not inherit, such as /dev/fd/63). It has read the file by
		// the time Exec returns.
		path, err := writeProcessFile(proc)
		if err != nil {
			return err
		}
		defer os.Remove(path)
		o.Detach = true
		o.Self = detachedSelf(c, path)
	}
	if fd := c.Int("ready-fd"); fd > 0 {
		if o.Ready, err = readyPipe(fd); err != nil {
			return err
		}
		o.PidFile = ""
	}
	// In the foreground this process relays the exec's stdio and
	// signals and exits with its status: it is the exec's pid, as a
	// detached exec's relay is.
	if !o.Detach && o.PidFile != "" {
		if err := runtime.WritePidFile(o.PidFile, os.Getpid()); err != nil {
			return err
		}
	}
	pidfdSocket := c.String("pidfd-socket")
	if pidfdSocket != "" && !o.Detach {
		// runc names the message after its init type: an exec's is setns.
		if err := sendPidfdOf(pidfdSocket, os.Getpid(), "setns"); err != nil {
			return err
		}
	}
	userPidFile := o.PidFile
	if pidfdSocket != "" && o.Detach && o.PidFile == "" {
		// The relay's pid is learnt from a pid file of our own.
		f, err := os.CreateTemp("", "vzrun-exec-pid-")
		if err != nil {
			return err
		}
		f.Close()
		defer os.Remove(f.Name())
		o.PidFile = f.Name()
	}
	status, err := r.Exec(c.Context, o)
	if err != nil {
		if !o.Detach && userPidFile != "" {
			_ = os.Remove(userPidFile)
		}
		return err
	}
	if pidfdSocket != "" && o.Detach {
		b, err := os.ReadFile(o.PidFile)
		if err != nil {
			return fmt.Errorf("--pidfd-socket: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("--pidfd-socket: pid file %s: %w", o.PidFile, err)
		}
		if err := sendPidfdOf(pidfdSocket, pid, "setns"); err != nil {
			return err
		}
	}
	if !o.Detach {
		os.Exit(status)
	}
	return nil
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
	for _, g := range c.Int64Slice("additional-gids") {
		if g < 0 || g > math.MaxUint32 {
			return nil, fmt.Errorf("--additional-gids %d: out of range", g)
		}
		p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(g))
	}
	if caps := c.StringSlice("cap"); len(caps) > 0 && p.Capabilities != nil {
		p.Capabilities.Bounding = append(p.Capabilities.Bounding, caps...)
		p.Capabilities.Effective = append(p.Capabilities.Effective, caps...)
		p.Capabilities.Permitted = append(p.Capabilities.Permitted, caps...)
		// As with runc: ambient only where the spec gives an inheritable
		// set, without which the kernel refuses an ambient capability.
		if p.Capabilities.Inheritable != nil {
			p.Capabilities.Ambient = append(p.Capabilities.Ambient, caps...)
		}
	}
	if c.IsSet("no-new-privs") {
		p.NoNewPrivileges = c.Bool("no-new-privs")
	}
	// As runc: applied by the guest's runc (which refuses a profile the
	// guest kernel cannot apply).
	if c.IsSet("apparmor") {
		p.ApparmorProfile = c.String("apparmor")
	}
	if c.IsSet("process-label") {
		p.SelinuxLabel = c.String("process-label")
	}
	return p, nil
}

// writeProcessFile writes p to a new private file and returns its path.
func writeProcessFile(p *specsProcess) (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "vzrun-exec-*.json")
	if err != nil {
		return "", fmt.Errorf("writing the process for the relay: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("writing the process for the relay: %w", err)
	}
	return f.Name(), nil
}

// detachedSelf is this command line without --detach, to run in the
// background as the exec's relay, with --process processFile in place of
// any --process (with one, the command's args are not used).
func detachedSelf(c *cli.Context, processFile string) []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	args := []string{exe}
	done, skip := false, false
	for _, a := range os.Args[1:] {
		if skip {
			skip = false
			continue
		}
		if !done {
			switch a {
			case "-d", "--detach", "-detach", "--detach=true":
				continue
			case "-p", "--process", "-process":
				skip = true
				continue
			}
			if strings.HasPrefix(a, "-p=") || strings.HasPrefix(a, "--process=") || strings.HasPrefix(a, "-process=") {
				continue
			}
			if a == "exec" {
				args = append(args, a, "--ready-fd", "3")
				continue
			}
			if a == c.Args().First() {
				args = append(args, "--process", processFile)
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
