package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	vzshim "github.com/vzrun/vzrun/shim"
)

// containerdBin finds the pinned containerd and ctr that `make test-deps`
// installs ($CONTAINERD_BIN or the cache).
func containerdBin(t *testing.T) string {
	t.Helper()
	dir := pinnedDir(t, "CONTAINERD_BIN", "containerd-v2.4.2")
	for _, b := range []string{"containerd", "ctr"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true but %s is missing (make test-deps)", b)
			}
			t.Skipf("%s not installed (make test-deps)", b)
		}
	}
	return dir
}

// ctrd is a private containerd for one test.
type ctrd struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	bin  string
	ns   string
	cmd  *exec.Cmd
	logs *os.File
}

// pinnedDir is where `make test-deps` put a pinned peer: $env, which
// `make test` sets from the Makefile's versions, or else (go test run by
// hand) the cache directory named dflt. Under CI the Makefile must say, so
// a version bump cannot leave the tests on an old build in the cache.
func pinnedDir(t *testing.T, env, dflt string) string {
	t.Helper()
	if dir := os.Getenv(env); dir != "" {
		return dir
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but $%s is not set: run the tests through make test", env)
	}
	cache := os.Getenv("VZRUN_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "vzrun")
	}
	return filepath.Join(cache, dflt)
}

func startContainerd(t *testing.T) *ctrd {
	t.Helper()
	return startContainerdFrom(t, containerdBin(t))
}

