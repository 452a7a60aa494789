// Package darwincheck type-checks Go packages as they would build for
// another GOOS/GOARCH with cgo enabled, without a C toolchain for it: the
// macOS backend (files tagged `darwin && cgo`, which import Code-Hex/vz)
// cannot be built or vetted from Linux, because cgo must run first.
//
// go list (through golang.org/x/tools/go/packages) only evaluates build
// constraints to name each package's files; no cgo runs, since nothing
// asks for compiled files, syntax or types. The files are then parsed and
// checked here with go/types, dependencies first, with FakeImportC: uses
// of package C are left unchecked, everything else (calls into vz, our
// types, the standard library for darwin) is checked as the compiler
// would. Only errors in the main module's packages are reported;
// dependencies are checked without function bodies, for their exported
// types only.
//
// It must not import anything of vzrun's: it checks them.
package darwincheck

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"

	"golang.org/x/tools/go/packages"
)

// Config says what to check.
type Config struct {
	// Dir is where go list runs: the module to check.
	Dir string
	// GOOS and GOARCH are the target, e.g. darwin and arm64.
	GOOS, GOARCH string
	// Overlay replaces (or adds) files by absolute path, as go build's
	// -overlay does; tests check broken copies this way.
	Overlay map[string][]byte
}

// Result is what one check found.
type Result struct {
	// Errors are the type errors in the main module's packages,
	// "file:line:col: message", sorted.
	Errors []string
	// Files are the main module's files that were checked.
	Files []string
	// Packages counts every package checked, dependencies included.
	Packages int
}

// Check type-checks the packages patterns match, and their dependencies,
// for cfg's target with cgo. An error means the check could not be run
// (go list failed, a package is missing); type errors are in the Result.
func Check(ctx context.Context, cfg Config, patterns ...string) (*Result, error) {
	if cfg.GOOS == "" || cfg.GOARCH == "" {
		return nil, errors.New("darwincheck: GOOS and GOARCH are required")
	}
	sizes := types.SizesFor("gc", cfg.GOARCH)
	if sizes == nil {
		return nil, fmt.Errorf("darwincheck: unknown GOARCH %q", cfg.GOARCH)
	}
	env := append(os.Environ(), "GOOS="+cfg.GOOS, "GOARCH="+cfg.GOARCH, "CGO_ENABLED=1")
	lcfg := &packages.Config{
		Context: ctx,
		// File lists only: NeedCompiledGoFiles, NeedSyntax or NeedTypes
		// would make go list run cgo, which needs the target's compiler.
		Mode:    packages.NeedName | packages.NeedFiles | packages.NeedImports | packages.NeedDeps | packages.NeedModule,
		Dir:     cfg.Dir,
		Env:     env,
		Overlay: cfg.Overlay,
	}
	roots, err := packages.Load(lcfg, patterns...)
	if err != nil {
		return nil, fmt.Errorf("darwincheck: listing %s for %s/%s: %w", strings.Join(patterns, " "), cfg.GOOS, cfg.GOARCH, err)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("darwincheck: %s matched no packages", strings.Join(patterns, " "))
	}

	var all []*packages.Package
	var listErrs []string
	packages.Visit(roots, nil, func(p *packages.Package) {
		all = append(all, p)
		for _, e := range p.Errors {
			listErrs = append(listErrs, e.Error())
		}
	})
	if len(listErrs) > 0 {
		return nil, fmt.Errorf("darwincheck: listing packages for %s/%s:\n%s", cfg.GOOS, cfg.GOARCH, strings.Join(listErrs, "\n"))
	}

	c := &checker{
		fset:    token.NewFileSet(),
		sizes:   sizes,
		overlay: cfg.Overlay,
		done:    make(map[*packages.Package]*future, len(all)),
		sem:     make(chan struct{}, runtime.GOMAXPROCS(0)),
		res:     &Result{Packages: len(all)},
	}
	for _, p := range all {
		c.done[p] = &future{ready: make(chan struct{})}
	}
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.check(p)
		}()
	}
	wg.Wait()
	sort.Strings(c.res.Errors)
	sort.Strings(c.res.Files)
	return c.res, nil
}

type future struct {
	ready chan struct{}
	pkg   *types.Package
}

type checker struct {
	fset    *token.FileSet
	sizes   types.Sizes
	overlay map[string][]byte
	done    map[*packages.Package]*future
	sem     chan struct{}

	mu  sync.Mutex
	res *Result
}

func isOwn(p *packages.Package) bool { return p.Module != nil && p.Module.Main }

// check type-checks p once its imports are checked.
func (c *checker) check(p *packages.Package) {
	f := c.done[p]
	defer close(f.ready)
	for _, imp := range p.Imports {
		<-c.done[imp].ready
	}
	c.sem <- struct{}{}
	defer func() { <-c.sem }()

	own := isOwn(p)
	mode := parser.SkipObjectResolution
	if own {
		mode |= parser.ParseComments
	}
	var files []*ast.File
	for _, name := range p.GoFiles {
		var src any
		if b, ok := c.overlay[name]; ok {
			src = b
		}
		file, err := parser.ParseFile(c.fset, name, src, mode)
		if err != nil {
			if own {
				c.report(err.Error())
			}
			if file == nil {
				continue
			}
		}
		files = append(files, file)
		if own {
			c.mu.Lock()
			c.res.Files = append(c.res.Files, name)
			c.mu.Unlock()
		}
	}

	conf := types.Config{
		Importer: importer(func(path string) (*types.Package, error) {
			if path == "unsafe" {
				return types.Unsafe, nil
			}
			imp, ok := p.Imports[path]
			if !ok {
				return nil, fmt.Errorf("%s does not import %s", p.PkgPath, path)
			}
			if t := c.done[imp].pkg; t != nil {
				return t, nil
			}
			return nil, fmt.Errorf("%s was not checked", path)
		}),
		Sizes:       c.sizes,
		FakeImportC: true,
		// A dependency is needed for its declarations only.
		IgnoreFuncBodies: !own,
		Error: func(err error) {
			if own {
				c.report(err.Error())
			}
		},
	}
	if p.Module != nil && p.Module.GoVersion != "" {
		conf.GoVersion = "go" + p.Module.GoVersion
	}
	// Errors went to conf.Error; the package is usable even with some.
	f.pkg, _ = conf.Check(p.PkgPath, c.fset, files, nil)
}

func (c *checker) report(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.Errors = append(c.res.Errors, msg)
}

type importer func(path string) (*types.Package, error)

func (f importer) Import(path string) (*types.Package, error) { return f(path) }
