package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var idRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.+-]{0,127}$`)

// ValidateID checks a container id the way runc does.
func ValidateID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("invalid container id %q: want a letter or digit, then letters, digits and _.+- (at most 128 in all): %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}

// LoadSpec reads and checks bundle/config.json.
func LoadSpec(bundle string) (*specs.Spec, error) {
	fi, err := os.Stat(bundle)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("bundle %s does not exist: %w", bundle, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("bundle %s: %w", bundle, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("bundle %s is not a directory: %w", bundle, errdefs.ErrInvalidArgument)
	}
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing %s: %s: %w", path, jsonError(b, err), errdefs.ErrInvalidArgument)
	}
	if err := checkSpec(&s, bundle); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// jsonError says where in b the JSON error is.
func jsonError(b []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	off := int64(-1)
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 {
		return err.Error()
	}
	line, col := 1, 1
	for _, c := range b[:min(int(off), len(b))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Sprintf("line %d, column %d: %v", line, col, err)
}

func checkSpec(s *specs.Spec, bundle string) error {
	if s.Root == nil || s.Root.Path == "" {
		return fmt.Errorf("root.path is not set: %w", errdefs.ErrInvalidArgument)
	}
	root := RootfsPath(s, bundle)
	if fi, err := os.Stat(root); err != nil {
		return fmt.Errorf("root.path %s: %w", root, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("root.path %s is not a directory: %w", root, errdefs.ErrInvalidArgument)
	}
	// A root that is (or is under) a symlink is used where it leads: the
	// file servers refuse to share a symlink (runc refuses such a root).
	if resolved, err := filepath.EvalSymlinks(root); err == nil && resolved != filepath.Clean(root) {
		if abs, err := filepath.Abs(resolved); err == nil {
			s.Root.Path = abs
		}
	}
	if s.Process == nil {
		return fmt.Errorf("process is not set: %w", errdefs.ErrInvalidArgument)
	}
	if len(s.Process.Args) == 0 {
		return fmt.Errorf("process.args is empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := checkArgSize(s.Process); err != nil {
		return err
	}
	if s.Process.Cwd == "" || !filepath.IsAbs(s.Process.Cwd) {
		return fmt.Errorf("process.cwd %q is not an absolute path: %w", s.Process.Cwd, errdefs.ErrInvalidArgument)
	}
	if s.Linux != nil {
		// A namespace path names a namespace on the host (another
		// container's: nerdctl --pid container:NAME, --ipc
		// container:NAME). The container's namespaces are its guest's;
		// only the network namespace is the host's to give (it becomes
		// the VM's network).
		for _, ns := range s.Linux.Namespaces {
			if ns.Path != "" && ns.Type != specs.NetworkNamespace {
				return fmt.Errorf("linux.namespaces: the %s namespace %s is on the host: a container in its own VM has its namespaces in its guest and cannot join another container's or the host's: %w", ns.Type, ns.Path, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// Linux's limits on what an execve takes: one argument or environment
// string at most 32 pages (MAX_ARG_STRLEN, its NUL included), all of them
// at most min(6 MiB, RLIMIT_STACK/4) (2 MiB at the default 8 MiB stack),
// pointers included. A process over the first two can never be started,
// whatever its limits: that much is refused here; the rest is the guest
// kernel's to refuse at start, as under runc.
const (
	maxArgStrlen = 32 * 4096
	maxArgTotal  = 8 << 20 / 4 * 3
)

// checkArgSize refuses a process the guest's kernel would not exec
// ("argument list too long", as runc fails): checked on the host, a huge
// environment does not have to reach the guest first (a 100 MB one ran
// the guest's runc out of memory).
func checkArgSize(p *specs.Process) error {
	total := 0
	for _, l := range []struct {
		name string
		strs []string
	}{{"process.args", p.Args}, {"process.env", p.Env}} {
		for i, a := range l.strs {
			if len(a)+1 > maxArgStrlen {
				return fmt.Errorf("%s[%d] is %d bytes, over the kernel's %d for one: argument list too long: %w", l.name, i, len(a), maxArgStrlen-1, errdefs.ErrInvalidArgument)
			}
			total += len(a) + 1
		}
	}
	if total > maxArgTotal {
		return fmt.Errorf("process.args and process.env are %d bytes, over the kernel's %d: argument list too long: %w", total, maxArgTotal, errdefs.ErrInvalidArgument)
	}
	return nil
}

// RootfsPath is the host path of the spec's root.
func RootfsPath(s *specs.Spec, bundle string) string {
	if filepath.IsAbs(s.Root.Path) {
		return s.Root.Path
	}
	return filepath.Join(bundle, s.Root.Path)
}