// startContainerdFrom starts the containerd and ctr in bin; its config
// (version 3) suits containerd 2.0 and later.
func startContainerdFrom(t *testing.T, bin string) *ctrd {
	t.Helper()
	requiresVM(t)
	dir, err := os.MkdirTemp("", "vzrun-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	// A namespace of its own keeps the shim's state (StateRoot/NAMESPACE)
	// apart from other runs on the machine, and tells what this one left.
	c := &ctrd{t: t, ctx: testContext(t), dir: dir, bin: bin, ns: "vzrun-test-" + strings.TrimPrefix(filepath.Base(dir), "vzrun-ctrd-")}
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
	// containerd goes with the test binary, even if a timeout kills it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The shim is found on containerd's PATH, the guest next to the shim.
	c.cmd.Env = append(os.Environ(), "PATH="+filepath.Join(repoRoot, "_output", "bin")+":"+os.Getenv("PATH"))
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	waitFor(t, 30*time.Second, func() bool { _, err := os.Stat(c.sock()); return err == nil })
	c.ctrOK("version")
	return c
}

func (c *ctrd) sock() string { return filepath.Join(c.dir, "containerd.sock") }

func (c *ctrd) ctr(stdin string, args ...string) (string, string, int) {
	cmd := exec.CommandContext(c.ctx, filepath.Join(c.bin, "ctr"), append([]string{"--address", c.sock(), "-n", c.ns}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("ctr %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (c *ctrd) ctrOK(args ...string) string {
	c.t.Helper()
	out, errs, code := c.ctr("", args...)
	if code != 0 {
		c.t.Fatalf("ctr %v: exit %d: %s%s", args, code, out, errs)
	}
	return out
}

func (c *ctrd) stop() {
	// Whatever the test left, containerd cleans up through the shim first.
	out, _, _ := c.ctr("", "task", "ls", "-q")
	for _, id := range strings.Fields(out) {
		c.ctr("", "task", "kill", "-s", "KILL", id)
		time.Sleep(time.Second)
		c.ctr("", "task", "rm", "-f", id)
	}
	out, _, _ = c.ctr("", "container", "ls", "-q")
	for _, id := range strings.Fields(out) {
		c.ctr("", "container", "rm", id)
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	c.logs.Close()
	// This containerd's shims name its socket (-address), so the machine's
	// other containerds and builds are not taken for ours.
	if procs := processesMentioning(filepath.Join(c.dir, "")); len(procs) > 0 {
		c.t.Errorf("processes (shims, virtiofsd) left behind: %v", procs)
		killListed(procs)
	}
	// QEMU names its state dir on its command line; virtiofsd names c.dir.
	state := filepath.Join(vzshim.StateRoot, c.ns)
	if procs := processesMentioning(state + "/"); len(procs) > 0 {
		c.t.Errorf("VMs left behind: %v", procs)
		killListed(procs)
	}
	if err := os.Remove(state); err != nil && !os.IsNotExist(err) {
		left, _ := os.ReadDir(state)
		c.t.Errorf("shim state left behind in %s: %v", state, left)
	}
	// Snapshots, and the rootfs a shim that was killed left mounted.
	unmountUnder(c.dir)
	if c.t.Failed() {
		b, _ := os.ReadFile(c.logs.Name())
		c.t.Logf("containerd log (tail):\n%s", lastN(string(b), 40))
	}
	_ = os.RemoveAll(c.dir)
}

func lastN(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// importBusybox builds a one-layer OCI image of busybox-static by hand and
// imports it; it returns the image name.
func (c *ctrd) importBusybox() string {
	t := c.t
	t.Helper()
	const name = "localhost/vzrun-test/busybox:latest"
	files, _ := busyboxLayout(t, name)
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	aw := tar.NewWriter(f)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		b := files[name]
		aw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
		aw.Write(b)
	}
	aw.Close()
	f.Close()
	c.ctrOK("image", "import", archive)
	return name
}

// busyboxLayout is an OCI image layout of a busybox-static image named
// name (its files by path), and its manifest's digest.
func busyboxLayout(t *testing.T, name string) (map[string][]byte, string) {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	add := func(h *tar.Header, data []byte) {
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if data != nil {
			tw.Write(data)
		}
	}
	for _, d := range []string{"bin/", "etc/", "tmp/", "root/", "proc/", "sys/", "dev/"} {
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))}, bb)
	out, _ := exec.Command("/bin/busybox", "--list").Output()
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
		}
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
	add(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd))}, passwd)
	group := []byte("root:x:0:\nnobody:x:65534:\n")
	add(&tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(group))}, group)
	tw.Close()
	diffID := fmt.Sprintf("sha256:%x", sha256.Sum256(layer.Bytes()))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layer.Bytes())
	zw.Close()

	blobs := map[string][]byte{}
	desc := func(mediaType string, b []byte) map[string]any {
		d := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		blobs[d] = b
		return map[string]any{"mediaType": mediaType, "digest": d, "size": len(b)}
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", cfg),
		"layers": []any{desc("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes())},
	})
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{md}})

	files := map[string][]byte{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`), "index.json": index}
	for d, b := range blobs {
		files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] = b
	}
	return files, md["digest"].(string)
}

func TestContainerdCtrRun(t *testing.T) {
	c := startContainerd(t)
	img := c.importBusybox()
	out, errs, code := c.ctr("", "run", "--rm", "--runtime", "io.containerd.vz.v2", img, "ctr-echo", "sh", "-c", "echo hi from $(uname -r); exit 3")
	if code != 3 || !strings.Contains(out, "hi from") || !strings.Contains(out, "-vzrun") {
		t.Fatalf("ctr run: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestContainerdTaskLifecycle(t *testing.T) {
	c := startContainerd(t)
	img := c.importBusybox()
	c.ctrOK("run", "-d", "--runtime", "io.containerd.vz.v2", img, "life", "sh", "-c", "echo $$ > /tmp/pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done")
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(c.ctrOK("task", "ls"), "RUNNING") })
	if out := c.ctrOK("task", "exec", "--exec-id", "e1", "life", "sh", "-c", "echo exec-ok; cat /tmp/pid"); !strings.Contains(out, "exec-ok") {
		t.Errorf("task exec: %q", out)
	}
	// An exec id is free again once its exec was deleted (ctr deletes
	// it), as with runc's shim: the guest's agent forgets it too.
	if out := c.ctrOK("task", "exec", "--exec-id", "e1", "life", "echo", "again"); !strings.Contains(out, "again") {
		t.Errorf("task exec with a reused id: %q", out)
	}
	// Figures from the container's cgroup in the guest, not zeros.
	m := c.ctrOK("task", "metrics", "life")
	for _, metric := range []string{"pids.current", "cpu.usage_usec", "memory.usage"} {
		var v uint64
		for _, line := range strings.Split(m, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == metric {
				fmt.Sscan(f[1], &v)
			}
		}
		if v == 0 {
			t.Errorf("task metrics: %s is 0 or missing:\n%s", metric, m)
		}
	}
	c.ctrOK("task", "pause", "life")
	if !strings.Contains(c.ctrOK("task", "ls"), "PAUSED") {
		t.Errorf("task ls after pause: %s", c.ctrOK("task", "ls"))
	}
	// Refused in the runc shim's words.
	if _, errs, code := c.ctr("", "task", "exec", "--exec-id", "p1", "life", "true"); code == 0 || !strings.Contains(errs, "cannot exec in a paused state") {
		t.Errorf("exec in a paused task: exit %d, %q", code, errs)
	}
	c.ctrOK("task", "resume", "life")
	if ls := c.ctrOK("task", "ls"); !strings.Contains(ls, "RUNNING") {
		t.Errorf("task ls after resume: %s", ls)
	}
	counter := func() int {
		n, _ := strconv.Atoi(strings.TrimSpace(c.ctrOK("task", "exec", "--exec-id", fmt.Sprintf("n%d", time.Now().UnixNano()), "life", "cat", "/tmp/n")))
		return n
	}
	resumed := counter()
	waitFor(t, 30*time.Second, func() bool { return counter() > resumed })
	if ps := c.ctrOK("task", "ps", "life"); len(strings.Fields(ps)) < 3 {
		t.Errorf("task ps: %q", ps)
	}
	c.ctrOK("task", "kill", "-s", "KILL", "life")
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(c.ctrOK("task", "ls"), "STOPPED") })
	c.ctrOK("task", "rm", "life")
	c.ctrOK("container", "rm", "life")
}
