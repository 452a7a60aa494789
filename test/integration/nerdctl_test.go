package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"

	"github.com/vzrun/vzrun/internal/sockpath"
	vzshim "github.com/vzrun/vzrun/shim"
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
	bin := filepath.Join(pinnedDir(t, "NERDCTL_BIN", "nerdctl-v2.2.2"), "nerdctl")
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

func (n *nerdctl) cmd(args ...string) *exec.Cmd { return n.cmdContext(n.c.ctx, args...) }

func (n *nerdctl) cmdContext(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, n.bin, append([]string{"--address", n.c.sock(), "--namespace", n.c.ns, "--data-root", n.dataDir}, args...)...)
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

// A container's stdin outlives the client that gave it (a killed `nerdctl
// run -i`, a detach): a later `nerdctl attach` feeds the same process, as
// with containerd's runc shim, which holds the stdin fifo open until
// CloseIO.
func TestNerdctlStdinOutlivesItsClient(t *testing.T) {
	n, img := startNerdctl(t)
	feed := func(args ...string) (*exec.Cmd, *os.File, *syncBuffer) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := n.cmd(args...)
		out := &syncBuffer{}
		cmd.Stdin, cmd.Stdout = r, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		t.Cleanup(func() { w.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, w, out
	}
	run, w, out := feed(append(append([]string{"run", "-i", "--name", "si"}, vzRuntime...), img, "sh", "-c", "cat; echo got-eof; sleep 1000")...)
	fmt.Fprintln(w, "first")
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(out.String(), "first") })
	_ = run.Process.Kill()
	_ = run.Wait()
	_, w, out = feed("attach", "si")
	fmt.Fprintln(w, "via-attach")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "via-attach") {
		if strings.Contains(out.String(), "got-eof") || time.Now().After(deadline) {
			t.Fatalf("stdin did not outlive the killed nerdctl run -i: attach's output %q", out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	n.ok("rm", "-f", "si")
}

func TestNerdctlRunRm(t *testing.T) {
	n, img := startNerdctl(t)
	out, errs, code := n.run("", append(append([]string{"run", "--rm"}, vzRuntime...), img, "sh", "-c", "echo hi; uname -r; exit 5")...)
	if code != 5 || !strings.HasPrefix(out, "hi\n") || !strings.Contains(out, "-vzrun") {
		t.Fatalf("nerdctl run --rm: exit %d stdout %q stderr %q", code, out, errs)
	}
}

// A foreground run's output is whole whatever the create takes: the shim
// answers containerd's State (2 s limit) while the VM boots, so nerdctl's
// log driver, which polls the task meanwhile, does not give up, leaving
// nerdctl stuck once its pipe to it fills (~96 KiB). A cold boot makes
// the create take longer than 2 s here.
func TestNerdctlRunLargeOutput(t *testing.T) {
	n, img := startNerdctl(t)
	for _, ann := range []string{"io.vzrun.template=false", "io.vzrun.cpus=1"} {
		ctx, cancel := context.WithTimeout(n.c.ctx, 2*time.Minute)
		out, err := n.cmdContext(ctx, append(append([]string{"run", "--rm", "--annotation", ann}, vzRuntime...), img, "seq", "1", "50000")...).Output()
		cancel()
		if lines := strings.Count(string(out), "\n"); err != nil || lines != 50000 {
			t.Errorf("nerdctl run --rm --annotation %s seq 1 50000: %v, %d lines of 50000", ann, err, lines)
		}
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
	// With no limit of its own, the container's limit is its VM's memory
	// (1 GiB by default), not the host's.
	if l := parseSize(t, limit); l > 1<<30 || l < 512<<20 {
		t.Errorf("stats: memory limit %s, want the VM's 1 GiB", limit)
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

	// A container whose process has ended keeps nothing running, as with
	// runc: its VM and the task's pid are gone (the shim stays until rm).
	n.ok(append(append([]string{"run", "-d", "--name", "ended"}, vzRuntime...), img, "true")...)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(n.c.ctrOK("task", "ls"), "STOPPED") })
	id := strings.TrimSpace(n.ok("inspect", "-f", "{{.ID}}", "ended"))
	waitFor(t, 30*time.Second, func() bool {
		for _, p := range processesMentioning(id) {
			if strings.Contains(p, "qemu-system") || strings.Contains(p, "proxy") {
				return false
			}
		}
		return true
	})
	var pid int
	fmt.Sscan(n.ok("inspect", "-f", "{{.State.Pid}}", "ended"), &pid)
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		t.Errorf("the ended container's pid %d is alive", pid)
	}
	// Its stats are an empty cgroup's; an exec fails with the runc
	// shim's words.
	if out, errs, code := n.run("", "stats", "--no-stream", "-a", "--format", "{{.MemUsage}}", "ended"); code != 0 || !strings.HasPrefix(out, "0B") {
		t.Errorf("stats of an ended container: exit %d %q %q", code, out, errs)
	}
	if _, errs, code := n.run("", "exec", "ended", "true"); code == 0 || !strings.Contains(errs, "cannot exec in a stopped state") {
		t.Errorf("exec into an ended container: exit %d, %q", code, errs)
	}
	n.ok("rm", "ended")
}

// TestNerdctlRunInteractiveLastOutput: what an interactive terminal's
// process writes just before it exits reaches nerdctl, also with input
// typed that it never reads (the exit was reported before the output was
// out, and nerdctl stopped reading).
func TestNerdctlRunInteractiveLastOutput(t *testing.T) {
	n, img := startNerdctl(t)
	for i := 0; i < 4; i++ {
		cmd := n.cmd(append(append([]string{"run", "-it", "--rm"}, vzRuntime...), img, "sh", "-c", "tty; echo B; echo C-end; exit 4")...)
		master, out := startInPty(t, cmd, console.WinSize{Height: 24, Width: 80})
		master.Write([]byte("x"))
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
				t.Errorf("nerdctl run -it: %v, want exit 4", err)
			}
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("nerdctl run -it did not exit: %q", out.String())
		}
		time.Sleep(200 * time.Millisecond) // the last output through the pty
		if got := out.String(); !strings.Contains(got, "C-end") {
			t.Errorf("run %d: the last line is missing: %q", i, got)
		}
	}
}

