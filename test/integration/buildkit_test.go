package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BuildKit's containerd worker, its runtime set to the vz shim, runs a
// Dockerfile's RUN steps each in a VM (uname -r is the guest's kernel),
// and what they write ends up in the image.
func TestBuildKitContainerdWorker(t *testing.T) {
	bin := pinnedDir(t, "BUILDKIT_BIN", "buildkit-v0.33.1")
	if _, err := os.Stat(filepath.Join(bin, "buildkitd")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but BuildKit is missing (make test-deps): %v", err)
		}
		t.Skipf("BuildKit not installed (make test-deps)")
	}
	c := startContainerd(t)
	dir := t.TempDir()
	files, digest := busyboxLayout(t, "localhost/vzrun-test/busybox:latest")
	base := filepath.Join(dir, "base")
	for name, b := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(base, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(base, name), string(b))
	}
	src := filepath.Join(dir, "context")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "Dockerfile"), "FROM base\n"+
		"RUN uname -r > /kernel && echo built > /hello\n"+
		"RUN cat /hello > /hello2\n")

	sock := filepath.Join(dir, "buildkitd.sock")
	writeFile(t, filepath.Join(dir, "buildkitd.toml"), fmt.Sprintf(`root = %q
[grpc]
  address = ["unix://%s"]
[worker.oci]
  enabled = false
[worker.containerd]
  enabled = true
  address = %q
  namespace = %q
  [worker.containerd.runtime]
    name = "io.containerd.vz.v2"
`, filepath.Join(dir, "root"), sock, c.sock(), c.ns))
	logs, err := os.Create(filepath.Join(dir, "buildkitd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	bk := exec.Command(filepath.Join(bin, "buildkitd"), "--config", filepath.Join(dir, "buildkitd.toml"))
	bk.Stdout, bk.Stderr = logs, logs
	bk.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := bk.Start(); err != nil {
		t.Fatal(err)
	}
	// Before containerd's own cleanup (cleanups run last first).
	t.Cleanup(func() {
		_ = bk.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = bk.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = bk.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("buildkitd log:\n%s", b)
		}
	})
	waitFor(t, 30*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })

	out := filepath.Join(dir, "out")
	build := exec.CommandContext(c.ctx, filepath.Join(bin, "buildctl"), "--addr", "unix://"+sock, "build",
		"--progress", "plain", "--frontend", "dockerfile.v0",
		"--local", "context="+src, "--local", "dockerfile="+src,
		"--oci-layout", "base="+base, "--opt", "context:base=oci-layout://base@"+digest,
		"--output", "type=local,dest="+out)
	start := time.Now()
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("buildctl build: %v\n%s", err, b)
	}
	t.Logf("build with two RUN steps in VMs: %s", time.Since(start).Round(time.Millisecond))
	kernel, _ := os.ReadFile(filepath.Join(out, "kernel"))
	hello2, _ := os.ReadFile(filepath.Join(out, "hello2"))
	if !strings.HasSuffix(string(kernel), "-vzrun\n") || string(hello2) != "built\n" {
		t.Errorf("built image: /kernel %q (want the guest's, ...-vzrun), /hello2 %q (want built)", kernel, hello2)
	}
}
