package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
)

// nerdctl drives the pinned nerdctl (make test-deps) against a private
// containerd, with --runtime io.containerd.vz.v2.
type nerdctl struct {
	c       *ctrd
	bin     string
	dataDir string
}

func startNerdctl(t *testing.T) (*nerdctl, string) {
	t.Helper()
	c := startContainerd(t)
	bin := filepath.Join(filepath.Dir(containerdBin(t)), "nerdctl-v2.2.2", "nerdctl")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but nerdctl is missing (make test-deps): %v", err)
		}
		t.Skipf("nerdctl not installed (make test-deps)")
	}
	n := &nerdctl{c: c, bin: bin, dataDir: filepath.Join(c.dir, "nerdctl")}
	img := c.importBusybox()
	return n, img
}

func (n *nerdctl) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(n.bin, append([]string{"--address", n.c.sock(), "--namespace", n.c.ns, "--data-root", n.dataDir}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(repoRoot, "_output", "bin")+":"+os.Getenv("PATH"))
	return cmd
}

func (n *nerdctl) run(stdin string, args ...string) (string, string, int) {
	n.c.t.Helper()
	cmd := n.cmd(args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		n.c.t.Fatalf("nerdctl %v: %v", args, err)
	}
	n.c.t.Logf("nerdctl %s: exit %d in %s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
	return out.String(), errb.String(), code
}

func (n *nerdctl) ok(args ...string) string {
	n.c.t.Helper()
	out, errs, code := n.run("", args...)
	if code != 0 {
		n.c.t.Fatalf("nerdctl %v: exit %d: %s%s", args, code, out, errs)
	}
	return out
}

var vzRuntime = []string{"--runtime", "io.containerd.vz.v2", "--network", "none"}

func TestNerdctlExecStdin(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "web"}, vzRuntime...), img, "sh", "-c", "while :; do sleep 0.1; done")...)
	if out, errs, code := n.run("piped input\n", "exec", "-i", "web", "cat"); code != 0 || out != "piped input\n" {
		t.Errorf("exec -i: exit %d %q %q", code, out, errs)
	}
	n.ok("rm", "-f", "web")
}

func TestNerdctlRunRm(t *testing.T) {
	n, img := startNerdctl(t)
	out, errs, code := n.run("", append(append([]string{"run", "--rm"}, vzRuntime...), img, "sh", "-c", "echo hi; uname -r; exit 5")...)
	if code != 5 || !strings.HasPrefix(out, "hi\n") || !strings.Contains(out, "-vzrun") {
		t.Fatalf("nerdctl run --rm: exit %d stdout %q stderr %q", code, out, errs)
	}
}

func TestNerdctlDetachedLifecycle(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "web"}, vzRuntime...), img, "sh", "-c",
		"trap 'echo got-term; exit 0' TERM; echo started; while :; do sleep 0.1; done")...)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(n.ok("logs", "web"), "started") })
	if out := n.ok("exec", "web", "sh", "-c", "echo exec-ok"); out != "exec-ok\n" {
		t.Errorf("exec: %q", out)
	}
	// Figures from the guest's cgroup: memory in use and pids, not zeros.
	stats := n.ok("stats", "--no-stream", "--format", "{{.MemUsage}} {{.PIDs}}", "web")
	var mem, limit, pids string
	fmt.Sscanf(stats, "%s / %s %s", &mem, &limit, &pids)
	if mem == "" || strings.HasPrefix(mem, "0B") || pids == "" || pids == "0" {
		t.Errorf("stats: %q", stats)
	}
	n.ok("pause", "web")
	if ps := n.ok("ps", "-a"); !strings.Contains(ps, "Paused") {
		t.Errorf("ps after pause: %s", ps)
	}
	n.ok("unpause", "web")
	n.ok("stop", "web")
	if logs := n.ok("logs", "web"); !strings.Contains(logs, "got-term") {
		t.Errorf("SIGTERM not honoured on stop; logs %q", logs)
	}
	n.ok("rm", "web")
}

func TestNerdctlStopKillsAfterTimeout(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "stubborn"}, vzRuntime...), img, "sh", "-c", "trap '' TERM; echo started; while :; do sleep 0.1; done")...)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(n.ok("logs", "stubborn"), "started") })
	start := time.Now()
	n.ok("stop", "-t", "2", "stubborn")
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("stop returned after %s, before the 2s timeout", d)
	}
	if ps := n.ok("ps", "-a"); !strings.Contains(ps, "Exited (137)") {
		t.Errorf("after stop -t 2: %s", ps)
	}
	n.ok("rm", "stubborn")
}

func TestNerdctlBindMount(t *testing.T) {
	n, img := startNerdctl(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "in.txt"), "from host\n")
	out := n.ok(append(append([]string{"run", "--rm", "-v", dir + ":/data"}, vzRuntime...), img, "sh", "-c", "cat /data/in.txt; echo from container > /data/out.txt")...)
	if out != "from host\n" {
		t.Errorf("read through bind mount: %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out.txt")); err != nil || string(b) != "from container\n" {
		t.Errorf("write through bind mount: %q %v", b, err)
	}
}

func TestNerdctlCommit(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "--name", "changer"}, vzRuntime...), img, "sh", "-c", "echo changed > /root/marker")...)
	n.ok("commit", "changer", "localhost/vzrun-test/changed:1")
	n.ok("rm", "changer")
	out := n.ok(append(append([]string{"run", "--rm"}, vzRuntime...), "localhost/vzrun-test/changed:1", "cat", "/root/marker")...)
	if out != "changed\n" {
		t.Errorf("committed image: %q", out)
	}
}

func TestNerdctlRunInteractiveTerminal(t *testing.T) {
	n, img := startNerdctl(t)
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := master.Resize(console.WinSize{Height: 40, Width: 120}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.cmd(append(append([]string{"run", "-it", "--rm"}, vzRuntime...), img, "sh")...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out syncBuffer
	go func() { _, _ = io.Copy(&out, master) }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "40 120") {
		if time.Now().After(deadline) {
			t.Fatalf("no answer from the container's terminal: %q", out.String())
		}
		master.Write([]byte("stty size\r"))
		time.Sleep(500 * time.Millisecond)
	}
	master.Write([]byte("tty; exit 7\r"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
			t.Errorf("nerdctl run -it: %v, want exit 7", err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("nerdctl run -it did not exit: %q", out.String())
	}
	if !strings.Contains(out.String(), "/dev/pts/") {
		t.Errorf("terminal output %q: want a pts", out.String())
	}
}
