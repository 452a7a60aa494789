package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestRunBadInput checks that each kind of bad input gives a one-line error
// naming what is wrong, a non-zero exit, and leaves nothing behind (the
// cleanup of newVZ checks for state dirs and processes).
func TestRunBadInput(t *testing.T) {
	notJSON := func(t *testing.T, b *bundle) {
		writeFile(t, filepath.Join(b.Dir, "config.json"), "{\n  \"ociVersion\": \"1.2.0\",\n  \"process\": {\n")
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	writeFile(t, garbage, strings.Repeat("not a kernel\n", 1000))

	tests := []struct {
		name   string
		mutate func(t *testing.T, b *bundle)
		id     string
		bundle string
		env    []string
		want   []string
	}{
		{name: "missing bundle", bundle: "/nonexistent/bundle", want: []string{"/nonexistent/bundle", "does not exist"}},
		{name: "missing config", mutate: func(t *testing.T, b *bundle) { os.Remove(filepath.Join(b.Dir, "config.json")) }, want: []string{"config.json", "does not exist"}},
		{name: "invalid json", mutate: notJSON, want: []string{"config.json", "line 4", "unexpected end of JSON"}},
		{name: "wrong json type", mutate: func(t *testing.T, b *bundle) {
			writeFile(t, filepath.Join(b.Dir, "config.json"), `{"ociVersion": "1.2.0", "process": {"args": "sh"}}`)
		}, want: []string{"config.json", "args", "cannot unmarshal string"}},
		{name: "unreadable config", mutate: func(t *testing.T, b *bundle) {
			os.Remove(filepath.Join(b.Dir, "config.json"))
			os.Mkdir(filepath.Join(b.Dir, "config.json"), 0o755)
		}, want: []string{"config.json", "is a directory"}},
		{name: "missing rootfs", mutate: func(t *testing.T, b *bundle) { os.RemoveAll(b.rootfs()) }, want: []string{"root.path", "rootfs", "no such file"}},
		{name: "no args", mutate: func(t *testing.T, b *bundle) { b.Spec.Process.Args = nil; b.save(t) }, want: []string{"process.args is empty"}},
		{name: "sysctl of an interface the container lacks", mutate: func(t *testing.T, b *bundle) {
			// A network namespace of its own, with nothing in it (runc
			// refuses net sysctls without one).
			b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
			b.Spec.Linux.Sysctl = map[string]string{"net.ipv4.conf.eth0.rp_filter": "2"}
			b.save(t)
		}, want: []string{"open sysctl net.ipv4.conf.eth0.rp_filter file", "no such file"}},
		{name: "bad nics without a network namespace", mutate: func(t *testing.T, b *bundle) {
			var keep []specs.LinuxNamespace
			for _, ns := range b.Spec.Linux.Namespaces {
				if ns.Type != specs.NetworkNamespace {
					keep = append(keep, ns)
				}
			}
			b.Spec.Linux.Namespaces = keep
			b.annotate(t, "io.vzrun.nics", "abc")
		}, want: []string{"io.vzrun.nics", "want a number of NICs from 1 to 8"}},
		{name: "pid namespace path", mutate: func(t *testing.T, b *bundle) {
			for i, ns := range b.Spec.Linux.Namespaces {
				if ns.Type == specs.PIDNamespace {
					b.Spec.Linux.Namespaces[i].Path = "/proc/1/ns/pid"
				}
			}
			b.save(t)
		}, want: []string{"pid namespace /proc/1/ns/pid", "cannot join"}},
		{name: "too many bind directories", mutate: func(t *testing.T, b *bundle) {
			for i := range 25 {
				src := filepath.Join(b.Dir, fmt.Sprintf("src%d", i))
				os.Mkdir(src, 0o755)
				b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: fmt.Sprintf("/b%d", i), Type: "bind", Source: src, Options: []string{"rbind"}})
			}
			b.save(t)
		}, want: []string{"virtio devices", "its machine has 24", "bind-mount fewer directories"}},
		{name: "environment too large", mutate: func(t *testing.T, b *bundle) {
			b.Spec.Process.Env = append(b.Spec.Process.Env, "BIG="+strings.Repeat("x", 200<<10))
			b.save(t)
		}, want: []string{"process.env[", "argument list too long"}},
		{name: "bad id", id: "a/b", want: []string{`invalid container id "a/b"`}},
		{name: "bad annotation", mutate: func(t *testing.T, b *bundle) { b.annotate(t, "io.vzrun.memory", "lots") }, want: []string{"io.vzrun.memory", "lots"}},
		{name: "VM too small", mutate: func(t *testing.T, b *bundle) { b.annotate(t, "io.vzrun.memory", "64") }, want: []string{"io.vzrun.memory", "at least 128"}},
		{name: "VM larger than the host", mutate: func(t *testing.T, b *bundle) { b.annotate(t, "io.vzrun.memory", "10485760") }, want: []string{"io.vzrun.memory", "host's memory"}},
		{name: "bad template annotation", mutate: func(t *testing.T, b *bundle) { b.annotate(t, "io.vzrun.template", "maybe") }, want: []string{"io.vzrun.template", "maybe"}},
		{name: "bad rootfs mode", mutate: func(t *testing.T, b *bundle) { b.annotate(t, "io.vzrun.rootfs", "nfs") }, want: []string{"io.vzrun.rootfs", "nfs"}},
		{name: "missing kernel", env: []string{"VZRUN_KERNEL=/nonexistent/vmlinux"}, want: []string{"kernel", "/nonexistent/vmlinux"}},
		{name: "missing initrd", env: []string{"VZRUN_INITRD=/nonexistent/initrd.img"}, want: []string{"initrd", "/nonexistent/initrd.img"}},
		{name: "missing qemu", env: []string{"PATH=/nonexistent"}, want: []string{"qemu-system-x86_64 not found"}},
		{name: "qemu exits early", env: []string{"VZRUN_KERNEL=" + garbage}, want: []string{"qemu exited"}},
		{name: "guest dies in boot", env: []string{"VZRUN_INITRD=" + garbage}, want: []string{"qemu exited", "the guest console's last lines", "Kernel panic"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVZ(t)
			b := newBundle(t, "true")
			if tc.mutate != nil {
				tc.mutate(t, b)
			}
			dir := b.Dir
			if tc.bundle != "" {
				dir = tc.bundle
			}
			id := tc.id
			if id == "" {
				id = uniqueID(t)
			}
			cmd := v.cmd("run", "--bundle", dir, id)
			cmd.Env = append(cmd.Env, tc.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("vzrun run succeeded; want an error containing %q", tc.want)
			}
			msg := stderr.String()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if !strings.HasPrefix(msg, "vzrun: ") {
				t.Errorf("error %q does not start with vzrun:", msg)
			}
			if _, err := os.Stat(filepath.Join(v.root, id)); !os.IsNotExist(err) {
				t.Errorf("state dir of %s left behind", id)
			}
		})
	}
}