// TestNerdctlRemoveHungVM: a VM that does not answer (here: QEMU stopped
// on the host) still ends on SIGKILL, as a frozen process does with runc,
// and nerdctl rm -f removes the container.
func TestNerdctlRemoveHungVM(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "hung"}, vzRuntime...), img, "sleep", "1000")...)
	id := strings.TrimSpace(n.ok("inspect", "-f", "{{.ID}}", "hung"))
	var qemu int
	for _, p := range processesMentioning(id) {
		if strings.Contains(p, "qemu-system") {
			fmt.Sscan(p, &qemu)
		}
	}
	if qemu == 0 {
		t.Fatalf("no QEMU for %s", id)
	}
	if err := syscall.Kill(qemu, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(qemu, syscall.SIGCONT)
	done := make(chan string, 1)
	go func() {
		out, errs, code := n.run("", "rm", "-f", "hung")
		done <- fmt.Sprintf("exit %d: %s%s", code, out, errs)
	}()
	select {
	case r := <-done:
		if !strings.HasPrefix(r, "exit 0") {
			t.Errorf("rm -f of a container whose VM hangs: %s", r)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("nerdctl rm -f of a container whose VM hangs did not return")
	}
	if left := processesMentioning(id); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
}

// nerdctl update reaches the container's cgroup in the guest through the
// shim, and the VM's balloon follows a memory limit.
func TestNerdctlUpdate(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "upd"}, vzRuntime...), img, "sleep", "3600")...)
	memTotalMiB := func() int {
		var kb int
		out := n.ok("exec", "upd", "grep", "MemTotal", "/proc/meminfo")
		if _, err := fmt.Sscanf(strings.TrimPrefix(out, "MemTotal:"), "%d", &kb); err != nil || kb == 0 {
			t.Fatalf("MemTotal: %q: %v", out, err)
		}
		return kb >> 10
	}
	boot := memTotalMiB()
	n.ok("update", "--memory", "96m", "--pids-limit", "77", "upd")
	// (No cgroup namespace in nerdctl's spec on this cgroup v1 host: the
	// container's cgroup is found through /proc/self/cgroup.)
	if out := n.ok("exec", "upd", "sh", "-c", `d=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup); cat $d/memory.max $d/pids.max`); out != "100663296\n77\n" {
		t.Errorf("cgroup in the guest after nerdctl update: %q, want 100663296 and 77", out)
	}
	waitFor(t, 30*time.Second, func() bool { return memTotalMiB() < boot-256 })
	n.ok("rm", "-f", "upd")
}

