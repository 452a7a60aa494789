package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The test binary is a subreaper, as containerd's shims are: the process
// whose pid vzrun writes to --pid-file becomes our child once vzrun exits,
// and we learn the container's exit status by waiting for it.
func init() {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startInBackground starts cmd and makes sure it is gone when the test
// ends, before the test's other clean-ups (which check nothing is left).
func startInBackground(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// startDetachingInBackground is startInBackground for a command that
// leaves a process behind holding its stdio (create, run -d): that gets
// /dev/null, a file, since on a pipe Wait would wait for that process too.
func startDetachingInBackground(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devNull.Close() })
	cmd.Stdout, cmd.Stderr = devNull, devNull
	startInBackground(t, cmd)
}

// pipes gives a vzrun command stdio pipes the way containerd's runc shim
// does, and collects what comes out after vzrun itself has exited.
type pipes struct {
	stdinW         *os.File
	stdout, stderr syncBuffer
	files          []*os.File
	done           sync.WaitGroup
}

func withPipes(t *testing.T, cmd *exec.Cmd) *pipes {
	t.Helper()
	p := &pipes{}
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	p.stdinW = inW
	p.files = []*os.File{inR, outW, errW}
	for _, c := range []struct {
		r *os.File
		w io.Writer
	}{{outR, &p.stdout}, {errR, &p.stderr}} {
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			_, _ = io.Copy(c.w, c.r)
			c.r.Close()
		}()
	}
	return p
}

// started closes our copies of the child's ends.
func (p *pipes) started() {
	for _, f := range p.files {
		f.Close()
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %q: %v", b, err)
	}
	return pid
}

// waitChild waits for a reparented child and returns its exit status the
// way containerd computes it (128+signal when signalled).
func waitChild(t *testing.T, pid int, timeout time.Duration) int {
	t.Helper()
	type res struct {
		ws  unix.WaitStatus
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		ch <- res{ws, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("wait4(%d): %v", pid, r.err)
		}
		if r.ws.Signaled() {
			return 128 + int(r.ws.Signal())
		}
		return r.ws.ExitStatus()
	case <-time.After(timeout):
		t.Fatalf("pid %d did not exit within %s", pid, timeout)
	}
	return -1
}

// TestRuncShimFlow drives vzrun exactly as containerd's runc shim drives
// runc (BinaryName = vzrun).
func TestRuncShimFlow(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo init-out; echo init-err >&2; read line; echo got:$line; trap 'exit 9' TERM; echo waiting; while :; do sleep 0.1; done")
	id := uniqueID(t)
	cmd := v.cmd("--log", filepath.Join(b.Dir, "log.json"), "--log-format", "json",
		"create", "--bundle", b.Dir, "--pid-file", filepath.Join(b.Dir, "init.pid"), id)
	p := withPipes(t, cmd)
	if out, err := runQuiet(cmd); err != nil {
		t.Fatalf("create: %v %s", err, out)
	}
	p.started()
	pid := readPid(t, filepath.Join(b.Dir, "init.pid"))
	st := v.state(id)
	if st["status"] != "created" || int(st["pid"].(float64)) != pid {
		t.Fatalf("state after create: %v (pid file %d)", st, pid)
	}
	if strings.Contains(p.stdout.String(), "init-out") {
		t.Fatalf("process ran before start")
	}
	v.runOK("start", id)
	if st := v.state(id); st["status"] != "running" {
		t.Errorf("state after start: %v", st)
	}
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(p.stdout.String(), "init-out") })
	p.stdinW.Write([]byte("hello\n"))
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(p.stdout.String(), "waiting") })
	if got := p.stdout.String(); got != "init-out\ngot:hello\nwaiting\n" {
		t.Errorf("stdout %q", got)
	}

	// exec --process P --detach --pid-file F, as the shim does.
	proc := specs.Process{Args: []string{"sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"}, Cwd: "/", Env: []string{"PATH=/bin"}}
	pj, _ := json.Marshal(proc)
	procFile := filepath.Join(t.TempDir(), "process.json")
	writeFile(t, procFile, string(pj))
	ecmd := v.cmd("--log", filepath.Join(b.Dir, "log.json"), "--log-format", "json",
		"exec", "--process", procFile, "--detach", "--pid-file", filepath.Join(b.Dir, "exec.pid"), id)
	ep := withPipes(t, ecmd)
	if out, err := runQuiet(ecmd); err != nil {
		t.Fatalf("exec: %v %s", err, out)
	}
	ep.started()
	epid := readPid(t, filepath.Join(b.Dir, "exec.pid"))
	if status := waitChild(t, epid, 60*time.Second); status != 3 {
		t.Errorf("exec status %d, want 3", status)
	}
	ep.done.Wait()
	if ep.stdout.String() != "exec-out\n" || ep.stderr.String() != "exec-err\n" {
		t.Errorf("exec stdout %q stderr %q", ep.stdout.String(), ep.stderr.String())
	}

	v.runOK("kill", id, "15")
	if status := waitChild(t, pid, 60*time.Second); status != 9 {
		t.Errorf("init exit status %d, want 9", status)
	}
	p.done.Wait()
	if p.stderr.String() != "init-err\n" {
		t.Errorf("stderr %q", p.stderr.String())
	}
	if st := v.state(id); st["status"] != "stopped" {
		t.Errorf("state after exit: %v", st)
	}
	v.runOK("delete", id)
}

