package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var repoRoot = func() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}()

// vzrunBinary is the binary under test: $VZRUN or the repo's build.
func vzrunBinary() string {
	if b := os.Getenv("VZRUN"); b != "" {
		return b
	}
	return filepath.Join(repoRoot, "_output", "bin", "vzrun")
}

// requiresVM skips a test that boots VMs where there is no guest built or
// no QEMU; under CI=true it fails instead, so CI never skips them.
func requiresVM(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := os.Stat(vzrunBinary()); err != nil {
		missing = append(missing, "vzrun binary (make build)")
	}
	for _, f := range []string{"vmlinux", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(repoRoot, "_output", "share", "vzrun", f)); err != nil {
			missing = append(missing, f+" (make kernel initrd)")
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing = append(missing, "qemu-system-x86_64")
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but cannot boot VMs: missing %s", strings.Join(missing, ", "))
	}
	t.Skipf("cannot boot VMs: missing %s", strings.Join(missing, ", "))
}

// bundle is an OCI bundle with a busybox rootfs, made here by hand: the
// rootfs from busybox-static and a config.json written from scratch.
type bundle struct {
	Dir  string
	Spec *specs.Spec
}

func newBundle(t *testing.T, args ...string) *bundle {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/nobody"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(out)) {
		_ = os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}
	writeFile(t, filepath.Join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/sh\n")
	writeFile(t, filepath.Join(rootfs, "etc", "group"), "root:x:0:\nnobody:x:65534:\n")
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID"}
	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
		},
		Hostname: "testbox",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
		},
	}
	b := &bundle{Dir: dir, Spec: s}
	b.save(t)
	return b
}

func (b *bundle) rootfs() string { return filepath.Join(b.Dir, "rootfs") }

func (b *bundle) save(t *testing.T) {
	t.Helper()
	out, err := json.MarshalIndent(b.Spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.Dir, "config.json"), string(out))
}

// seeOwnCgroup gives the container its own cgroup at /sys/fs/cgroup (a
// cgroup namespace and mount), where a test reads its limits, and saves.
func (b *bundle) seeOwnCgroup(t *testing.T) {
	t.Helper()
	b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro"}})
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	b.save(t)
}

func (b *bundle) annotate(t *testing.T, kv ...string) {
	t.Helper()
	if b.Spec.Annotations == nil {
		b.Spec.Annotations = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.Spec.Annotations[kv[i]] = kv[i+1]
	}
	b.save(t)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// vz runs the vzrun binary with a test-private --root.
type vz struct {
	t    *testing.T
	ctx  context.Context
	root string
}

// testContext ends the commands a test starts (vzrun, ctr, nerdctl) if
// the test runs for 15 minutes, or until 2 minutes before go test's own
// -timeout: a hung VM or shim then fails its test, and the test's
// clean-ups, which the timeout's panic would skip, still run.
func testContext(t *testing.T) context.Context {
	end := time.Now().Add(15 * time.Minute)
	if d, ok := t.Deadline(); ok && d.Add(-2*time.Minute).Before(end) {
		end = d.Add(-2 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	t.Cleanup(cancel)
	return ctx
}

func newVZ(t *testing.T) *vz {
	t.Helper()
	requiresVM(t)
	root := t.TempDir()
	v := &vz{t: t, ctx: testContext(t), root: root}
	t.Cleanup(func() { v.assertClean() })
	return v
}

type result struct {
	stdout, stderr string
	code           int
}

func (v *vz) cmd(args ...string) *exec.Cmd {
	cmd := exec.CommandContext(v.ctx, vzrunBinary(), append([]string{"--root", v.root}, args...)...)
	cmd.Env = os.Environ()
	return cmd
}

// run runs vzrun to completion with stdin.
func (v *vz) run(stdin string, args ...string) result {
	v.t.Helper()
	cmd := v.cmd(args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			v.t.Fatalf("vzrun %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	v.t.Logf("vzrun %s: exit %d in %s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
	return result{stdout.String(), stderr.String(), code}
}

// runOK runs vzrun and fails the test unless it exits 0.
func (v *vz) runOK(args ...string) result {
	v.t.Helper()
	r := v.run("", args...)
	if r.code != 0 {
		v.t.Fatalf("vzrun %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// detach runs a vzrun command that leaves a container running: like runc,
// the container inherits vzrun's stdio, so it gets files, not pipes that
// would stay open until the container exits.
func (v *vz) detach(args ...string) {
	v.t.Helper()
	out, err := os.CreateTemp(v.t.TempDir(), "out")
	if err != nil {
		v.t.Fatal(err)
	}
	defer out.Close()
	cmd := v.cmd(args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		v.t.Fatalf("vzrun %v: %v: %s", args, err, b)
	}
}

// assertClean fails the test if anything of this root is left: a state
// dir, or a process (QEMU, virtiofsd) whose command line names the root.
func (v *vz) assertClean() {
	t := v.t
	t.Helper()
	if procs := processesMentioning(v.root); len(procs) > 0 {
		t.Errorf("processes left behind: %s", strings.Join(procs, "; "))
		killListed(procs)
	}
	entries, _ := os.ReadDir(v.root)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if len(left) > 0 {
		t.Errorf("state left behind in %s: %v", v.root, left)
	}
}

// killListed kills the processes of a processesMentioning list, so one
// test's leftovers do not outlive it.
func killListed(procs []string) {
	for _, p := range procs {
		var pid int
		fmt.Sscan(p, &pid)
		if pid > 0 {
			_ = syscallKill(pid)
		}
	}
}

// unmountUnder lazily unmounts every mount below dir, deepest first.
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mps = append(mps, f[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mps[i], syscall.MNT_DETACH)
	}
}

// processesMentioning lists "pid cmdline" of processes whose command line
// contains s.
func processesMentioning(s string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		if strings.Contains(string(b), "go test") {
			continue
		}
		pid := filepath.Base(filepath.Dir(p))
		if pid == fmt.Sprint(os.Getpid()) {
			continue
		}
		out = append(out, pid+" "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return out
}

func uniqueID(t *testing.T) string {
	return strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
}

// consoleSocket is a console socket as runc's callers make one: the
// terminal master vzrun sends arrives on masters.
type consoleSocket struct {
	*runc.Socket
	masters chan console.Console
}

func newConsoleSocket(t *testing.T) *consoleSocket {
	t.Helper()
	sock, err := runc.NewTempConsoleSocket()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	s := &consoleSocket{Socket: sock, masters: make(chan console.Console, 1)}
	go func() {
		if m, err := sock.ReceiveMaster(); err == nil {
			s.masters <- m
		}
	}()
	return s
}

// master waits for the terminal master, at most d.
func (s *consoleSocket) master(t *testing.T, d time.Duration) console.Console {
	t.Helper()
	select {
	case m := <-s.masters:
		t.Cleanup(func() { m.Close() })
		return m
	case <-time.After(d):
		t.Fatal("no terminal master on the console socket")
		return nil
	}
}

// buildStatic builds a static Go program from source (a main package of
// the standard library only), for what busybox has no applet for, and
// returns the binary.
func buildStatic(t *testing.T, name, source string) []byte {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "go.mod"), "module "+name+"\n\ngo 1.22\n")
	writeFile(t, filepath.Join(dir, "main.go"), source)
	cmd := exec.Command("go", "build", "-o", name, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