// nerdctl rm -f of a container whose task is created but not yet started
// (its VM still being set up) ends, as with runc: the kill of a task that
// never started reaches Wait and the exit event.
func TestNerdctlRemoveDuringCreate(t *testing.T) {
	n, img := startNerdctl(t)
	run := n.cmd(append(append([]string{"run", "-d", "--name", "early"}, vzRuntime...), img, "sleep", "1000")...)
	startDetachingInBackground(t, run)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(n.c.ctrOK("task", "ls"), "CREATED") })
	done := make(chan string, 1)
	go func() {
		out, errs, code := n.run("", "rm", "-f", "early")
		done <- fmt.Sprintf("exit %d: %s%s", code, out, errs)
	}()
	select {
	case r := <-done:
		t.Logf("rm -f during create: %s", r)
	case <-time.After(2 * time.Minute):
		t.Fatalf("nerdctl rm -f of a container being created did not return")
	}
	_ = run.Wait()
	waitFor(t, 30*time.Second, func() bool {
		return !strings.Contains(n.c.ctrOK("task", "ls"), "early") && strings.TrimSpace(n.c.ctrOK("container", "ls", "-q")) == ""
	})
}

// nerdctl cp reaches a running container through /proc/PID/root of the
// task's pid: the container's files, never the host's. A kill -9 of the
// task's pid ends the container, as with runc.
func TestNerdctlCpAndTaskPid(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "cpt"}, vzRuntime...), img, "sh", "-c", "echo inside > /from-container; exec sleep 1000")...)
	waitFor(t, 60*time.Second, func() bool {
		o, _, c := n.run("", "exec", "cpt", "cat", "/from-container")
		return c == 0 && o == "inside\n"
	})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.txt")
	writeFile(t, src, "copied-in\n")
	hostProbe := "/tmp/vzrun-cp-probe-" + uniqueID(t)
	t.Cleanup(func() { os.Remove(hostProbe) })
	n.ok("cp", src, "cpt:"+hostProbe)
	if _, err := os.Stat(hostProbe); err == nil {
		t.Errorf("nerdctl cp wrote %s on the host, not in the container", hostProbe)
	}
	if out := n.ok("exec", "cpt", "cat", hostProbe); out != "copied-in\n" {
		t.Errorf("the copied file in the container: %q", out)
	}
	n.ok("cp", "cpt:/from-container", filepath.Join(dir, "out.txt"))
	if b, err := os.ReadFile(filepath.Join(dir, "out.txt")); err != nil || string(b) != "inside\n" {
		t.Errorf("nerdctl cp out of the container: %q, %v", b, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(n.ok("inspect", "-f", "{{.State.Pid}}", "cpt")))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		return strings.Contains(n.ok("ps", "-a", "--format", "{{.Status}}", "-f", "name=cpt"), "Exited")
	})
	n.ok("rm", "-f", "cpt")
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

// startInPty starts cmd as a session leader on a new pty of size ws,
// as a shell runs a command on a terminal; out collects what it prints.
func startInPty(t *testing.T, cmd *exec.Cmd, ws console.WinSize) (console.Console, *syncBuffer) {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	if err := master.Resize(ws); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := &syncBuffer{}
	go func() { _, _ = io.Copy(out, master) }()
	return master, out
}

// nerdctl exec -it sizes the exec's terminal before it starts: the size
// reaches the guest, and no error is printed for it.
func TestNerdctlExecInteractiveTerminal(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "ext"}, vzRuntime...), img, "sleep", "1000")...)
	cmd := n.cmd("exec", "-it", "ext", "stty", "size")
	_, out := startInPty(t, cmd, console.WinSize{Height: 33, Width: 111})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("nerdctl exec -it: %v: %q", err, out.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("nerdctl exec -it did not exit: %q", out.String())
	}
	time.Sleep(200 * time.Millisecond) // the last output through the pty
	if got := out.String(); !strings.Contains(got, "33 111") || strings.Contains(got, "resize") {
		t.Errorf("nerdctl exec -it stty size: %q, want 33 111 and no resize error", got)
	}
	n.ok("rm", "-f", "ext")
}

