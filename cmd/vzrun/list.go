package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

var listCommand = &cli.Command{
	Name:  "list",
	Usage: "list the containers under --root",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "table or json"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "ids only"},
	},
	Action: func(c *cli.Context) error {
		// As with runc: a missing default root means no containers yet, a
		// missing --root given by the caller is an error.
		// An empty --root is the current directory, as for the other
		// commands.
		if c.IsSet("root") && c.String("root") != "" {
			if _, err := os.Stat(c.String("root")); err != nil {
				return fmt.Errorf("--root: %w", err)
			}
		}
		list, err := newRuntime(c).List(c.Context)
		if err != nil {
			return err
		}
		if c.Bool("quiet") {
			for _, e := range list {
				fmt.Println(e.ID)
			}
			return nil
		}
		switch c.String("format") {
		case "json":
			if list == nil {
				fmt.Println("null")
				return nil
			}
			return json.NewEncoder(os.Stdout).Encode(list)
		case "table":
			w := tabwriter.NewWriter(os.Stdout, 12, 1, 3, ' ', 0)
			fmt.Fprint(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n")
			for _, e := range list {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", e.ID, e.Pid, e.Status, e.Bundle, e.Created.Format(time.RFC3339Nano), e.Owner)
			}
			return w.Flush()
		}
		return fmt.Errorf("--format %q: want table or json", c.String("format"))
	},
}
