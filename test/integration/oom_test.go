package integration

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fillMemory fills a tmpfs in the container past a 64 MiB limit: its pages
// are charged to the container's cgroup, so the guest's kernel OOM-kills.
const fillMemory = "sleep 1; dd if=/dev/zero of=/mem/fill bs=1M count=200; sleep 3600"

// An OOM kill in the guest is a runc-style event on `vzrun events`.
func TestOOMEventCLI(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", fillMemory)
	limit := int64(64 << 20)
	b.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/mem", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=300m"}})
	b.save(t)
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	defer v.run("", "delete", "--force", id)

	ev := v.cmd("events", "--interval", "1s", id)
	out, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ev.Process.Kill(); _ = ev.Wait() }()
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"type":"oom"`) {
				got <- sc.Text()
				return
			}
		}
		close(got)
	}()
	select {
	case line, ok := <-got:
		if !ok || !strings.Contains(line, id) {
			t.Fatalf("events ended without an oom event for %s (%q)", id, line)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("no oom event within 90s")
	}
}

// The shim publishes TaskOOM, which containerd's event stream shows.
func TestOOMEventContainerd(t *testing.T) {
	c := startContainerd(t)
	img := c.importBusybox()
	ev := exec.Command(filepath.Join(c.bin, "ctr"), "--address", c.sock(), "-n", c.ns, "events")
	out, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ev.Process.Kill(); _ = ev.Wait() }()
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "/tasks/oom") {
				got <- sc.Text()
				return
			}
		}
		close(got)
	}()
	c.ctrOK("run", "-d", "--runtime", "io.containerd.vz.v2", "--memory-limit", "67108864",
		"--mount", "type=tmpfs,src=tmpfs,dst=/mem,options=size=300m", img, "oom-ctr", "sh", "-c", fillMemory)
	defer c.ctr("", "task", "kill", "-s", "KILL", "oom-ctr")
	select {
	case line, ok := <-got:
		if !ok || !strings.Contains(line, "oom-ctr") {
			t.Fatalf("no TaskOOM for oom-ctr (%q)", line)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("no /tasks/oom event within 90s")
	}
}
