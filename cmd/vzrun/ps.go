package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

var psCommand = &cli.Command{
	Name:  "ps",
	Usage: "list a container's host processes (the VM's owner, VMM and helpers)",
	Description: `The container's processes run in its VM, where their pids name nothing on
the host; its host processes are the process that owns the VM (the pid
state reports), the VMM (QEMU) and its helpers (virtiofsd). As with runc,
--format json prints their pids and the table is the host's ps (options
after the id, default -ef) cut down to them. The guest's processes:
vzrun exec ID ps.`,
	ArgsUsage: "<container-id> [ps options]",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "table or json"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() < 1 {
			return fmt.Errorf("%s: want a container id", c.Command.Name)
		}
		format := c.String("format")
		if format != "table" && format != "json" {
			return fmt.Errorf("--format %q: want table or json", format)
		}
		pids, err := newRuntime(c).Pids(c.Context, c.Args().First())
		if err != nil {
			return err
		}
		if format == "json" {
			return json.NewEncoder(os.Stdout).Encode(pids)
		}
		psArgs := c.Args().Slice()[1:]
		if len(psArgs) == 0 {
			psArgs = []string{"-ef"}
		}
		out, err := exec.Command("ps", psArgs...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return fmt.Errorf("ps %s: %w: %s", strings.Join(psArgs, " "), err, ee.Stderr)
			}
			return fmt.Errorf("ps: %w", err)
		}
		table, err := psLines(string(out), pids)
		if err != nil {
			return err
		}
		fmt.Print(table)
		return nil
	},
}

// psLines keeps the header of ps's output and the lines of pids; the pid
// is in the header's PID column.
func psLines(out string, pids []int) (string, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	col := slices.Index(strings.Fields(lines[0]), "PID")
	if col < 0 {
		return "", fmt.Errorf("ps: no PID column in %q", lines[0])
	}
	var b strings.Builder
	b.WriteString(lines[0] + "\n")
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if col >= len(f) {
			continue
		}
		if pid, err := strconv.Atoi(f[col]); err == nil && slices.Contains(pids, pid) {
			b.WriteString(l + "\n")
		}
	}
	return b.String(), nil
}
