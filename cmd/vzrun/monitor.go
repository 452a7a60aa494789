package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/vzrun/vzrun/runtime"
)

// monitorCommand is what create starts: the process that owns a
// container's VM. Not for users.
var monitorCommand = &cli.Command{
	Name:      "monitor",
	Hidden:    true,
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "bundle", Required: true},
		&cli.StringFlag{Name: "state-dir", Required: true},
		&cli.StringFlag{Name: "console-socket"},
	},
	Action: func(c *cli.Context) error {
		id, err := containerID(c)
		if err != nil {
			return err
		}
		ready, err := readyPipe(3)
		if err != nil {
			return err
		}
		// stderr belongs to the container: log elsewhere.
		if !c.IsSet("log") {
			f, err := os.OpenFile(filepath.Join(c.String("state-dir"), "monitor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err == nil {
				logrus.SetOutput(f)
			}
		}
		status := newRuntime(c).RunMonitor(c.Context, runtime.MonitorOptions{
			ID: id, Bundle: c.String("bundle"), StateDir: c.String("state-dir"),
			ConsoleSocket: c.String("console-socket"), Ready: ready,
		})
		os.Exit(status)
		return nil
	},
}

// readyPipe is the inherited pipe to report readiness on. It is made
// close-on-exec at once: the VMM and virtiofsd must not hold it open.
func readyPipe(fd int) (*os.File, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("no ready pipe on fd %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "ready"), nil
}