func runQuiet(cmd *exec.Cmd) (string, error) {
	var buf bytes.Buffer
	if cmd.Stderr == nil {
		cmd.Stderr = &buf
	}
	err := cmd.Run()
	return buf.String(), err
}

// TestRunKeepLikeBuildKit is BuildKit's OCI worker: run --keep, then delete.
func TestRunKeepLikeBuildKit(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo built > /root/artifact; exit 4")
	id := uniqueID(t)
	r := v.run("", "run", "--bundle", b.Dir, "--keep", id)
	if r.code != 4 {
		t.Fatalf("run --keep: exit %d, stderr %s", r.code, r.stderr)
	}
	if st := v.state(id); st["status"] != "stopped" {
		t.Errorf("state after run --keep: %v", st)
	}
	v.runOK("delete", id)
	if got, _ := os.ReadFile(filepath.Join(b.rootfs(), "root", "artifact")); string(got) != "built\n" {
		t.Errorf("artifact %q", got)
	}
}

func TestRunDetachAndTerminal(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh")
	b.Spec.Process.Terminal = true
	b.Spec.Process.Env = append(b.Spec.Process.Env, "TERM=xterm")
	b.save(t)
	sock := newConsoleSocket(t)
	id := uniqueID(t)
	v.detach("run", "--detach", "--console-socket", sock.Path(), "--bundle", b.Dir, id)
	master := sock.master(t, 30*time.Second)
	var out syncBuffer
	go func() { _, _ = io.Copy(&out, master) }()
	if err := master.Resize(console.WinSize{Height: 33, Width: 101}); err != nil {
		t.Fatal(err)
	}
	master.Write([]byte("tty; echo mark$((6*7))\n"))
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(out.String(), "mark42") })
	if !strings.Contains(out.String(), "/dev/pts/") {
		t.Errorf("terminal output %q: want a pts", out.String())
	}
	// The new size travels host pty -> SIGWINCH -> monitor -> agent; ask
	// until it has arrived.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "33 101") {
		if time.Now().After(deadline) {
			t.Fatalf("terminal size never reached the guest: %q", out.String())
		}
		master.Write([]byte("stty size\n"))
		time.Sleep(300 * time.Millisecond)
	}
	master.Write([]byte("exit 0\n"))
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	v.runOK("delete", id)
}

func TestWrongStateErrors(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "while :; do sleep 0.1; done")
	id := uniqueID(t)
	for _, args := range [][]string{{"start", "nope"}, {"kill", "nope"}, {"delete", "nope"}, {"state", "nope"}, {"exec", "nope", "true"}, {"pause", "nope"}} {
		if r := v.run("", args...); r.code == 0 || !strings.Contains(r.stderr, "container nope does not exist") {
			t.Errorf("%v: exit %d stderr %q", args, r.code, r.stderr)
		}
	}
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	checks := []struct {
		args []string
		want string
	}{
		{[]string{"start", id}, "is running"},
		{[]string{"delete", id}, "is running"},
		{[]string{"resume", id}, "is running"},
		{[]string{"kill", id, "SIGNOPE"}, `invalid signal "SIGNOPE"`},
		{[]string{"kill", id, "99"}, `invalid signal "99"`},
		{[]string{"exec", "--process", "/nonexistent.json", id}, "/nonexistent.json"},
		{[]string{"exec", "--preserve-fds", "2", id, "true"}, "cannot be passed into a VM"},
		{[]string{"checkpoint", id}, "not supported"},
		{[]string{"create", "--bundle", b.Dir, id}, "already exists"},
	}
	for _, c := range checks {
		if r := v.run("", c.args...); r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d stderr %q; want %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if st := v.state(id); st["status"] != "running" {
		t.Errorf("state after the failed commands: %v", st)
	}
	bad := filepath.Join(t.TempDir(), "p.json")
	writeFile(t, bad, `{"args": "not a list"}`)
	if r := v.run("", "exec", "--process", bad, id); r.code == 0 || !strings.Contains(r.stderr, "p.json") {
		t.Errorf("bad process.json: exit %d stderr %q", r.code, r.stderr)
	}
	v.runOK("kill", id, "KILL")
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	if r := v.run("", "exec", id, "true"); r.code == 0 || !strings.Contains(r.stderr, "stopped") {
		t.Errorf("exec on stopped: exit %d stderr %q", r.code, r.stderr)
	}
	if r := v.run("", "start", id); r.code == 0 || !strings.Contains(r.stderr, "is stopped") {
		t.Errorf("start on stopped: exit %d stderr %q", r.code, r.stderr)
	}
	v.runOK("delete", id)
}