func TestNerdctlRunInteractiveTerminal(t *testing.T) {
	n, img := startNerdctl(t)
	cmd := n.cmd(append(append([]string{"run", "-it", "--rm"}, vzRuntime...), img, "sh")...)
	master, out := startInPty(t, cmd, console.WinSize{Height: 40, Width: 120})
	// What is typed reaches the shell, and the size set before the start
	// reaches the guest's pty.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "40 120") {
		if time.Now().After(deadline) {
			t.Fatalf("no answer from the container's terminal: %q", out.String())
		}
		master.Write([]byte("stty size\r"))
		time.Sleep(500 * time.Millisecond)
	}
	master.Write([]byte("echo typed-$((6*7))\r"))
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(out.String(), "typed-42") })
	// A window-size change: the kernel sends nerdctl SIGWINCH, nerdctl
	// resizes the task, the shim the guest's pty.
	if err := master.Resize(console.WinSize{Height: 50, Width: 132}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "50 132") {
		if time.Now().After(deadline) {
			t.Fatalf("the new window size did not reach the guest: %q", out.String())
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

// TestNerdctlTopShowsTheVM checks that the task's pids are the VM's host
// processes (QEMU, its file servers), so `nerdctl top` shows them with their
// memory, that `ctr task ps` lists the same, and that the shim's metrics
// socket reports their footprint.
func TestNerdctlTopShowsTheVM(t *testing.T) {
	n, img := startNerdctl(t)
	id := strings.TrimSpace(n.ok(append(append([]string{"run", "-d", "--name", "web"}, vzRuntime...), img, "sleep", "3600")...))
	top := n.ok("top", "web", "-o", "pid,rss,comm")
	var vmmPid, vmmRSS uint64 // RSS in KiB
	var fsds int
	var fsdPids []uint64
	for _, line := range strings.Split(strings.TrimSpace(top), "\n")[1:] {
		var pid, rss uint64
		var comm string
		if _, err := fmt.Sscan(line, &pid, &rss, &comm); err != nil {
			t.Fatalf("top: %q: %v", line, err)
		}
		switch comm {
		case "qemu-system-x86":
			vmmPid, vmmRSS = pid, rss
		case "virtiofsd", "virtfs-proxy-he":
			fsds++
			fsdPids = append(fsdPids, pid)
		default:
			t.Errorf("top lists %q, not a process of the VM:\n%s", line, top)
		}
	}
	// A VM restored from a template has a 9p proxy per shared
	// directory, a cold-booted one a virtiofsd.
	if vmmPid == 0 || fsds == 0 {
		t.Errorf("top: want QEMU and its file servers:\n%s", top)
	}
	t.Logf("top: QEMU and %d file servers", fsds)
	if vmmRSS < 16<<10 {
		t.Errorf("top: QEMU's RSS %d KiB, want at least 16 MiB:\n%s", vmmRSS, top)
	}
	ps := n.c.ctrOK("task", "ps", id)
	if !strings.Contains(ps, fmt.Sprintf("\n%d ", vmmPid)) {
		t.Errorf("ctr task ps does not list QEMU (%d):\n%s", vmmPid, ps)
	}

	metrics := footprintMetrics(t, n.c.ns, id)
	var vmmBytes, shimBytes uint64
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "vzrun_process_resident_memory_bytes{") {
			continue
		}
		var v uint64
		fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		switch {
		case strings.Contains(line, `role="vmm"`) && strings.Contains(line, fmt.Sprintf(`pid="%d"`, vmmPid)):
			vmmBytes = v
		case strings.Contains(line, `role="shim"`):
			shimBytes = v
		}
	}
	if vmmBytes < 16<<20 || shimBytes == 0 {
		t.Errorf("metrics: QEMU RSS %d, shim RSS %d:\n%s", vmmBytes, shimBytes, metrics)
	}
	for _, pid := range fsdPids {
		if !strings.Contains(metrics, fmt.Sprintf(`pid="%d",role="file-server"`, pid)) && !strings.Contains(metrics, fmt.Sprintf(`role="file-server",pid="%d"`, pid)) {
			t.Errorf("metrics: no file-server series for the file server %d that top lists:\n%s", pid, metrics)
		}
	}
	for _, m := range []string{"vzrun_process_proportional_memory_bytes{", "vzrun_process_cpu_seconds_total{"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics: no %s:\n%s", m, metrics)
		}
	}
	n.ok("rm", "-f", "web")
	if _, err := os.Stat(filepath.Join(vzshim.StateRoot, n.c.ns, id)); !os.IsNotExist(err) {
		t.Errorf("state dir (and metrics socket) left after rm: %v", err)
	}
}

// footprintMetrics reads the shim's metrics socket of a container.
func footprintMetrics(t *testing.T, ns, id string) string {
	t.Helper()
	path := filepath.Join(vzshim.StateRoot, ns, id, vzshim.MetricsSocket)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return sockpath.Dial(path) },
	}, Timeout: 30 * time.Second}
	resp, err := client.Get("http://vzrun/metrics")
	if err != nil {
		t.Fatalf("metrics socket %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %s %v: %s", resp.Status, err, b)
	}
	return string(b)
}

