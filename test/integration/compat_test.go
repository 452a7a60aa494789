package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Behaviour of runc that its own bats suite checks and callers rely on.

// A foreground run is a container like any other for the other commands:
// state, ps, exec and kill reach it from another shell.
func TestForegroundRunFromAnotherShell(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sleep", "1000")
	id := uniqueID(t)
	cmd := v.cmd("run", "--bundle", b.Dir, id)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	waitFor(t, 60*time.Second, func() bool {
		r := v.run("", "state", id)
		return r.code == 0 && strings.Contains(r.stdout, `"running"`)
	})
	if r := v.runOK("ps", "--format", "json", id); !strings.Contains(r.stdout, "[") || strings.TrimSpace(r.stdout) == "[]" {
		t.Errorf("ps of a foreground run: %q", r.stdout)
	}
	if r := v.runOK("exec", id, "echo", "from-another-shell"); r.stdout != "from-another-shell\n" {
		t.Errorf("exec into a foreground run: %q", r.stdout)
	}
	v.runOK("kill", id, "KILL")
	select {
	case err := <-done:
		if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 128+int(syscall.SIGKILL) {
			t.Errorf("foreground run after kill KILL: %v, want exit 137; stderr %s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("foreground run did not end after kill KILL")
	}
}

// runc clears ONLCR on a terminal it relays itself, so a foreground run or
// exec with a terminal prints "\n", not "\r\n"; on a terminal handed over
// with --console-socket the caller gets the pty as it is.
func TestTerminalNewlines(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo a; echo b")
	b.Spec.Process.Terminal = true
	b.save(t)
	if r := v.runOK("run", "--bundle", b.Dir, uniqueID(t)); r.stdout != "a\nb\n" {
		t.Errorf("run with a terminal printed %q, want %q", r.stdout, "a\nb\n")
	}

	b = newBundle(t, "sleep", "1000")
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	defer v.run("", "delete", "--force", id)
	if r := v.runOK("exec", "--tty", id, "sh", "-c", "echo c; echo d"); r.stdout != "c\nd\n" {
		t.Errorf("exec --tty printed %q, want %q", r.stdout, "c\nd\n")
	}
	// An ended exec's terminal is freed, as with runc: none is left in
	// the guest's /dev/pts.
	v.runOK("exec", "--tty", id, "true")
	if r := v.runOK("exec", id, "ls", "/dev/pts"); r.stdout != "ptmx\n" {
		t.Errorf("/dev/pts after two exec --tty: %q, want only ptmx", r.stdout)
	}
	// Over a console socket, with the process's consoleSize: the pty
	// starts with that size (runc sizes its pty so), and keeps ONLCR.
	sock := newConsoleSocket(t)
	proc := specs.Process{Terminal: true, ConsoleSize: &specs.Box{Height: 10, Width: 110},
		Args: []string{"sh", "-c", "stty size; echo e"}, Cwd: "/", Env: []string{"PATH=/bin"}}
	pj, _ := json.Marshal(proc)
	pf := filepath.Join(t.TempDir(), "process.json")
	writeFile(t, pf, string(pj))
	execDone := make(chan result, 1)
	go func() {
		execDone <- v.run("", "exec", "--detach", "--console-socket", sock.Path(), "--process", pf, id)
	}()
	master := sock.master(t, 60*time.Second)
	var out syncBuffer
	go func() { _, _ = io.Copy(&out, master) }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "e\r\n") {
		if time.Now().After(deadline) {
			t.Fatalf("exec over a console socket: got %q so far", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := out.String(); got != "10 110\r\ne\r\n" {
		t.Errorf("exec over a console socket printed %q, want %q", got, "10 110\r\ne\r\n")
	}
	if r := <-execDone; r.code != 0 {
		t.Errorf("exec --console-socket: exit %d: %s", r.code, r.stderr)
	}
	// As runc, a console socket is for a detached exec only.
	if r := v.run("", "exec", "--tty", "--console-socket", sock.Path(), id, "true"); r.code == 0 || !strings.Contains(r.stderr, "cannot use console socket") {
		t.Errorf("exec --console-socket without --detach: exit %d, %q", r.code, r.stderr)
	}
}

// As runc, a created container (its process not started) takes execs.
// exec's flags work as runc's, and without them an exec gets the
// container's environment, working directory and user.
func TestExecFlags(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sleep", "1000")
	b.Spec.Process.Env = append(b.Spec.Process.Env, "FROM_SPEC=spec")
	b.Spec.Process.Cwd = "/home/nobody"
	b.Spec.Process.User = specs.User{UID: 65534, GID: 65534}
	b.save(t)
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	defer v.run("", "delete", "--force", id)
	for _, c := range []struct {
		flags, args []string
		want        string
	}{
		{nil, []string{"sh", "-c", "echo $FROM_SPEC $(pwd) $(id -u):$(id -g)"}, "spec /home/nobody 65534:65534\n"},
		{[]string{"--env", "EXTRA=x", "--cwd", "/tmp", "--user", "0:0"}, []string{"sh", "-c", "echo $FROM_SPEC $EXTRA $(pwd) $(id -u):$(id -g)"}, "spec x /tmp 0:0\n"},
		{[]string{"--user", "1000:1001", "--additional-gids", "5"}, []string{"id"}, "uid=1000 gid=1001 groups=5\n"},
		{[]string{"--user", "0", "--cap", "CAP_SYS_ADMIN"}, []string{"sh", "-c", "grep CapEff /proc/self/status"}, ""},
	} {
		r := v.run("", append(append(append([]string{"exec"}, c.flags...), id), c.args...)...)
		if r.code != 0 {
			t.Errorf("exec %v: exit %d: %s", c.args, r.code, r.stderr)
			continue
		}
		if c.want != "" && r.stdout != c.want {
			t.Errorf("exec %v: %q, want %q", c.args, r.stdout, c.want)
		}
		if strings.Contains(strings.Join(c.flags, " "), "CAP_SYS_ADMIN") {
			var eff uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(r.stdout, "CapEff:")), "%x", &eff); err != nil || eff&(1<<21) == 0 {
				t.Errorf("exec --cap CAP_SYS_ADMIN: %q: CAP_SYS_ADMIN (bit 21) not effective", r.stdout)
			}
		}
	}
	if r := v.run("", "exec", id, "/no/such/binary"); r.code == 0 || !strings.Contains(r.stderr, "/no/such/binary") {
		t.Errorf("exec of a missing binary: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestExecIntoCreated(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo started > /tmp/mark; sleep 1000")
	id := uniqueID(t)
	v.detach("create", "--bundle", b.Dir, id)
	defer v.run("", "delete", "--force", id)
	if r := v.runOK("exec", id, "sh", "-c", "cat /tmp/mark 2>/dev/null || echo not-started"); r.stdout != "not-started\n" {
		t.Errorf("exec into a created container: %q", r.stdout)
	}
	if st := v.state(id)["status"]; st != "created" {
		t.Errorf("state after the exec: %v, want created", st)
	}
	v.runOK("start", id)
	waitFor(t, 30*time.Second, func() bool {
		return v.run("", "exec", id, "cat", "/tmp/mark").stdout == "started\n"
	})
}

// Hooks fail as in runc: the error names the kind and index, and a
// failing poststart hook fails the run (runc's behaviour; the spec asks
// only for a warning). A createContainer hook's path missing from the
// guest's runtime root is the container's.
func TestHookFailures(t *testing.T) {
	v := newVZ(t)
	for _, kind := range []string{"prestart", "createRuntime", "createContainer", "poststart"} {
		t.Run(kind, func(t *testing.T) {
			// After a failing poststart hook runc kills the process: one
			// that would run for long shows it.
			b := newBundle(t, "sh", "-c", "echo the-process-ran; exec sleep 1000")
			hooks := []specs.Hook{{Path: "/bin/true"}, {Path: "/bin/false"}}
			b.Spec.Hooks = &specs.Hooks{}
			switch kind {
			case "prestart":
				//lint:ignore SA1019 prestart is deprecated but still honoured
				b.Spec.Hooks.Prestart = hooks
			case "createRuntime":
				b.Spec.Hooks.CreateRuntime = hooks
			case "createContainer":
				b.Spec.Hooks.CreateContainer = hooks
			case "poststart":
				b.Spec.Hooks.Poststart = hooks
			}
			// As runc, the container is destroyed and its poststop hooks
			// run (they undo what the hooks before did).
			mark := filepath.Join(t.TempDir(), "poststop-ran")
			b.Spec.Hooks.Poststop = []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "touch " + mark}}}
			b.save(t)
			start := time.Now()
			r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
			if _, err := os.Stat(mark); err != nil {
				t.Errorf("poststop hooks did not run after a failing %s hook", kind)
			}
			if took := time.Since(start); took > 2*time.Minute {
				t.Errorf("run with a failing %s hook took %s: the process was not killed", kind, took)
			}
			if r.code == 0 || !strings.Contains(r.stderr, "error running "+kind+" hook #1:") {
				t.Errorf("run with a failing %s hook: exit %d, stderr %q", kind, r.code, r.stderr)
			}
			if kind != "poststart" && strings.Contains(r.stdout, "the-process-ran") {
				t.Errorf("the process ran despite a failing %s hook", kind)
			}
		})
	}
	// create + start: the start fails and the container is gone, its
	// poststop hooks run (runc runs poststart hooks in create, and a
	// failed create leaves nothing behind).
	t.Run("poststart after create", func(t *testing.T) {
		b := newBundle(t, "sleep", "1000")
		mark := filepath.Join(t.TempDir(), "poststop-ran")
		b.Spec.Hooks = &specs.Hooks{
			Poststart: []specs.Hook{{Path: "/bin/false"}},
			Poststop:  []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "touch " + mark}}},
		}
		b.save(t)
		id := uniqueID(t)
		v.detach("create", "--bundle", b.Dir, id)
		if r := v.run("", "start", id); r.code == 0 || !strings.Contains(r.stderr, "error running poststart hook #0:") {
			t.Errorf("start with a failing poststart hook: exit %d, stderr %q", r.code, r.stderr)
		}
		if r := v.run("", "state", id); r.code == 0 {
			t.Errorf("state after the failed start: %s; want the container gone", r.stdout)
		}
		if _, err := os.Stat(mark); err != nil {
			t.Errorf("poststop hooks did not run after the failed start")
		}
	})
}