// TestKill9OfDetached kills each host process of a detached container,
// found by its name among `vzrun ps`'s pids; the container must end, state
// turn stopped and delete leave nothing behind. A VM restored from a template has a
// 9p proxy per shared directory, a cold-booted one a virtiofsd.
func TestKill9OfDetached(t *testing.T) {
	for _, tc := range []struct {
		victim string // comm prefix
		cold   bool
	}{
		{victim: "vzrun"},
		{victim: "qemu-system"},
		{victim: "virtfs-proxy"},
		{victim: "virtiofsd", cold: true},
	} {
		t.Run(tc.victim, func(t *testing.T) {
			v := newVZ(t)
			b := newBundle(t, "sh", "-c", "while :; do sleep 0.1; done")
			if tc.cold {
				b.annotate(t, "io.vzrun.template", "false")
			}
			id := uniqueID(t)
			pidFile := filepath.Join(t.TempDir(), "pid")
			v.detach("run", "--detach", "--pid-file", pidFile, "--bundle", b.Dir, id)
			monitor := readPid(t, pidFile)
			var pids []int
			if err := json.Unmarshal([]byte(v.runOK("ps", "--format", "json", id).stdout), &pids); err != nil {
				t.Fatal(err)
			}
			pid := 0
			for _, p := range pids {
				if strings.HasPrefix(procComm(p), tc.victim) {
					pid = p
				}
			}
			if pid == 0 {
				t.Fatalf("no %s process among %v", tc.victim, pids)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// A file server's death stops the VM too (the rootfs would
			// fail every access): the container ends either way.
			waitChild(t, monitor, 30*time.Second)
			waitFor(t, 10*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
			v.runOK("delete", id)
		})
	}
}

func TestDeleteForce(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "while :; do sleep 0.1; done")
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	v.runOK("pause", id)
	v.runOK("delete", "--force", id)
}

// TestLargeSpec: a config.json larger than one ttrpc message (4 MiB), as
// runc takes it.
func TestLargeSpec(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo ${#BIG}")
	big := strings.Repeat("x", 100<<10)
	b.Spec.Process.Env = append(b.Spec.Process.Env, "BIG="+big)
	b.Spec.Annotations = map[string]string{"org.example.large": strings.Repeat("y", 9<<19)}
	b.save(t)
	if fi, err := os.Stat(filepath.Join(b.Dir, "config.json")); err != nil || fi.Size() < 4<<20+1 {
		t.Fatalf("config.json: %v %v", fi, err)
	}
	if r := v.runOK("run", "--bundle", b.Dir, uniqueID(t)); r.stdout != "102400\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

// TestKillPaused: as with runc, SIGKILL kills a paused container, and the
// kill says so.
func TestKillPaused(t *testing.T) {
	v := newVZ(t)
	for i := 0; i < 2; i++ {
		b := newBundle(t, "sleep", "1000")
		id := uniqueID(t)
		v.detach("run", "--detach", "--bundle", b.Dir, id)
		v.runOK("pause", id)
		v.runOK("kill", id, "KILL")
		waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
		v.runOK("delete", id)
	}
}

// TestPauseCreated: as with runc, a created container can be paused; its
// resume returns it to created, and a start while paused is refused.
func TestPauseCreated(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo ran > /ran")
	id := uniqueID(t)
	create := v.cmd("create", "--bundle", b.Dir, id)
	p := withPipes(t, create)
	if out, err := runQuiet(create); err != nil {
		t.Fatalf("create: %v %s", err, out)
	}
	p.started()
	v.runOK("pause", id)
	if st := v.state(id); st["status"] != "paused" {
		t.Fatalf("state after pausing a created container: %v", st)
	}
	if r := v.run("", "start", id); r.code == 0 {
		t.Errorf("start of a paused container succeeded")
	}
	v.runOK("resume", id)
	if st := v.state(id); st["status"] != "created" {
		t.Fatalf("state after resume: %v, want created", st)
	}
	if _, err := os.Stat(filepath.Join(b.rootfs(), "ran")); err == nil {
		t.Fatalf("the process ran before start")
	}
	v.runOK("start", id)
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	if got, err := os.ReadFile(filepath.Join(b.rootfs(), "ran")); err != nil || string(got) != "ran\n" {
		t.Errorf("the process's file: %q %v", got, err)
	}
	v.runOK("delete", id)
}

func TestPauseResumeUpdateEvents(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done")
	b.seeOwnCgroup(t)
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	count := func() int {
		b, _ := os.ReadFile(filepath.Join(b.rootfs(), "tmp", "count"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	waitFor(t, 30*time.Second, func() bool { return count() > 0 })
	v.runOK("pause", id)
	if st := v.state(id); st["status"] != "paused" {
		t.Errorf("state after pause: %v", st)
	}
	// A paused container can still be inspected.
	v.runOK("ps", id)
	before := count()
	time.Sleep(time.Second)
	if after := count(); after != before {
		t.Errorf("counter moved while paused: %d -> %d", before, after)
	}
	v.runOK("resume", id)
	waitFor(t, 30*time.Second, func() bool { return count() > before })

	memTotal := func() int {
		var kb int
		out := v.runOK("exec", id, "grep", "MemTotal", "/proc/meminfo").stdout
		if _, err := fmt.Sscanf(strings.TrimPrefix(out, "MemTotal:"), "%d", &kb); err != nil || kb == 0 {
			t.Fatalf("MemTotal in the guest: %q: %v", out, err)
		}
		return kb >> 10
	}
	bootMiB := memTotal()
	if bootMiB < 512 {
		t.Fatalf("the guest booted with %d MiB, want the default 1024", bootMiB)
	}
	v.runOK("update", "--memory", "64m", "--pids-limit", "50", id)
	// The balloon gives all but the limit and the agent's headroom back
	// to the host (the guest sees less memory), and takes it again.
	waitFor(t, 30*time.Second, func() bool { return memTotal() < 64+128+16 })
	v.runOK("update", "--memory", "4g", id)
	waitFor(t, 30*time.Second, func() bool { return memTotal() >= bootMiB-8 })
	v.runOK("update", "--memory", "64m", id)
	r := v.runOK("exec", id, "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max")
	if r.stdout != "67108864\n50\n" {
		t.Errorf("cgroup limits after update: %q", r.stdout)
	}
	if r := v.run("", "events", "--interval", "0s", id); r.code == 0 || !strings.Contains(r.stderr, "interval must be greater than 0") {
		t.Errorf("events --interval 0s: exit %d, %q", r.code, r.stderr)
	}
	r = v.runOK("events", "--stats", id)
	var ev runc.Event
	if err := json.NewDecoder(bufio.NewReader(strings.NewReader(r.stdout))).Decode(&ev); err != nil {
		t.Fatalf("events output %q: %v", r.stdout, err)
	}
	if ev.Type != "stats" || ev.Stats.Memory.Usage.Limit != 64<<20 || ev.Stats.Cpu.Usage.Total == 0 || ev.Stats.Pids.Current == 0 {
		t.Errorf("stats event %+v", ev.Stats)
	}
	pr := v.runOK("ps", "--format", "json", id)
	var pids []int
	if err := json.Unmarshal([]byte(pr.stdout), &pids); err != nil || len(pids) == 0 {
		t.Errorf("ps --format json: %q %v", pr.stdout, err)
	}
	lr := v.runOK("list", "--format", "json")
	if !strings.Contains(lr.stdout, `"id":"`+id+`"`) || !strings.Contains(lr.stdout, `"status":"running"`) {
		t.Errorf("list: %s", lr.stdout)
	}
	v.runOK("kill", id, "KILL")
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	v.runOK("delete", id)
}

func TestHostHooks(t *testing.T) {
	v := newVZ(t)
	out := t.TempDir()
	b := newBundle(t, "true")
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(out, name)}}
	}
	b.Spec.Hooks = &specs.Hooks{
		// Runs in the container, in the guest: its path is the container's.
		StartContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo in-container > /root/startContainer"}}},
		CreateRuntime:  []specs.Hook{hook("createRuntime")},
		Poststart:      []specs.Hook{hook("poststart")},
		Poststop:       []specs.Hook{hook("poststop")},
	}
	b.save(t)
	id := uniqueID(t)
	v.runOK("run", "--bundle", b.Dir, id)
	if got, err := os.ReadFile(filepath.Join(b.rootfs(), "root", "startContainer")); string(got) != "in-container\n" {
		t.Errorf("startContainer hook: %q %v", got, err)
	}
	// The state each hook reads on its stdin, as runc gives it.
	for name, status := range map[string]specs.ContainerState{"createRuntime": specs.StateCreating, "poststart": specs.StateRunning, "poststop": specs.StateStopped} {
		data, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s hook did not run: %v", name, err)
			continue
		}
		var st specs.State
		if err := json.Unmarshal(data, &st); err != nil || st.ID != id || st.Bundle != b.Dir || st.Status != status || (status != specs.StateStopped && st.Pid <= 0) {
			t.Errorf("%s hook got state %q: %v; want status %s and a pid", name, data, err, status)
		}
		// As runc, a stopped container's state has no pid.
		if status == specs.StateStopped && st.Pid != 0 {
			t.Errorf("%s hook got pid %d, want none", name, st.Pid)
		}
	}
}

// The rest of runc's command line a caller may use: list -q, update
// --resources from stdin, exec --detach --pid-file, kill --all, and the
// CRIU commands refused by name.
func TestCLIRest(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "trap 'echo usr1 >> /tmp/usr1' USR1; sleep 1000 & while :; do sleep 0.2; done")
	b.seeOwnCgroup(t)
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	defer v.run("", "delete", "--force", id)

	if r := v.runOK("list", "-q"); r.stdout != id+"\n" {
		t.Errorf("list -q: %q, want %q", r.stdout, id+"\n")
	}
	v.run(`{"pids": {"limit": 42}, "memory": {"limit": 134217728}}`, "update", "--resources", "-", id)
	if r := v.runOK("exec", id, "cat", "/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/memory.max"); r.stdout != "42\n134217728\n" {
		t.Errorf("after update --resources -: %q", r.stdout)
	}
	// The VM has one vCPU: a cpuset of CPU 0 is set in the guest, one
	// naming CPUs the VM lacks is refused with the reason.
	v.runOK("update", "--cpuset-cpus", "0", id)
	if r := v.run("", "update", "--cpuset-cpus", "0-3", id); r.code == 0 || !strings.Contains(r.stderr, `cpuset "0-3" names CPU 3, but the VM of `+id+` has 1 vCPU(s)`) {
		t.Errorf("update --cpuset-cpus 0-3 of a 1-vCPU VM: exit %d, stderr %q", r.code, r.stderr)
	}
	pidFile := filepath.Join(t.TempDir(), "exec.pid")
	// (The detached process keeps the caller's stdio, as runc's does.)
	v.detach("exec", "--detach", "--pid-file", pidFile, id, "sleep", "1000")
	pb, err := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Errorf("exec --detach --pid-file: %q, %v: not a live process", pb, err)
	}
	longSleeps := func() string {
		return strings.TrimSpace(v.run("", "exec", id, "sh", "-c", "ps -o args | grep -c '^sleep 1000'").stdout)
	}
	if n := longSleeps(); n != "2" {
		t.Errorf("sleep 1000s in the container before kill --all: %q, want 2", n)
	}
	// --all is runc 1.5's (the guest's runc): obsolete, the signal goes
	// to init, which traps USR1 here; the other processes keep running
	// (Debian's runc 1.1 would signal them too, and they would die).
	v.runOK("kill", "--all", id, "USR1")
	waitFor(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(b.rootfs(), "tmp", "usr1"))
		return string(b) == "usr1\n"
	})
	if n := longSleeps(); n != "2" || v.state(id)["status"] != "running" {
		t.Errorf("after kill --all USR1: %s sleep 1000s, state %v; want 2, running", n, v.state(id)["status"])
	}
	// The exec's pid stands for its process: a SIGKILL of it (which the
	// relay cannot forward) ends the process, as it would under runc.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return longSleeps() == "1" })
	// KILL of init ends the container's PID namespace: every process.
	v.runOK("kill", "--all", id, "KILL")
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	for _, c := range []string{"checkpoint", "restore"} {
		if r := v.run("", c, id); r.code == 0 || !strings.Contains(r.stderr, "not supported") {
			t.Errorf("%s: exit %d, stderr %q", c, r.code, r.stderr)
		}
	}
}