// TestNerdctlStatsFollowLoad checks that `stats --no-stream` reads the
// container's own figures: CPU and memory grow when it burns CPU and fills
// memory.
func TestNerdctlStatsFollowLoad(t *testing.T) {
	n, img := startNerdctl(t)
	n.ok(append(append([]string{"run", "-d", "--name", "load"}, vzRuntime...), img, "sleep", "3600")...)
	sample := func() (cpu float64, mem uint64) {
		t.Helper()
		out := n.ok("stats", "--no-stream", "--format", "{{.CPUPerc}} {{.MemUsage}}", "load")
		var cpuS, memS string
		fmt.Sscan(out, &cpuS, &memS)
		cpu, err := strconv.ParseFloat(strings.TrimSuffix(cpuS, "%"), 64)
		if err != nil {
			t.Fatalf("stats: %q: %v", out, err)
		}
		return cpu, parseSize(t, memS)
	}
	time.Sleep(2 * time.Second)
	idleCPU, idleMem := sample()
	t.Logf("idle: CPU %.1f%%, memory %d KiB", idleCPU, idleMem>>10)

	n.ok("exec", "-d", "load", "sh", "-c", "while :; do :; done")
	n.ok("exec", "load", "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=48")
	var busyCPU float64
	var busyMem uint64
	deadline := time.Now().Add(60 * time.Second)
	for {
		busyCPU, busyMem = sample()
		if busyCPU > idleCPU+30 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("busy: CPU %.1f%%, memory %d KiB", busyCPU, busyMem>>10)
	if busyCPU < idleCPU+30 {
		t.Errorf("CPU %.1f%% idle, %.1f%% with a busy loop", idleCPU, busyCPU)
	}
	if busyMem < idleMem+40<<20 {
		t.Errorf("memory %d KiB idle, %d KiB after filling 48 MiB of /dev/shm", idleMem>>10, busyMem>>10)
	}
	n.ok("rm", "-f", "load")
}

// parseSize reads a size as nerdctl prints it: 1.5MiB, 812KiB, 0B.
func parseSize(t *testing.T, s string) uint64 {
	t.Helper()
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}}
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			v, err := strconv.ParseFloat(strings.TrimSuffix(s, u.suffix), 64)
			if err != nil {
				break
			}
			return uint64(v * u.mult)
		}
	}
	t.Fatalf("size %q", s)
	return 0
}

// The ext4 rootfs mode through the shim: what a container writes and
// removes reaches containerd's snapshot when its VM stops, as under runc,
// so `nerdctl cp` reads it out of the stopped container and a second
// start sees it. Foreground runs: nerdctl deletes the task as soon as the
// process's exit is reported, while the shim may still be syncing.
func TestNerdctlExt4Rootfs(t *testing.T) {
	n, img := startNerdctl(t)
	ext4 := append([]string{"--annotation", "io.vzrun.rootfs=ext4"}, vzRuntime...)
	script := "echo run >> /root/out; if [ -e /root/flip ]; then rm -r /root/flip; else mkdir -p /root/flip/sub; echo deep > /root/flip/sub/f; fi; cat /root/out"
	cp := func(name, path string) (string, error) {
		dst := filepath.Join(t.TempDir(), "out")
		if _, errs, code := n.run("", "cp", name+":"+path, dst); code != 0 {
			return "", fmt.Errorf("nerdctl cp: exit %d: %s", code, errs)
		}
		b, err := os.ReadFile(dst)
		return string(b), err
	}
	for _, name := range []string{"e4a", "e4b"} {
		if out := n.ok(append(append([]string{"run", "--name", name}, ext4...), img, "sh", "-c", script)...); out != "run\n" {
			t.Fatalf("%s: %q", name, out)
		}
		if got, err := cp(name, "/root/flip/sub/f"); err != nil || got != "deep\n" {
			t.Errorf("%s: the file the container wrote, copied out after it stopped: %q, %v (not synced back into the snapshot)", name, got, err)
		}
		if out := n.ok("start", "-a", name); out != "run\nrun\n" {
			t.Errorf("%s: start -a: %q, want the first run's line and the second's", name, out)
		}
		if got, err := cp(name, "/root/out"); err != nil || got != "run\nrun\n" {
			t.Errorf("%s: /root/out after the second run: %q, %v", name, got, err)
		}
		if got, err := cp(name, "/root/flip/sub/f"); err == nil {
			t.Errorf("%s: the directory the second run removed is still there: %q", name, got)
		}
	}
	// Stopped by a kill (nerdctl stop's SIGKILL after its timeout): the
	// kill's answer and the exit wait for the sync too.
	n.ok(append(append([]string{"run", "-d", "--name", "e4c"}, ext4...), img, "sh", "-c", "echo before-stop > /root/d; exec sleep 1000")...)
	waitFor(t, 60*time.Second, func() bool {
		o, _, c := n.run("", "exec", "e4c", "cat", "/root/d")
		return c == 0 && o == "before-stop\n"
	})
	n.ok("stop", "-t", "1", "e4c")
	if got, err := cp("e4c", "/root/d"); err != nil || got != "before-stop\n" {
		t.Errorf("e4c: the file written before nerdctl stop, copied out after it: %q, %v", got, err)
	}
	n.ok("rm", "e4a", "e4b", "e4c")
}