// An error goes to the --log file as well as stderr, as runc's does:
// callers read it there (containerd's runc shim reads log.json).
func TestErrorInLogFile(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "/no/such/binary")
	logPath := filepath.Join(t.TempDir(), "log.json")
	r := v.run("", "--log", logPath, "--log-format", "json", "run", "--bundle", b.Dir, uniqueID(t))
	if r.code == 0 || !strings.Contains(r.stderr, "/no/such/binary") {
		t.Fatalf("run of a missing binary: exit %d, stderr %q", r.code, r.stderr)
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["level"] == "error" && strings.Contains(fmt.Sprint(e["msg"]), "/no/such/binary") {
			found = true
		}
	}
	if !found {
		t.Errorf("the error is not in the --log file:\n%s", data)
	}
}

// Without root vzrun cannot make a VM's network namespace, tap or file
// server mounts: create and run say so before anything is made.
func TestCreateWithoutRoot(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "true")
	// A copy of vzrun that another user can run, wherever the checkout is.
	dir, err := os.MkdirTemp("", "vzrun-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "vzrun")
	data, err := os.ReadFile(vzrunBinary())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"run", "--bundle", b.Dir}, {"create", "--bundle", b.Dir}, {"run", "--detach", "--bundle", b.Dir}} {
		id := uniqueID(t)
		cmd := exec.CommandContext(v.ctx, bin, append(append([]string{"--root", v.root}, args...), id)...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("vzrun %v as nobody: %v (%s); want a failing exit", args, err, stderr.String())
		}
		if msg := stderr.String(); !strings.Contains(msg, "needs root") || !strings.Contains(msg, "rootless use is not supported") {
			t.Errorf("vzrun %v as nobody: error %q does not say it needs root", args, msg)
		}
		if _, err := os.Stat(filepath.Join(v.root, id)); !os.IsNotExist(err) {
			t.Errorf("vzrun %v as nobody left a state dir", args)
		}
	}
}