// Relative --root, --bundle, --kernel and --initrd work, as runc's
// relative paths do (QEMU runs in the state dir, so vzrun makes them
// absolute).
func TestRelativePaths(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "echo", "relative-ok")
	share := filepath.Join(repoRoot, "_output", "share", "vzrun")
	kernel, err := filepath.Rel(filepath.Dir(b.Dir), filepath.Join(share, "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	initrd, _ := filepath.Rel(filepath.Dir(b.Dir), filepath.Join(share, "initrd.img"))
	root, _ := filepath.Rel(filepath.Dir(b.Dir), v.root)
	cmd := exec.CommandContext(v.ctx, vzrunBinary(), "--root", root, "--kernel", kernel, "--initrd", initrd,
		"run", "--bundle", filepath.Base(b.Dir), uniqueID(t))
	cmd.Dir = filepath.Dir(b.Dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "relative-ok\n") {
		t.Errorf("run with relative paths (in %s: --root %s --kernel %s): %v: %s", cmd.Dir, root, kernel, err, out)
	}
}

// Commas in the paths vzrun hands QEMU and virtiofsd (state dir, rootfs,
// bind sources) are escaped: a VM restored from a template (9p), a cold
// boot (virtio-fs) and the ext4 mode (a drive) all run.
func TestCommasInPaths(t *testing.T) {
	base := t.TempDir()
	v := newVZ(t)
	v.root = filepath.Join(base, "ro,ot")
	src := filepath.Join(base, "sou,rce")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "f"), "through-a-comma\n")
	for _, mode := range []string{"template", "cold", "ext4"} {
		t.Run(mode, func(t *testing.T) {
			b := newBundle(t, "cat", "/w/f")
			b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/w", Type: "bind", Source: src, Options: []string{"rbind", "ro"}})
			switch mode {
			case "cold":
				b.Spec.Annotations = map[string]string{"io.vzrun.template": "false"}
			case "ext4":
				b.Spec.Annotations = map[string]string{"io.vzrun.rootfs": "ext4"}
			}
			b.save(t)
			// The bundle too has a comma in its path.
			dir := filepath.Join(base, "bun,dle-"+mode)
			if err := os.Rename(b.Dir, dir); err != nil {
				t.Fatal(err)
			}
			if r := v.runOK("run", "--bundle", dir, uniqueID(t)); r.stdout != "through-a-comma\n" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
}

// While create boots the VM the container is "creating" (no pid), a plain
// delete refuses it, and state prints runc's fields throughout (rootfs,
// created, owner; pid 0 once stopped).
func TestStateWhileCreating(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "true")
	// A createRuntime hook (the host's, run before the container counts
	// as created) keeps it "creating" for a while.
	b.Spec.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "5"}}}}
	b.save(t)
	id := uniqueID(t)
	create := v.cmd("create", "--bundle", b.Dir, id)
	startDetachingInBackground(t, create)
	seen := map[string]bool{}
	for deadline := time.Now().Add(60 * time.Second); !seen["created"] && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r := v.run("", "state", id)
		if r.code != 0 {
			continue // not saved yet
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("state: %q: %v", r.stdout, err)
		}
		status, _ := st["status"].(string)
		seen[status] = true
		for _, f := range []string{"rootfs", "created", "owner", "bundle", "pid"} {
			if _, ok := st[f]; !ok {
				t.Errorf("state while %s lacks %q: %s", status, f, r.stdout)
			}
		}
		switch status {
		case "creating":
			if st["pid"] != float64(0) {
				t.Errorf("state while creating: pid %v, want 0", st["pid"])
			}
			if !seen["deleted"] {
				seen["deleted"] = true
				if r := v.run("", "delete", id); r.code == 0 {
					t.Fatalf("delete of a container being created succeeded")
				}
			}
		case "created":
		default:
			t.Fatalf("state during create: %s", r.stdout)
		}
	}
	if err := create.Wait(); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Logf("states seen: %v", seen)
	v.runOK("start", id)
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	if pid, ok := v.state(id)["pid"]; !ok || pid != float64(0) {
		t.Errorf("state of a stopped container: pid %v (present %v), want 0 as runc prints it", pid, ok)
	}
	v.runOK("delete", id)
}

