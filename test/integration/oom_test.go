package integration

import (
	"bufio"
	"fmt"
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

	line := firstLineWith(t, v.cmd("events", "--interval", "1s", id), `"type":"oom"`, 90*time.Second)
	if !strings.Contains(line, id) {
		t.Errorf("oom event %q is not about %s", line, id)
	}
}

// firstLineWith starts cmd and returns the first line of its output that
// contains s, failing the test if none comes within d; cmd is killed.
func firstLineWith(t *testing.T, cmd *exec.Cmd, s string, d time.Duration) string {
	t.Helper()
	return waitLine(t, startLines(t, cmd, s), s, d)
}

// startLines starts cmd (killed when the test ends) and sends each line of
// its output that contains one of subs; the channel closes with the output.
func startLines(t *testing.T, cmd *exec.Cmd, subs ...string) <-chan string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	got := make(chan string, 64)
	go func() {
		defer close(got)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			for _, s := range subs {
				if strings.Contains(sc.Text(), s) {
					got <- sc.Text()
					break
				}
			}
		}
	}()
	return got
}

// waitLine returns the next line from lines that contains s, failing the
// test if none comes within d.
func waitLine(t *testing.T, lines <-chan string, s string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("output ended without a line with %q", s)
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-timeout:
			t.Fatalf("no line with %q within %s", s, d)
		}
	}
}

// The shim publishes TaskOOM, which containerd's event stream shows.
func TestOOMEventContainerd(t *testing.T) {
	c := startContainerd(t)
	img := c.importBusybox()
	// ctr events subscribes before the container exists.
	ev := exec.Command(filepath.Join(c.bin, "ctr"), "--address", c.sock(), "-n", c.ns, "events")
	lines := startLines(t, ev, "/tasks/oom", "/images/")
	// Subscribed once an event of ours comes through.
	subscribed := false
	for i := 0; i < 30 && !subscribed; i++ {
		c.ctrOK("images", "tag", "--force", img, fmt.Sprintf("docker.io/library/oom-sync:%d", i))
		select {
		case line := <-lines:
			subscribed = strings.Contains(line, "oom-sync")
		case <-time.After(time.Second):
		}
	}
	if !subscribed {
		t.Fatal("ctr events shows no event of an image tagged after it started")
	}
	c.ctrOK("run", "-d", "--runtime", "io.containerd.vz.v2", "--memory-limit", "67108864",
		"--mount", "type=tmpfs,src=tmpfs,dst=/mem,options=size=300m", img, "oom-ctr", "sh", "-c", fillMemory)
	defer c.ctr("", "task", "kill", "-s", "KILL", "oom-ctr")
	if line := waitLine(t, lines, "/tasks/oom", 120*time.Second); !strings.Contains(line, "oom-ctr") {
		t.Errorf("TaskOOM %q is not about oom-ctr", line)
	}
}
