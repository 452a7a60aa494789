package darwincheck

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const backend = "./runtime/hypervisor/vz"

var repoRoot, _ = filepath.Abs(filepath.Join("..", ".."))

func check(t *testing.T, goarch string, overlay map[string][]byte) *Result {
	t.Helper()
	res, err := Check(context.Background(), Config{Dir: repoRoot, GOOS: "darwin", GOARCH: goarch, Overlay: overlay}, backend)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// The real backend passes, and its cgo file is what was checked: a wrong
// build tag would pass by checking nothing.
func TestBackendPasses(t *testing.T) {
	for _, goarch := range []string{"arm64", "amd64"} {
		t.Run(goarch, func(t *testing.T) {
			res := check(t, goarch, nil)
			if len(res.Errors) > 0 {
				t.Fatalf("type errors in the darwin backend:\n%s", strings.Join(res.Errors, "\n"))
			}
			var names []string
			for _, f := range res.Files {
				names = append(names, filepath.Base(f))
			}
			got := strings.Join(names, " ")
			if !strings.Contains(got, "vm_darwin.go") || strings.Contains(got, "nocgo_darwin.go") {
				t.Errorf("checked %s; want vm_darwin.go (cgo) and not nocgo_darwin.go", got)
			}
		})
	}
}

// A broken copy of the cgo file fails, with the error where it is.
func TestBrokenBackendFails(t *testing.T) {
	file := filepath.Join(repoRoot, "runtime", "hypervisor", "vz", "vm_darwin.go")
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"misspelled vz method", "machine.CanStop()", "machine.CanStopp()", "CanStopp"},
		{"misspelled vz function", "vz.NewNATNetworkDeviceAttachment()", "vz.NewNatNetworkDeviceAttachment()", "NewNatNetworkDeviceAttachment"},
		{"wrong argument type", "uint(c.CPUs), uint64(c.MemoryMiB)<<20", "c.CPUs, uint64(c.MemoryMiB)<<20", "cannot use c.CPUs"},
		{"wrong vz constant type", "caching, sync := vz.DiskImageCachingModeCached, vz.DiskImageSynchronizationModeFsync",
			"caching, sync := vz.DiskImageSynchronizationModeFsync, vz.DiskImageCachingModeCached", "cannot use caching"},
		{"our own api", "hypervisor.AccelHVF }", "hypervisor.AccelHFV }", "AccelHFV"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Count(string(orig), tc.old) != 1 {
				t.Fatalf("vm_darwin.go no longer has exactly one %q: update this test", tc.old)
			}
			broken := strings.Replace(string(orig), tc.old, tc.new, 1)
			res := check(t, "arm64", map[string][]byte{file: []byte(broken)})
			for _, e := range res.Errors {
				if strings.HasPrefix(e, file+":") && strings.Contains(e, tc.want) {
					return
				}
			}
			t.Fatalf("no error mentioning %q in %s; got:\n%s", tc.want, file, strings.Join(res.Errors, "\n"))
		})
	}
}

// A dependency's own errors (cgo it cannot see) are not ours to report,
// and a package that is not there is an error, not a pass.
func TestOnlyOurPackages(t *testing.T) {
	res := check(t, "arm64", nil)
	for _, e := range res.Errors {
		if !strings.HasPrefix(e, repoRoot) {
			t.Errorf("error outside the module: %s", e)
		}
	}
	if res.Packages < 50 {
		t.Errorf("only %d packages checked; the standard library and vz should be among them", res.Packages)
	}
	_, err := Check(context.Background(), Config{Dir: repoRoot, GOOS: "darwin", GOARCH: "arm64"}, "./no/such/package")
	if err == nil {
		t.Error("a missing package passed")
	}
}
