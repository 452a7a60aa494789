// Command vzrun is an OCI runtime with runc's command line that runs each
// container in its own lightweight virtual machine.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

// version is set by the Makefile.
var version = "dev"

func main() {
	app := &cli.App{
		Name:    "vzrun",
		Usage:   "run OCI containers, each in its own virtual machine",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: "/run/vzrun", Usage: "directory for container state"},
			&cli.StringFlag{Name: "log", Usage: "log file (default stderr)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json"},
			&cli.BoolFlag{Name: "debug", Usage: "debug logging, including VM boot timings"},
			&cli.BoolFlag{Name: "systemd-cgroup", Usage: "accepted for runc compatibility; cgroups live in the guest"},
			&cli.StringFlag{Name: "rootless", Value: "auto", Usage: "accepted for runc compatibility; vzrun has no rootless mode (create needs root)"},
			&cli.StringFlag{Name: "kernel", EnvVars: []string{"VZRUN_KERNEL"}, Usage: "guest kernel"},
			&cli.StringFlag{Name: "initrd", EnvVars: []string{"VZRUN_INITRD"}, Usage: "guest initramfs with the agent"},
			&cli.StringFlag{Name: "accel", EnvVars: []string{"VZRUN_ACCEL"}, Usage: "accelerator: kvm, tcg or hvf (default: probe)"},
		},
		Before: setupLogging,
		Commands: []*cli.Command{
			createCommand,
			startCommand,
			runCommand,
			stateCommand,
			killCommand,
			deleteCommand,
			execCommand,
			listCommand,
			psCommand,
			pauseCommand,
			resumeCommand,
			updateCommand,
			eventsCommand,
			featuresCommand,
			specCommand,
			checkpointCommand,
			restoreCommand,
			monitorCommand,
		},
	}
	if err := app.Run(os.Args); err != nil {
		// As runc: the error goes to the --log file too, where callers
		// (containerd's runc shim reads log.json) look for it.
		if logFile {
			logrus.Error(err)
		}
		fmt.Fprintf(os.Stderr, "vzrun: %v\n", err)
		os.Exit(1)
	}
}

// logFile says whether --log names a file.
var logFile bool

// quietFormatter drops the one line ttrpc logs when an answer arrives
// for a call already given up (a relay's read at the container's end):
// harmless, and in a foreground run it would land in the container's
// stderr.
type quietFormatter struct{ logrus.Formatter }

func (f quietFormatter) Format(e *logrus.Entry) ([]byte, error) {
	if e.Message == "ttrpc: received message on inactive stream" {
		return nil, nil
	}
	return f.Formatter.Format(e)
}

func setupLogging(c *cli.Context) error {
	var out io.Writer = os.Stderr
	if p := c.String("log"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("opening log %s: %w", p, err)
		}
		out = f
		logFile = true
	}
	logrus.SetOutput(out)
	switch f := c.String("log-format"); f {
	case "text":
		_ = log.SetFormat(log.TextFormat)
	case "json":
		_ = log.SetFormat(log.JSONFormat)
	default:
		return fmt.Errorf("--log-format %q: want text or json", f)
	}
	logrus.SetFormatter(quietFormatter{logrus.StandardLogger().Formatter})
	if c.Bool("debug") {
		_ = log.SetLevel("debug")
	} else {
		_ = log.SetLevel("warn")
	}
	return nil
}

// newRuntime makes the runtime from the global flags.
func newRuntime(c *cli.Context) *runtime.Runtime {
	// Absolute, as runc makes it: the VM's processes run in the state dir.
	root, err := filepath.Abs(c.String("root"))
	if err != nil {
		root = c.String("root")
	}
	return &runtime.Runtime{
		Root:   root,
		Kernel: c.String("kernel"),
		Initrd: c.String("initrd"),
		Accel:  c.String("accel"),
	}
}

// containerID is the command's single ID argument.
func containerID(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%s: want exactly one container id, got %d arguments", c.Command.Name, c.NArg())
	}
	return c.Args().First(), nil
}
