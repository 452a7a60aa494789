package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// legacyContainerdVersion starts shims through the protocol of containerd
// 2.0–2.2 (flags and environment, the runtime options on stdin, a JSON
// reply), which containerd's pkg/shim 2.4 no longer speaks.
const legacyContainerdVersion = "v2.2.1"

// legacyContainerdBin finds the containerd 2.2 and ctr that `make
// test-deps` installs ($CONTAINERD_LEGACY_BIN or the cache).
func legacyContainerdBin(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CONTAINERD_LEGACY_BIN")
	if dir == "" {
		cache := os.Getenv("VZRUN_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "vzrun")
		}
		dir = filepath.Join(cache, "containerd-"+legacyContainerdVersion)
	}
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

// startContainerdFrom is startContainerd with the containerd and ctr in
// bin; its config (version 3) suits containerd 2.0 and later.
func startContainerdFrom(t *testing.T, bin string) *ctrd {
	t.Helper()
	requiresVM(t)
	dir, err := os.MkdirTemp("", "vzrun-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &ctrd{t: t, dir: dir, bin: bin, ns: "vzrun-test-" + strings.TrimPrefix(filepath.Base(dir), "vzrun-ctrd-")}
	config := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock(), c.sock()+".ttrpc", filepath.Join(dir, "debug.sock"))
	writeFile(t, filepath.Join(dir, "config.toml"), config)
	logs, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.logs = logs
	c.cmd = exec.Command(filepath.Join(bin, "containerd"), "--config", filepath.Join(dir, "config.toml"), "--log-level", "debug")
	c.cmd.Stdout, c.cmd.Stderr = logs, logs
	c.cmd.Env = append(os.Environ(), "PATH="+filepath.Join(repoRoot, "_output", "bin")+":"+os.Getenv("PATH"))
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	waitFor(t, 30*time.Second, func() bool { _, err := os.Stat(c.sock()); return err == nil })
	if v := c.ctrOK("version"); !strings.Contains(v, strings.TrimPrefix(legacyContainerdVersion, "v")) {
		t.Fatalf("want containerd %s, got:\n%s", legacyContainerdVersion, v)
	}
	return c
}

// TestLegacyShimStartCtrRun runs a container through the shim under
// containerd 2.2, whose shim start the shim answers itself.
func TestLegacyShimStartCtrRun(t *testing.T) {
	c := startContainerdFrom(t, legacyContainerdBin(t))
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