func TestFeaturesAndSpec(t *testing.T) {
	v := &vz{t: t, ctx: testContext(t), root: t.TempDir()}
	r := v.runOK("features")
	var f map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &f); err != nil || f["ociVersionMax"] == nil {
		t.Errorf("features: %q %v", r.stdout, err)
	}
	dir := t.TempDir()
	v.runOK("spec", "--bundle", dir)
	// The same template as runc's: what a user edits after `runc spec`.
	runcDir := t.TempDir()
	if out, err := exec.Command("runc", "spec", "--bundle", runcDir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	var ours, runcs specs.Spec
	for p, s := range map[string]*specs.Spec{dir: &ours, runcDir: &runcs} {
		b, err := os.ReadFile(filepath.Join(p, "config.json"))
		if err == nil {
			err = json.Unmarshal(b, s)
		}
		if err != nil {
			t.Fatalf("%s/config.json: %v", p, err)
		}
	}
	if ours.Process == nil || ours.Root == nil || ours.Linux == nil ||
		!reflect.DeepEqual(ours.Process.Args, runcs.Process.Args) || ours.Process.Terminal != runcs.Process.Terminal ||
		!reflect.DeepEqual(ours.Root, runcs.Root) || ours.Process.Capabilities == nil ||
		// (Debian's runc 1.1 also sets ambient capabilities; runc 1.5 does not.)
		!reflect.DeepEqual(ours.Process.Capabilities.Bounding, runcs.Process.Capabilities.Bounding) ||
		!reflect.DeepEqual(ours.Process.Capabilities.Effective, runcs.Process.Capabilities.Effective) {
		t.Errorf("vzrun spec differs from runc spec in process or root:\n%+v\n%+v", ours, runcs)
	}
	dests := map[string]bool{}
	for _, m := range ours.Mounts {
		dests[m.Destination] = true
	}
	for _, m := range runcs.Mounts {
		if !dests[m.Destination] {
			t.Errorf("vzrun spec lacks runc spec's mount on %s", m.Destination)
		}
	}
	nss := map[specs.LinuxNamespaceType]bool{}
	for _, n := range ours.Linux.Namespaces {
		nss[n.Type] = true
	}
	for _, n := range runcs.Linux.Namespaces {
		if !nss[n.Type] {
			t.Errorf("vzrun spec lacks runc spec's %s namespace", n.Type)
		}
	}
	if r := v.run("", "spec", "--bundle", dir); r.code == 0 {
		t.Error("spec overwrote an existing config.json")
	}
}

