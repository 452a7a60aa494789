// Command darwincheck type-checks vzrun's packages for macOS, cgo files
// included, from any host: see package darwincheck.
//
//	darwincheck [-goos darwin] [-goarch arm64,amd64] [packages]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vzrun/vzrun/internal/darwincheck"
)

func main() {
	goos := flag.String("goos", "darwin", "target GOOS")
	goarchs := flag.String("goarch", "arm64,amd64", "target GOARCHes, separated by commas or spaces")
	flag.Parse()
	patterns := flag.Args()
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	failed := false
	for _, goarch := range strings.FieldsFunc(*goarchs, func(r rune) bool { return r == ',' || r == ' ' }) {
		start := time.Now()
		res, err := darwincheck.Check(context.Background(), darwincheck.Config{GOOS: *goos, GOARCH: goarch}, patterns...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, e := range res.Errors {
			fmt.Fprintln(os.Stderr, e)
		}
		fmt.Printf("darwincheck: %s/%s with cgo: %d packages, %d of our files, %d errors, %s\n",
			*goos, goarch, res.Packages, len(res.Files), len(res.Errors), time.Since(start).Round(10*time.Millisecond))
		failed = failed || len(res.Errors) > 0
	}
	if failed {
		os.Exit(1)
	}
}