// A shim killed -9 while its container runs on an ext4 rootfs: the
// clean-up containerd runs (the shim's delete, 5 s at most) syncs the
// image back only if that fits in its time, else the image stays with the
// container's state and its next task syncs it before it starts: nothing
// written is lost, and the container starts again.
func TestNerdctlExt4RootfsShimKilled(t *testing.T) {
	// Every image is "too large" here: the deferred path is the one
	// under test.
	t.Setenv("VZRUN_LEFT_SYNC_TIMEOUT", "1ns")
	n, img := startNerdctl(t)
	ext4 := append([]string{"--annotation", "io.vzrun.rootfs=ext4"}, vzRuntime...)
	n.ok(append(append([]string{"run", "-d", "--name", "e4k"}, ext4...), img, "sh", "-c", "[ -e /root/kept ] && cat /root/kept && exit 0; echo before-the-kill > /root/kept; sync; exec sleep 1000")...)
	waitFor(t, 60*time.Second, func() bool {
		o, _, c := n.run("", "exec", "e4k", "cat", "/root/kept")
		return c == 0 && o == "before-the-kill\n"
	})
	shim := shimPid(t, n.c, "e4k")
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		return strings.Contains(n.ok("ps", "-a", "--format", "{{.Status}}", "-f", "name=e4k"), "Exited") ||
			strings.Contains(n.ok("ps", "-a", "--format", "{{.Status}}", "-f", "name=e4k"), "Created")
	})
	// containerd restarted during that clean-up runs it again, the
	// rootfs no longer mounted: the image is not synced into the empty
	// directory under it (containerd removes the bundle), it stays.
	id := strings.TrimSpace(n.ok("inspect", "-f", "{{.ID}}", "e4k"))
	bundle := t.TempDir()
	if err := os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	again := exec.Command(filepath.Join(repoRoot, "_output", "bin", "containerd-shim-vz-v2"), "-namespace", n.c.ns, "-id", id, "-bundle", bundle, "delete")
	again.Dir = bundle
	if out, err := again.CombinedOutput(); err != nil {
		t.Fatalf("the shim's delete run again: %v: %s", err, out)
	}
	if ents, _ := os.ReadDir(bundle); len(ents) != 1 {
		t.Errorf("the clean-up run again wrote into the bundle it was given: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(bundle, "rootfs")); len(ents) != 0 {
		t.Errorf("the clean-up run again synced into an unmounted rootfs: %v", ents)
	}
	if out, errs, code := n.run("", "start", "-a", "e4k"); code != 0 || out != "before-the-kill\n" {
		t.Errorf("start -a after the shim's kill -9: exit %d, %q %q (the file written before the kill should be there)", code, out, errs)
	}
	n.ok("rm", "-f", "e4k")
	if left, _ := filepath.Glob(filepath.Join(vzshim.StateRoot, n.c.ns, "*")); len(left) > 0 {
		t.Errorf("state left after rm: %v", left)
	}
}

// shimPid is the pid of the vz shim of nerdctl container name.
func shimPid(t *testing.T, c *ctrd, name string) int {
	t.Helper()
	n := &nerdctl{c: c, bin: filepath.Join(pinnedDir(t, "NERDCTL_BIN", "nerdctl-v2.2.2"), "nerdctl"), dataDir: filepath.Join(c.dir, "nerdctl")}
	id := strings.TrimSpace(n.ok("inspect", "-f", "{{.ID}}", name))
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-vz-v2" {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == id {
				return pid
			}
		}
	}
	t.Fatalf("no vz shim for container %s (%s)", name, id)
	return 0
}