// The agent forgets an exec once it has ended and the host has its output,
// or its vzrun exec was killed: many execs leave its descriptors (stdio
// pipes, pidfds) as they were.
func TestExecsReleaseAgentResources(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sleep", "1000")
	// The guest's PID namespace, where the agent is pid 1.
	var ns []specs.LinuxNamespace
	for _, n := range b.Spec.Linux.Namespaces {
		if n.Type != specs.PIDNamespace {
			ns = append(ns, n)
		}
	}
	b.Spec.Linux.Namespaces = ns
	caps := append(b.Spec.Process.Capabilities.Bounding, "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")
	b.Spec.Process.Capabilities.Bounding, b.Spec.Process.Capabilities.Effective, b.Spec.Process.Capabilities.Permitted = caps, caps, caps
	b.save(t)
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	defer v.run("", "delete", "--force", id)
	agentFDs := func() int {
		out := v.runOK("exec", id, "sh", "-c", "ls /proc/1/fd | wc -l").stdout
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("agent's descriptors: %q", out)
		}
		return n
	}
	before := agentFDs()
	for i := 0; i < 15; i++ {
		v.runOK("exec", id, "true")
	}
	// Execs whose vzrun exec was killed: the monitor kills and forgets them.
	for i := 0; i < 3; i++ {
		cmd := v.cmd("exec", id, "sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	waitFor(t, 30*time.Second, func() bool { return agentFDs() <= before+3 })
}

// A `vzrun start` or `vzrun pause` killed half-way (kill -9, at several
// moments) leaves the container's recorded state true to it, as runc's
// state is read from the container itself: a container whose process
// started says running (not created, which start would refuse and a plain
// delete would kill), and one whose VM was paused says paused, and resume
// works.
func TestKilledStartAndPauseLeaveTrueState(t *testing.T) {
	v := newVZ(t)
	progress := t.TempDir()
	b := newBundle(t, "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /progress/n; sleep 0.1; done")
	b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/progress", Type: "bind", Source: progress, Options: []string{"rbind", "rw"}})
	b.save(t)
	counter := func() int {
		got, _ := os.ReadFile(filepath.Join(progress, "n"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(got)))
		return n
	}
	advancing := func() bool {
		n := counter()
		time.Sleep(1500 * time.Millisecond)
		return counter() > n
	}
	killAfter := func(d time.Duration, args ...string) {
		cmd := v.cmd(args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		time.Sleep(2 * time.Second) // what the monitor still does
	}
	for _, d := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
		_ = os.Remove(filepath.Join(progress, "n"))
		id := uniqueID(t)
		v.detach("create", "--bundle", b.Dir, id)
		killAfter(d, "start", id)
		// What the monitor finishes may take a while under load: the
		// state must come to agree with the process, and stay.
		var status any
		for deadline, agreed := time.Now().Add(30*time.Second), 0; agreed < 3; time.Sleep(time.Second) {
			status = v.state(id)["status"]
			started := counter() > 0
			if started && status == "running" || !started && status == "created" {
				agreed++
				continue
			}
			agreed = 0
			if time.Now().After(deadline) {
				t.Fatalf("start killed after %v: status %v, process started: %v", d, status, started)
			}
		}
		if status == "created" {
			v.runOK("start", id)
		}
		waitFor(t, 30*time.Second, func() bool { return counter() > 0 })

		killAfter(d, "pause", id)
		for prev := ""; ; time.Sleep(time.Second) {
			if st := fmt.Sprint(v.state(id)["status"]); st != prev {
				prev = st
				continue
			}
			break
		}
		switch status := v.state(id)["status"]; status {
		case "running":
			if !advancing() {
				t.Errorf("pause killed after %v: status running, but the process is stopped", d)
			}
		case "paused":
			if advancing() {
				t.Errorf("pause killed after %v: status paused, but the process runs", d)
			}
			v.runOK("resume", id)
			if !advancing() {
				t.Errorf("pause killed after %v, then resume: the process does not run", d)
			}
		default:
			t.Errorf("pause killed after %v: status %v", d, status)
		}
		v.runOK("delete", "--force", id)
	}
}

// A kill -9 of a foreground `vzrun exec` once its pid file names it (at
// once, and at moments while the exec is being made and started) kills its
// process in the guest too, as killing the pid runc exec writes kills the
// process itself.
func TestExecKilledAtItsPidFile(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sleep", "1000")
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	dir := t.TempDir()
	for i, delay := range []time.Duration{0, 30 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		pidFile := filepath.Join(dir, fmt.Sprint(i))
		cmd := v.cmd("exec", "--pid-file", pidFile, id, "sleep", fmt.Sprint(331+i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, func() bool {
			b, _ := os.ReadFile(pidFile)
			return len(b) > 0
		})
		b, _ := os.ReadFile(pidFile)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid != cmd.Process.Pid {
			t.Fatalf("pid file %q, want %d", b, cmd.Process.Pid)
		}
		time.Sleep(delay)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Second) {
		ps := v.runOK("exec", id, "ps", "-o", "args").stdout
		if !strings.Contains(ps, "sleep 33") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the killed execs' processes still run:\n%s", ps)
			break
		}
	}
	v.runOK("delete", "--force", id)
}

// Deletes of one container at once all succeed with --force, as runc's do,
// and take turns: one whose ext4 rootfs is left to sync (its monitor
// killed) is synced once, with no image left beside the bundle.
func TestParallelDeletes(t *testing.T) {
	for _, mode := range []string{"shared", "ext4"} {
		t.Run(mode, func(t *testing.T) {
			v := newVZ(t)
			b := newBundle(t, "sh", "-c", "echo kept > /root/marker; sync; sleep 1000")
			if mode == "ext4" {
				b.annotate(t, "io.vzrun.rootfs", "ext4")
			}
			id := uniqueID(t)
			v.detach("run", "--detach", "--bundle", b.Dir, id)
			waitFor(t, 60*time.Second, func() bool { return v.run("", "exec", id, "cat", "/root/marker").stdout == "kept\n" })
			if mode == "ext4" {
				if err := syscall.Kill(int(v.state(id)["pid"].(float64)), syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
			}
			var wg sync.WaitGroup
			results := make([]result, 3)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = v.run("", "delete", "--force", id)
				}()
			}
			wg.Wait()
			for i, r := range results {
				if r.code != 0 {
					t.Errorf("delete %d: exit %d: %s", i, r.code, r.stderr)
				}
			}
			if got, err := os.ReadFile(filepath.Join(b.rootfs(), "root", "marker")); err != nil || string(got) != "kept\n" {
				t.Errorf("/root/marker: %q, %v", got, err)
			}
			if left, _ := filepath.Glob(filepath.Join(b.Dir, "rootfs-*.ext4")); len(left) > 0 {
				t.Errorf("images left beside the rootfs: %v", left)
			}
		})
	}
}