// As runc: a failing poststop hook is logged and the run still exits with
// the container's status; a hook past its timeout says so.
func TestHookPoststopFailureAndTimeout(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "true")
	b.Spec.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/false"}}}
	b.save(t)
	if r := v.run("", "run", "--bundle", b.Dir, uniqueID(t)); r.code != 0 || !strings.Contains(r.stderr, "poststop") {
		t.Errorf("run with a failing poststop hook: exit %d, stderr %q; want 0 and a warning", r.code, r.stderr)
	}
	one := 1
	b = newBundle(t, "true")
	//lint:ignore SA1019 prestart is deprecated but still honoured
	b.Spec.Hooks = &specs.Hooks{Prestart: []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "30"}, Timeout: &one}}}
	b.save(t)
	if r := v.run("", "run", "--bundle", b.Dir, uniqueID(t)); r.code == 0 || !strings.Contains(r.stderr, "hook ran past specified timeout of 1.0s") {
		t.Errorf("run with a prestart hook past its timeout: exit %d, stderr %q", r.code, r.stderr)
	}
}

// --debug shows the guest runc's own debug lines, and runc's warnings
// reach the caller without it.
func TestGuestRuncLog(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "true")
	r := v.runOK("--debug", "run", "--bundle", b.Dir, uniqueID(t))
	for _, want := range []string{"level=debug", "nsexec container setup", "guest=runc"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("--debug run: stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	logFile := filepath.Join(t.TempDir(), "log.json")
	v.runOK("--debug", "--log", logFile, "--log-format", "json", "run", "--bundle", b.Dir, uniqueID(t))
	data, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(data), `"level":"debug"`) || !strings.Contains(string(data), "child process in init()") {
		t.Errorf("--log --log-format json lacks the guest runc's debug lines (%v):\n%s", err, data)
	}

	b = newBundle(t, "true")
	b.Spec.Process.Capabilities.Inheritable = []string{"CAP_KILL"}
	b.Spec.Process.Capabilities.Ambient = []string{"CAP_KILL", "CAP_CHOWN"}
	b.save(t)
	if r := v.runOK("run", "--bundle", b.Dir, uniqueID(t)); !strings.Contains(r.stderr, "can't raise ambient capability CAP_CHOWN") {
		t.Errorf("runc's warning did not reach stderr: %q", r.stderr)
	}
}

