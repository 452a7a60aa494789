package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// legacyContainerdVersion starts shims through the protocol of containerd
// 2.0–2.2 (flags and environment, the runtime options on stdin, a JSON
// reply), which containerd's pkg/shim 2.4 no longer speaks.
const legacyContainerdVersion = "v2.2.1"

// legacyContainerdBin finds the containerd 2.2 and ctr that `make
// test-deps` installs ($CONTAINERD_LEGACY_BIN or the cache).
func legacyContainerdBin(t *testing.T) string {
	t.Helper()
	dir := pinnedDir(t, "CONTAINERD_LEGACY_BIN", "containerd-"+legacyContainerdVersion)
	for _, b := range []string{"containerd", "ctr"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true but %s %s is missing (make test-deps)", b, legacyContainerdVersion)
			}
			t.Skipf("%s %s not installed (make test-deps)", b, legacyContainerdVersion)
		}
	}
	return dir
}

// TestLegacyShimStartCtrRun runs a container through the shim under
// containerd 2.2, whose shim start the shim answers itself.
func TestLegacyShimStartCtrRun(t *testing.T) {
	c := startContainerdFrom(t, legacyContainerdBin(t))
	if v := c.ctrOK("version"); !strings.Contains(v, strings.TrimPrefix(legacyContainerdVersion, "v")) {
		t.Fatalf("want containerd %s, got:\n%s", legacyContainerdVersion, v)
	}
	img := c.importBusybox()
	out, errs, code := c.ctr("", "run", "--rm", "--runtime", "io.containerd.vz.v2", img, "legacy-echo", "echo", "hi")
	if code != 0 || out != "hi\n" {
		t.Fatalf("ctr run: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	// And the exit status comes back through the legacy-started shim too.
	out, errs, code = c.ctr("", "run", "--rm", "--runtime", "io.containerd.vz.v2", img, "legacy-exit", "sh", "-c", "echo bye; exit 3")
	if code != 3 || out != "bye\n" {
		t.Fatalf("ctr run (exit 3): exit %d, stdout %q, stderr %q", code, out, errs)
	}
}