// Closing the terminal master a detached run sent to --console-socket
// hangs up the container's terminal, as it does under runc, where that
// master is the terminal's: the shell reading it gets SIGHUP and EOF, and
// the container stops; the same for a process that only reads it (cat).
func TestConsoleMasterCloseHangsUp(t *testing.T) {
	v := newVZ(t)
	for _, args := range [][]string{{"sh"}, {"sh", "-c", "cat; echo cat-ended"}} {
		b := newBundle(t, args...)
		b.Spec.Process.Terminal = true
		b.save(t)
		sock := newConsoleSocket(t)
		id := uniqueID(t)
		v.detach("run", "--detach", "--console-socket", sock.Path(), "--bundle", b.Dir, id)
		master := sock.master(t, 30*time.Second)
		master.Write([]byte("echo alive\n"))
		time.Sleep(time.Second)
		master.Close()
		deadline := time.Now().Add(30 * time.Second)
		for v.state(id)["status"] != "stopped" {
			if time.Now().After(deadline) {
				t.Errorf("%v: still %v 30 s after its terminal's master was closed", args, v.state(id)["status"])
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		v.runOK("delete", "--force", id)
	}
}

// runc's flags that scripts pass are taken: exec's --apparmor and
// --process-label (applied by the guest's runc), run's --no-subreaper and
// the global --rootless (no-ops there too), update's real-time CPU
// flags; Intel RDT schemas are refused saying why.
func TestRuncFlagsTaken(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sleep", "1000")
	b.seeOwnCgroup(t)
	id := uniqueID(t)
	v.detach("--rootless", "false", "run", "--detach", "--no-subreaper", "--bundle", b.Dir, id)
	v.runOK("exec", "--apparmor", "", "--process-label", "", id, "true")
	v.runOK("update", "--cpu-rt-period", "1000000", id)
	if r := v.run("", "update", "--l3-cache-schema", "L3:0=f", id); r.code == 0 || !strings.Contains(r.stderr, "Intel RDT") {
		t.Errorf("update --l3-cache-schema: exit %d, %q", r.code, r.stderr)
	}
	// runc 1.5's newer flags: CPU idle and burst reach the guest's
	// cgroup; exec's pidfd socket gets a pidfd of the exec's host pid.
	v.runOK("update", "--cpu-idle", "1", "--cpu-quota", "50000", "--cpu-burst", "20000", id)
	if out := v.runOK("exec", id, "sh", "-c", "cat /sys/fs/cgroup/cpu.idle /sys/fs/cgroup/cpu.max.burst").stdout; out != "1\n20000\n" {
		t.Errorf("cpu.idle and cpu.max.burst after update --cpu-idle 1 --cpu-burst 20000: %q", out)
	}
	sock := filepath.Join(t.TempDir(), "pidfd.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		buf, oob := make([]byte, 64), make([]byte, 64)
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
		fds := 0
		for _, m := range msgs {
			rights, _ := syscall.ParseUnixRights(&m)
			fds += len(rights)
			for _, fd := range rights {
				syscall.Close(fd)
			}
		}
		got <- fmt.Sprintf("%s %d %v", buf[:n], fds, err)
	}()
	v.runOK("exec", "--pidfd-socket", sock, id, "true")
	select {
	case msg := <-got:
		if msg != "setns 1 <nil>" {
			t.Errorf("exec --pidfd-socket: the socket got %q, want a pidfd with message setns", msg)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("exec --pidfd-socket: nothing came to the socket")
	}
	for _, args := range [][]string{{"exec", "--cgroup", "cpu:/sub", id, "true"}, {"spec", "--rootless", "--bundle", t.TempDir()}} {
		if r := v.run("", args...); r.code == 0 || !strings.Contains(r.stderr, "not supported") && !strings.Contains(r.stderr, "no rootless mode") {
			t.Errorf("%v: exit %d, %q (want a refusal that says why)", args, r.code, r.stderr)
		}
	}
	v.runOK("pause", id)
	if r := v.run("", "exec", "--ignore-paused", id, "true"); r.code == 0 || !strings.Contains(r.stderr, "vCPUs") {
		t.Errorf("exec --ignore-paused into a paused container: exit %d, %q", r.code, r.stderr)
	}
	v.runOK("delete", "--force", id)
}