// Read-only paths that are special files: runc's remount statfs()es them,
// which a VM restored from a template (root over 9p) has to make work.
func TestReadonlySpecialFiles(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", `for f in ro-dev ro-fifo; do grep " /$f " /proc/self/mountinfo | cut -d" " -f5,6 | tail -n1; done`)
	if err := unix.Mknod(filepath.Join(b.rootfs(), "ro-dev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(b.rootfs(), "ro-fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Spec.Linux.ReadonlyPaths = append(b.Spec.Linux.ReadonlyPaths, "/ro-dev", "/ro-fifo")
	b.save(t)
	r := v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	// Each path's top mount (the last line) is read-only.
	if !strings.HasPrefix(r.stdout, "/ro-dev ro,") || !strings.Contains(r.stdout, "\n/ro-fifo ro,") {
		t.Errorf("mountinfo of the read-only paths:\n%s\nwant both ro", r.stdout)
	}
}

// A container makes FIFOs, unix sockets and device nodes on its rootfs and
// changes owners there, whether its VM was restored from a template
// (rootfs over 9p) or booted cold (virtio-fs); the host's rootfs has them.
func TestSpecialFilesOnRootfs(t *testing.T) {
	usock := buildUnixSocketProbe(t)
	for _, tc := range []struct {
		name        string
		annotations []string
	}{
		{name: "default"},
		{name: "cold-boot", annotations: []string{"io.vzrun.template", "false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVZ(t)
			b := newBundle(t, "sh", "-c", "mkfifo -m 0640 /var-fifo && mknod /var-null c 1 3 && echo x > /var-null && mkdir /owned && chown 1000:1001 /owned && /usock /var-sock && echo made")
			caps := append(b.Spec.Process.Capabilities.Bounding, "CAP_MKNOD")
			b.Spec.Process.Capabilities.Bounding, b.Spec.Process.Capabilities.Effective, b.Spec.Process.Capabilities.Permitted = caps, caps, caps
			b.save(t)
			if tc.annotations != nil {
				b.annotate(t, tc.annotations...)
			}
			if err := os.WriteFile(filepath.Join(b.rootfs(), "usock"), usock, 0o755); err != nil {
				t.Fatal(err)
			}
			if r := v.runOK("run", "--bundle", b.Dir, uniqueID(t)); r.stdout != "unix socket answered\nmade\n" {
				t.Fatalf("stdout %q stderr %q, want the socket's answer and made", r.stdout, r.stderr)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(b.rootfs(), "var-fifo"), &st); err != nil || st.Mode != unix.S_IFIFO|0o640 {
				t.Errorf("var-fifo on the host: mode %o (%v), want a FIFO 0640", st.Mode, err)
			}
			if err := unix.Lstat(filepath.Join(b.rootfs(), "var-sock"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				t.Errorf("var-sock on the host: mode %o (%v), want a socket", st.Mode, err)
			}
			if err := unix.Lstat(filepath.Join(b.rootfs(), "var-null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
				t.Errorf("var-null on the host: mode %o rdev %x (%v), want the character device 1:3", st.Mode, st.Rdev, err)
			}
			if err := unix.Lstat(filepath.Join(b.rootfs(), "owned"), &st); err != nil || st.Uid != 1000 || st.Gid != 1001 {
				t.Errorf("owned on the host: %d:%d (%v), want 1000:1001", st.Uid, st.Gid, err)
			}
		})
	}
}

// buildUnixSocketProbe builds a static program (busybox has none) that
// listens on the unix socket named by its argument, connects to it and
// prints what it was sent; it returns the binary.
func buildUnixSocketProbe(t *testing.T) []byte {
	t.Helper()
	return buildStatic(t, "usock", `package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	l, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("unix socket answered"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b := make([]byte, 64)
	n, _ := c.Read(b)
	fmt.Println(string(b[:n]))
}
`)
}

// An empty seccomp flags list means no flags to runc, a missing one its
// default (SPEC_ALLOW): the spec must reach the guest's runc as written.
func TestSeccompFlagsAsWritten(t *testing.T) {
	v := newVZ(t)
	type testCase struct {
		name  string
		flags []specs.LinuxSeccompFlag
		want  string
	}
	cases := []testCase{
		{"empty", []specs.LinuxSeccompFlag{}, `seccomp filter flags: 0"`},
		{"missing", nil, `seccomp filter flags: 4"`},
	}
	// Every flag `vzrun features` says is supported works in the guest.
	var f struct {
		Linux struct {
			Seccomp struct{ SupportedFlags []string }
		}
	}
	if err := json.Unmarshal([]byte(v.runOK("features").stdout), &f); err != nil {
		t.Fatal(err)
	}
	// runc accepts TSYNC and ignores it (its init is single-threaded then).
	value := map[string]int{"SECCOMP_FILTER_FLAG_TSYNC": 0, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
	for _, flag := range f.Linux.Seccomp.SupportedFlags {
		n, ok := value[flag]
		if !ok {
			t.Errorf("features lists %s, which this test does not know", flag)
			continue
		}
		cases = append(cases, testCase{flag, []specs.LinuxSeccompFlag{specs.LinuxSeccompFlag(flag)}, fmt.Sprintf(`seccomp filter flags: %d"`, n)})
	}
	if len(f.Linux.Seccomp.SupportedFlags) == 0 {
		t.Error("features lists no supported seccomp flags")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t, "true")
			b.Spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: tc.flags,
				Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdirat"}, Action: specs.ActErrno}}}
			b.save(t)
			if tc.flags != nil && len(tc.flags) == 0 {
				// encoding/json drops the empty list (omitempty): write it.
				path := filepath.Join(b.Dir, "config.json")
				var doc map[string]any
				data, err := os.ReadFile(path)
				if err == nil {
					err = json.Unmarshal(data, &doc)
				}
				if err != nil {
					t.Fatal(err)
				}
				doc["linux"].(map[string]any)["seccomp"].(map[string]any)["flags"] = []any{}
				data, _ = json.Marshal(doc)
				writeFile(t, path, string(data))
			}
			if r := v.runOK("--debug", "run", "--bundle", b.Dir, uniqueID(t)); !strings.Contains(r.stderr, tc.want) {
				t.Errorf("guest runc's log lacks %q: %s", tc.want, regexp.MustCompile(`seccomp filter flags: [0-9]+`).FindString(r.stderr))
			}
		})
	}
}