func TestRunDuplicateID(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done")
	id := uniqueID(t)
	first, _ := startReadyRun(t, v, b, id)
	r := v.run("", "run", "--bundle", b.Dir, id)
	if r.code == 0 || !strings.Contains(r.stderr, "container "+id+" already exists") {
		t.Errorf("second run with the same id: exit %d, stderr %q", r.code, r.stderr)
	}
	// The first container is untouched by the failed second run.
	st := v.state(id)
	if st["status"] != "running" {
		t.Errorf("state of the first container: %v", st)
	}
	_ = first.Process.Signal(syscall.SIGTERM)
	if err := first.Wait(); err != nil {
		t.Errorf("first run: %v", err)
	}
}

// TestKill9OfOwner kills the host process that owns a running container's
// VM; state must say stopped and delete must clean everything up.
func TestKill9OfOwner(t *testing.T) {
	for _, victim := range []string{"vzrun", "qemu"} {
		t.Run(victim, func(t *testing.T) {
			v := newVZ(t)
			b := newBundle(t, "sh", "-c", "echo ready; while :; do sleep 0.1; done")
			id := uniqueID(t)
			cmd, _ := startReadyRun(t, v, b, id)
			st := v.state(id)
			if st["status"] != "running" {
				t.Fatalf("state before the kill: %v", st)
			}
			pid := cmd.Process.Pid
			if int(st["pid"].(float64)) != pid {
				t.Errorf("state pid %v, want the owner of the VM, vzrun run (%d)", st["pid"], pid)
			}
			if victim == "qemu" {
				pid = 0
				for _, p := range processesMentioning(v.root) {
					if strings.Contains(p, "qemu-system") {
						fmt.Sscan(p, &pid)
					}
				}
				if pid == 0 {
					t.Fatal("no qemu process found")
				}
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if victim == "qemu" {
				// The foreground run notices its VM is gone, fails and
				// removes the container itself.
				if err := cmd.Wait(); err == nil {
					t.Errorf("vzrun run succeeded although its VM was killed")
				}
				return
			}
			_ = cmd.Wait()
			waitFor(t, 10*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
			v.runOK("delete", id)
		})
	}
}

func (v *vz) state(id string) map[string]any {
	v.t.Helper()
	r := v.runOK("state", id)
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		v.t.Fatalf("state output %q: %v", r.stdout, err)
	}
	return st
}

// State dirs that cannot be read (garbage in state.json, none at all) are
// named by list, which lists the rest, and go with delete --force, as with
// runc.
func TestBrokenStateDirs(t *testing.T) {
	v := newVZ(t)
	for name, state := range map[string]string{"garbage": "{not json", "empty": ""} {
		dir := filepath.Join(v.root, name)
		if err := os.MkdirAll(dir, 0o711); err != nil {
			t.Fatal(err)
		}
		if state != "" {
			writeFile(t, filepath.Join(dir, "state.json"), state)
		}
	}
	r := v.run("", "list")
	if r.code != 0 || !strings.Contains(r.stderr, "load container garbage") || !strings.Contains(r.stderr, "load container empty") {
		t.Errorf("list: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, name := range []string{"garbage", "empty"} {
		if r := v.run("", "delete", name); r.code == 0 {
			t.Errorf("delete %s without --force: exit 0", name)
		}
		v.runOK("delete", "--force", name)
		if _, err := os.Stat(filepath.Join(v.root, name)); !os.IsNotExist(err) {
			t.Errorf("%s after delete --force: %v", name, err)
		}
	}
}
