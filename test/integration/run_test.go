package integration

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestRunStdoutStderrExitCode(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 42")
	r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
	if r.code != 42 {
		t.Errorf("exit code %d, want 42 (stderr: %s)", r.code, r.stderr)
	}
	if r.stdout != "to-stdout\n" {
		t.Errorf("stdout %q, want %q", r.stdout, "to-stdout\n")
	}
	if r.stderr != "to-stderr\n" {
		t.Errorf("stderr %q, want %q", r.stderr, "to-stderr\n")
	}
}

func TestRunKilledBySignal(t *testing.T) {
	v := newVZ(t)
	// Not the init of a pid namespace, which cannot be killed from within.
	b := newBundle(t, "sh", "-c", "kill -KILL $$")
	b.Spec.Linux.Namespaces = b.Spec.Linux.Namespaces[1:]
	b.save(t)
	if r := v.run("", "run", "--bundle", b.Dir, uniqueID(t)); r.code != 128+9 {
		t.Errorf("exit code %d, want %d (stderr: %s)", r.code, 128+9, r.stderr)
	}
}

func TestRunStdin(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "tr a-z A-Z; echo done")
	r := v.run("hello\nworld\n", "run", "--bundle", b.Dir, uniqueID(t))
	if r.code != 0 || r.stdout != "HELLO\nWORLD\ndone\n" {
		t.Errorf("got exit %d stdout %q, want 0 %q (stderr: %s)", r.code, r.stdout, "HELLO\nWORLD\ndone\n", r.stderr)
	}
}

func TestRunLargeStdoutIsByteExact(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "cat", "/data.bin")
	data := make([]byte, 64<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.rootfs(), "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := v.cmd("run", "--bundle", b.Dir, uniqueID(t))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("vzrun run: %v: %s", err, stderr.String())
	}
	t.Logf("64 MiB through stdout in %s", time.Since(start).Round(time.Millisecond))
	if !bytes.Equal(stdout.Bytes(), data) {
		t.Fatalf("stdout differs from the file: got %d bytes, want %d", stdout.Len(), len(data))
	}
}

func TestRunHonoursProcessSpec(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", `echo "foo=$FOO"; pwd; id -u; id -g; hostname`)
	b.Spec.Process.Env = append(b.Spec.Process.Env, "FOO=bar baz")
	b.Spec.Process.Cwd = "/tmp"
	b.Spec.Process.User = specs.User{UID: 65534, GID: 65534}
	b.Spec.Hostname = "vm-under-test"
	b.save(t)
	r := v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	want := "foo=bar baz\n/tmp\n65534\n65534\nvm-under-test\n"
	if r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
}

// A small RLIMIT_AS (the runtime-tools process_rlimits test sets 1 GiB)
// reaches the container's process, though runc's own init cannot run
// under it.
func TestRunAddressSpaceLimit(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", `grep -E "Max (address space|open files)" /proc/self/limits`)
	b.Spec.Process.Rlimits = []specs.POSIXRlimit{
		{Type: "RLIMIT_AS", Soft: 1 << 30, Hard: 2 << 30},
		{Type: "RLIMIT_NOFILE", Soft: 300, Hard: 400},
	}
	b.save(t)
	r := v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	got := strings.Join(strings.Fields(r.stdout), " ")
	want := "Max open files 300 400 files Max address space 1073741824 2147483648 bytes"
	if got != want {
		t.Errorf("limits %q, want %q", got, want)
	}
}

func TestRunShowsGuestKernel(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "uname", "-r")
	r := v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	host, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(r.stdout)
	if !strings.HasSuffix(got, "-vzrun") || got == strings.TrimSpace(string(host)) {
		t.Errorf("uname -r in the container: %q; want the guest kernel (…-vzrun), not the host's %q", got, host)
	}
}

func TestRunWritesReachHostRootfs(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo written-in-vm > /root/out.txt; mkdir -p /root/d; echo x > /root/d/y; rm /etc/group")
	v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	got, err := os.ReadFile(filepath.Join(b.rootfs(), "root", "out.txt"))
	if err != nil || string(got) != "written-in-vm\n" {
		t.Errorf("host rootfs /root/out.txt: %q, %v; want %q", got, err, "written-in-vm\n")
	}
	if _, err := os.Stat(filepath.Join(b.rootfs(), "root", "d", "y")); err != nil {
		t.Errorf("host rootfs /root/d/y: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.rootfs(), "etc", "group")); !os.IsNotExist(err) {
		t.Errorf("host rootfs /etc/group should be deleted, stat: %v", err)
	}
}

// Root with a group other than 0 (a process run as 0:1234, or writing into
// a setgid directory such as Debian's /usr/local) makes files, directories,
// FIFOs and symlinks owned as it asks, one after another, in a VM
// restored from a template (QEMU 7.2's 9p proxy helper lost its
// capabilities after the first and then failed every access).
func TestRunRootWithOtherGroupCreates(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "touch /w/a && mkdir /w/b && mkfifo /w/c && ln -s a /w/d && touch /w/sg/e && mkdir /w/sg/f && echo made")
	b.Spec.Process.User.UID, b.Spec.Process.User.GID = 0, 1234
	b.Spec.Root.Readonly = false
	b.save(t)
	for _, d := range []string{"w", "w/sg"} {
		if err := os.Mkdir(filepath.Join(b.rootfs(), d), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(b.rootfs(), "w/sg"), 0, 50); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(b.rootfs(), "w/sg"), 0o777|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
	if r.code != 0 || r.stdout != "made\n" {
		t.Fatalf("run: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	for _, c := range []struct {
		path string
		gid  uint32
	}{{"w/a", 1234}, {"w/b", 1234}, {"w/c", 1234}, {"w/d", 1234}, {"w/sg/e", 50}, {"w/sg/f", 50}} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(b.rootfs(), c.path), &st); err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if st.Uid != 0 || st.Gid != c.gid {
			t.Errorf("%s owned by %d:%d, want 0:%d", c.path, st.Uid, st.Gid, c.gid)
		}
	}
}

// A file capability (security.capability, as Debian ships ping with
// cap_net_raw) is honoured in the guest on each rootfs transport: a
// non-root process reads a root-only file through a busybox that has
// cap_dac_read_search, and not through one that has not.
func TestRunFileCapabilities(t *testing.T) {
	v := newVZ(t)
	// The default rootfs (9p in a VM restored from a template) and ext4.
	for _, mode := range []string{"shared", "ext4"} {
		t.Run(mode, func(t *testing.T) {
			b := newBundle(t, "sh", "-c", "/capbin/busybox cat /secret; cat /secret 2>&1")
			caps := append(b.Spec.Process.Capabilities.Bounding, "CAP_DAC_READ_SEARCH")
			b.Spec.Process.Capabilities.Bounding = caps
			b.Spec.Process.User.UID, b.Spec.Process.User.GID = 65534, 65534
			b.Spec.Process.NoNewPrivileges = false
			b.save(t)
			if mode == "ext4" {
				b.annotate(t, "io.vzrun.rootfs", "ext4")
			}
			writeFile(t, filepath.Join(b.rootfs(), "secret"), "s3cret\n")
			if err := os.Chmod(filepath.Join(b.rootfs(), "secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(b.rootfs(), "bin", "busybox"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(b.rootfs(), "capbin"), 0o755); err != nil {
				t.Fatal(err)
			}
			capbin := filepath.Join(b.rootfs(), "capbin", "busybox")
			if err := os.WriteFile(capbin, data, 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("setcap", "cap_dac_read_search+ep", capbin).CombinedOutput(); err != nil {
				t.Fatalf("setcap: %v: %s", err, out)
			}
			r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) != 2 || lines[0] != "s3cret" || !strings.Contains(lines[1], "Permission denied") {
				t.Errorf("exit %d; want the secret through the capable busybox only:\n%s%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// The guest keeps the host's time: its clocksource is the TSC, which
// QEMU derives from the host's clock, and the watchdog cannot trade it for
// jiffies that lose ticks under TCG (a guest, and every VM restored from a
// template saved from it, once ran ~40% slow).
func TestRunGuestClock(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "cat /sys/devices/system/clocksource/clocksource0/current_clocksource; sleep 5; date +%s")
	r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
	now := time.Now().Unix()
	f := strings.Fields(r.stdout)
	if r.code != 0 || len(f) != 2 || f[0] != "tsc" {
		t.Fatalf("exit %d; want the tsc clocksource and the time:\n%s%s", r.code, r.stdout, r.stderr)
	}
	guest, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || guest < now-2 || guest > now+1 {
		t.Errorf("guest time %s after sleep 5, host %d", f[1], now)
	}
}

// A process in the container with CAP_SETFCAP sets a file capability
// (what setcap and dpkg do) and, with CAP_SYS_ADMIN, a trusted.*
// attribute, on the default rootfs (9p in a VM restored from a template),
// and they are on the host's file, as under runc; on a file bound from
// the host too, and a read-only bound file refuses them.
func TestRunSetsPrivilegedXattrs(t *testing.T) {
	v := newVZ(t)
	setx := buildStatic(t, "setx", `package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

func main() {
	capability := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, path := range os.Args[1:] {
		fmt.Println(path, setx(path, capability))
	}
}

func setx(path string, capability []byte) string {
	for _, x := range []struct{ name string; value []byte }{{"security.capability", capability}, {"trusted.vzrun", []byte("t")}} {
		if err := syscall.Setxattr(path, x.name, x.value, 0); err != nil {
			return x.name + ": " + err.Error()
		}
	}
	if err := syscall.Removexattr(path, "trusted.vzrun"); err != nil {
		return "remove: " + err.Error()
	}
	if err := syscall.Setxattr(path, "trusted.kept", []byte("k"), 0); err != nil {
		return "trusted.kept: " + err.Error()
	}
	// Read back, as cp -a and tar --xattrs do.
	buf := make([]byte, 256)
	if n, err := syscall.Getxattr(path, "trusted.kept", buf); err != nil || string(buf[:n]) != "k" {
		return fmt.Sprintf("get trusted.kept: %q %v", buf[:max(n, 0)], err)
	}
	if n, err := syscall.Listxattr(path, buf); err != nil || !strings.Contains(string(buf[:max(n, 0)]), "trusted.kept\x00") || !strings.Contains(string(buf[:max(n, 0)]), "security.capability\x00") {
		return fmt.Sprintf("list: %q %v", buf[:max(n, 0)], err)
	}
	return "set"
}
`)
	b := newBundle(t, "/setx", "/target", "/bound", "/robound")
	caps := append(b.Spec.Process.Capabilities.Bounding, "CAP_SETFCAP", "CAP_SYS_ADMIN")
	b.Spec.Process.Capabilities.Bounding, b.Spec.Process.Capabilities.Effective, b.Spec.Process.Capabilities.Permitted = caps, caps, caps
	b.Spec.Root.Readonly = false
	// Files bound from the host, one of them read-only (reached through
	// the VM's file share, whose entries are bound in the file server's
	// own mount namespace).
	host := t.TempDir()
	bound, robound := filepath.Join(host, "bound"), filepath.Join(host, "robound")
	writeFile(t, bound, "b")
	writeFile(t, robound, "r")
	b.Spec.Mounts = append(b.Spec.Mounts,
		specs.Mount{Destination: "/bound", Type: "bind", Source: bound, Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/robound", Type: "bind", Source: robound, Options: []string{"rbind", "ro"}})
	b.save(t)
	if err := os.WriteFile(filepath.Join(b.rootfs(), "setx"), setx, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.rootfs(), "target"), "x")
	r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
	want := "/target set\n/bound set\n/robound security.capability: read-only file system\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("exit %d: %s%s, want %q", r.code, r.stdout, r.stderr, want)
	}
	buf := make([]byte, 64)
	for _, file := range []string{filepath.Join(b.rootfs(), "target"), bound} {
		for _, x := range []struct{ name, want string }{{"security.capability", "\x01\x00\x00\x02\x00 "}, {"trusted.kept", "k"}} {
			n, err := syscall.Getxattr(file, x.name, buf)
			if err != nil || !strings.HasPrefix(string(buf[:n]), x.want) {
				t.Errorf("host file %s's %s: %q, %v", file, x.name, buf[:max(n, 0)], err)
			}
		}
		if _, err := syscall.Getxattr(file, "trusted.vzrun", buf); err == nil {
			t.Errorf("%s: trusted.vzrun was not removed", file)
		}
	}
	if _, err := syscall.Getxattr(robound, "security.capability", buf); err == nil {
		t.Errorf("a read-only bound file got security.capability")
	}
}

// A container given /dev/net/tun (nerdctl --device /dev/net/tun: VPN
// clients, wireguard-go) can open it: the guest kernel has the driver
// behind the host's device number.
func TestRunTunDevice(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "exec 4<>/dev/net/tun && echo tun-open; [ -e /dev/kvm ] || echo no-kvm")
	mode := os.FileMode(0o666)
	// The guest has no KVM: that node is left out, with a warning.
	b.Spec.Linux.Devices = append(b.Spec.Linux.Devices, specs.LinuxDevice{Path: "/dev/net/tun", Type: "c", Major: 10, Minor: 200, FileMode: &mode},
		specs.LinuxDevice{Path: "/dev/kvm", Type: "c", Major: 10, Minor: 232, FileMode: &mode})
	major, minor := int64(10), int64(200)
	b.Spec.Linux.Resources = &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"}}}
	b.save(t)
	logFile := filepath.Join(t.TempDir(), "log.json")
	r := v.run("", "--log", logFile, "--log-format", "json", "run", "--bundle", b.Dir, uniqueID(t))
	if r.code != 0 || strings.Join(strings.Fields(r.stdout), " ") != "tun-open no-kvm" {
		t.Errorf("exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "device /dev/kvm (c 10:232) does not exist in the VM") {
		t.Errorf("no warning about /dev/kvm in the log:\n%s", log)
	}
}

// virtiofsd keeps a descriptor per inode the guest has looked up; under
// the soft open-file limit a shell or a service usually has (1024) a
// container that makes 1500 files still works, as under runc.
func TestRunManyFilesUnderLowFileLimit(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "mkdir /many && i=0; while [ $i -lt 1500 ]; do : > /many/f$i || exit 1; i=$((i+1)); done; ls /many | wc -l")
	cmd := exec.CommandContext(v.ctx, "sh", "-c", `ulimit -Sn 1024 && exec "$@"`, "sh", vzrunBinary(), "--root", v.root, "run", "--bundle", b.Dir, uniqueID(t))
	// A cold boot: the rootfs is virtiofsd's. (QEMU, the 9p server of a
	// VM restored from a template, closes what the guest closes.)
	cmd.Env = append(os.Environ(), "VZRUN_TEMPLATE=0")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1500" {
		t.Errorf("1500 files under ulimit -Sn 1024: %v: %s", err, lastN(string(out), 5))
	}
}

// Under a memory limit a process that allocates more than the limit is
// killed by the container's cgroup (137), as under runc, though the VM is
// sized to the limit: the guest does not refuse the allocation itself.
func TestRunMemoryLimitKillsLargeAllocation(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
	limit := int64(64 << 20)
	b.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	b.save(t)
	if r := v.run("", "run", "--bundle", b.Dir, uniqueID(t)); r.code != 137 {
		t.Errorf("a 200 MB buffer under a 64 MiB limit: exit %d, want 137 (OOM-killed): %s", r.code, r.stderr)
	}
}

func TestRunSizesVMFromSpec(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo")
	limit := int64(256 << 20)
	quota, period := int64(200000), uint64(100000)
	b.Spec.Linux.Resources = &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
	}
	b.save(t)
	r := v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	lines := strings.Fields(r.stdout)
	if len(lines) != 2 {
		t.Fatalf("output %q", r.stdout)
	}
	if want := min(2, runtimeNumCPU()); lines[0] != strconv.Itoa(want) {
		t.Errorf("nproc %s, want %d", lines[0], want)
	}
	memKiB, _ := strconv.Atoi(lines[1])
	// 256 MiB limit + 128 MiB headroom, less what the kernel keeps.
	if memKiB < 300<<10 || memKiB > 384<<10 {
		t.Errorf("guest MemTotal %d KiB, want about 384 MiB", memKiB)
	}

	b.annotate(t, "io.vzrun.cpus", "1", "io.vzrun.memory", "200")
	r = v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	lines = strings.Fields(r.stdout)
	memKiB, _ = strconv.Atoi(lines[1])
	if lines[0] != "1" || memKiB > 200<<10 || memKiB < 150<<10 {
		t.Errorf("with annotations: nproc %s, MemTotal %d KiB; want 1 and about 200 MiB", lines[0], memKiB)
	}
}

// TestTemplateClonesGetTheirOwnClockAndRandomness: VMs restored from one
// saved template must not share its clock or its random number
// generator's output (the agent sets the clock and reseeds from the host;
// virtio-rng feeds the guest's pool too). Checked: without the agent's
// clock setting the clones read the template's time, 9-11 s behind.
func TestTemplateClonesGetTheirOwnClockAndRandomness(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "date +%s; cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1")
	// The first run saves the template if there is none; the wait makes
	// its frozen clock at least that old.
	v.runOK("run", "--bundle", b.Dir, uniqueID(t))
	time.Sleep(5 * time.Second)
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		r := v.runOK("--debug", "run", "--bundle", b.Dir, uniqueID(t))
		if !strings.Contains(r.stderr, "template=true") {
			t.Fatalf("run %d was not restored from a template:\n%s", i, r.stderr)
		}
		lines := strings.SplitN(r.stdout, "\n", 3)
		if len(lines) != 3 {
			t.Fatalf("output %q", r.stdout)
		}
		guest, err := strconv.ParseInt(strings.TrimSpace(lines[0]), 10, 64)
		if err != nil {
			t.Fatalf("date in the guest: %q", lines[0])
		}
		if d := time.Now().Unix() - guest; d < -2 || d > 4 {
			t.Errorf("clone %d: guest clock %d, host %d: off by %d s", i, guest, time.Now().Unix(), d)
		}
		for _, x := range lines[1:] {
			x = strings.TrimSpace(x)
			if x == "" || seen[x] {
				t.Errorf("clone %d produced %q again: clones share the random state", i, x)
			}
			seen[x] = true
		}
	}
}

// Bind mounts from the spec: a read-write directory, a read-only one and
// a single file, in a VM restored from a template (9p) and in one booted
// cold because it has more shared directories than a template has slots
// (virtio-fs).
func TestRunBindMounts(t *testing.T) {
	v := newVZ(t)
	for _, extra := range []int{0, 9} {
		t.Run(fmt.Sprintf("%d-more", extra), func(t *testing.T) {
			rw, ro := t.TempDir(), t.TempDir()
			writeFile(t, filepath.Join(ro, "in"), "from-the-host\n")
			fileDir := t.TempDir()
			writeFile(t, filepath.Join(fileDir, "single"), "one-file\n")
			writeFile(t, filepath.Join(fileDir, "other"), "not-mounted\n")
			writeFile(t, filepath.Join(fileDir, "single-rw"), "")
			// The guest reaches a bound file, not its directory: a
			// process that got out to the guest (here a container in the
			// guest's PID namespace with CAP_SYS_PTRACE, which reaches
			// the agent's mounts) finds only the bound files in the share.
			// Nor can it write to a directory only bound read-only.
			peek := `set -- $(grep " /single " /proc/mounts); echo $(ls /proc/1/root/run/vzrun/shares/$1); ` +
				`set -- $(grep " /ro " /proc/mounts); if touch /proc/1/root/run/vzrun/shares/$1/x; then echo ro-share-writable; fi`
			script := "echo written > /rw/out && echo appended >> /single-rw && cat /ro/in /single && if echo x > /ro/x 2>/dev/null; then echo ro-writable; fi; ls /ro; " + peek
			b := newBundle(t, "sh", "-c", script)
			b.Spec.Process.Capabilities.Bounding = append(b.Spec.Process.Capabilities.Bounding, "CAP_SYS_PTRACE")
			b.Spec.Process.Capabilities.Effective = append(b.Spec.Process.Capabilities.Effective, "CAP_SYS_PTRACE")
			b.Spec.Process.Capabilities.Permitted = append(b.Spec.Process.Capabilities.Permitted, "CAP_SYS_PTRACE")
			b.Spec.Linux.Namespaces = slices.DeleteFunc(b.Spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.PIDNamespace })
			b.Spec.Mounts = append(b.Spec.Mounts,
				specs.Mount{Destination: "/rw", Type: "bind", Source: rw, Options: []string{"rbind", "rw"}},
				specs.Mount{Destination: "/ro", Type: "bind", Source: ro, Options: []string{"rbind", "ro"}},
				specs.Mount{Destination: "/single", Type: "bind", Source: filepath.Join(fileDir, "single"), Options: []string{"bind", "ro"}},
				specs.Mount{Destination: "/single-rw", Type: "bind", Source: filepath.Join(fileDir, "single-rw"), Options: []string{"bind", "rw"}})
			for i := 0; i < extra; i++ {
				b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: fmt.Sprintf("/extra%d", i), Type: "bind", Source: t.TempDir(), Options: []string{"rbind", "ro"}})
			}
			b.save(t)
			r := v.runOK("--debug", "run", "--bundle", b.Dir, uniqueID(t))
			wantTemplate := extra == 0
			if got := strings.Contains(r.stderr, "template=true"); got != wantTemplate {
				t.Errorf("restored from a template: %v, want %v", got, wantTemplate)
			}
			if r.stdout != "from-the-host\none-file\nin\n0 1\n" {
				t.Errorf("stdout %q, want the files, then the share's entries: 0 1 (the two bound files, nothing else of their directory), and no write to the read-only share", r.stdout)
			}
			if b, err := os.ReadFile(filepath.Join(fileDir, "single-rw")); err != nil || string(b) != "appended\n" {
				t.Errorf("host side of the rw file bind: %q, %v", b, err)
			}
			if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
				t.Errorf("host side of the rw bind mount: %q, %v", b, err)
			}
			if _, err := os.Stat(filepath.Join(ro, "x")); !os.IsNotExist(err) {
				t.Errorf("a file was written through the read-only bind mount: %v", err)
			}
		})
	}
}

func TestRunExt4Rootfs(t *testing.T) {
	v := newVZ(t)
	for _, mode := range []string{"ordered", "writeback", "journal"} {
		t.Run(mode, func(t *testing.T) {
			b := newBundle(t, "sh", "-c", "grep ' / ' /proc/mounts; echo from-ext4 > /root/out.txt; mkfifo /root/made-fifo; ln /root/out.txt /root/out-link")
			b.annotate(t, "io.vzrun.rootfs", "ext4", "io.vzrun.ext4.data", mode)
			// What the image cannot lose on its way back (debugfs rdump
			// alone would drop them): a FIFO, a device node, a file
			// capability.
			root := filepath.Join(b.rootfs(), "root")
			capability := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			if err := errors.Join(unix.Mkfifo(filepath.Join(root, "old-fifo"), 0o600),
				unix.Mknod(filepath.Join(root, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))),
				os.WriteFile(filepath.Join(root, "ping"), []byte("ping"), 0o755),
				unix.Setxattr(filepath.Join(root, "ping"), "security.capability", capability, 0)); err != nil {
				t.Fatal(err)
			}
			r := v.runOK("run", "--bundle", b.Dir, uniqueID(t))
			if !strings.Contains(r.stdout, " ext4 ") {
				t.Errorf("root is not ext4: %q", r.stdout)
			}
			if mode != "ordered" && !strings.Contains(r.stdout, "data="+mode) {
				t.Errorf("root mount lacks data=%s: %q", mode, r.stdout)
			}
			got, err := os.ReadFile(filepath.Join(b.rootfs(), "root", "out.txt"))
			if err != nil || string(got) != "from-ext4\n" {
				t.Errorf("host rootfs /root/out.txt: %q, %v", got, err)
			}
			for name, typ := range map[string]uint32{"old-fifo": unix.S_IFIFO, "made-fifo": unix.S_IFIFO, "null": unix.S_IFCHR} {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(root, name), &st); err != nil || st.Mode&unix.S_IFMT != typ {
					t.Errorf("host rootfs /root/%s: mode %o, %v; want type %o", name, st.Mode, err, typ)
				}
			}
			var a, l unix.Stat_t
			if err := errors.Join(unix.Stat(filepath.Join(root, "out.txt"), &a), unix.Stat(filepath.Join(root, "out-link"), &l)); err != nil || a.Ino != l.Ino {
				t.Errorf("host rootfs /root/out-link is not a hard link of out.txt (inodes %d, %d): %v", a.Ino, l.Ino, err)
			}
			buf := make([]byte, 64)
			if n, err := unix.Getxattr(filepath.Join(root, "ping"), "security.capability", buf); err != nil || !bytes.Equal(buf[:n], capability) {
				t.Errorf("host rootfs /root/ping lost its file capability: %v", err)
			}
		})
	}
}

// A kill -9 of the monitor of a container on an ext4 rootfs loses nothing
// the container wrote: delete syncs the image it left back.
func TestExt4RootfsSurvivesKill9OfMonitor(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo persisted > /root/marker; sync; echo ready > /tmp/ready; sleep 1000")
	b.annotate(t, "io.vzrun.rootfs", "ext4")
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	// The ready file is in the image, not yet on the host: wait in the
	// guest.
	waitFor(t, 60*time.Second, func() bool { return v.run("", "exec", id, "cat", "/tmp/ready").stdout == "ready\n" })
	pid := int(v.state(id)["pid"].(float64))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	v.runOK("delete", id)
	if got, err := os.ReadFile(filepath.Join(b.rootfs(), "root", "marker")); err != nil || string(got) != "persisted\n" {
		t.Errorf("host rootfs /root/marker after kill -9 and delete: %q, %v", got, err)
	}
	if left, _ := filepath.Glob(filepath.Join(b.Dir, ".vzrun-sync-*")); len(left) > 0 {
		t.Errorf("sync left %v", left)
	}
}

// An ext4 rootfs whose sync back runs out of room on the bundle's disk
// loses nothing: the run fails saying where the data is, the container
// stays (stopped) with its image, and a delete once there is room syncs it
// back. (debugfs exits 0 on a full disk: a truncated copy was swapped in
// and the image removed.)
func TestExt4SyncBackOnAFullDisk(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "head -c 30000000 /dev/urandom > /big; echo important > /root/marker; sync")
	b.annotate(t, "io.vzrun.rootfs", "ext4")
	// The bundle moves to a 20 MB file system: the 30 MB the container
	// writes cannot be synced back there.
	small := t.TempDir()
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=20m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(small, syscall.MNT_DETACH) })
	if out, err := exec.Command("cp", "-a", b.Dir, small).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	b.Dir = filepath.Join(small, filepath.Base(b.Dir))
	id := uniqueID(t)
	r := v.run("", "run", "--bundle", b.Dir, id)
	if r.code == 0 || !strings.Contains(r.stderr, "No space left on device") || !strings.Contains(r.stderr, "vzrun delete "+id) {
		t.Fatalf("run: exit %d, stderr %q; want a failure naming the full disk and delete", r.code, r.stderr)
	}
	if st := v.state(id); st["status"] != "stopped" {
		t.Fatalf("container after the failed sync: %v", st)
	}
	if _, err := os.Stat(filepath.Join(b.rootfs(), "root", "marker")); err == nil {
		t.Errorf("a partial sync was swapped into the rootfs")
	}
	if err := syscall.Mount("tmpfs", small, "tmpfs", syscall.MS_REMOUNT, "size=200m"); err != nil {
		t.Fatal(err)
	}
	v.runOK("delete", id)
	if got, err := os.ReadFile(filepath.Join(b.rootfs(), "root", "marker")); err != nil || string(got) != "important\n" {
		t.Errorf("/root/marker after delete: %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(b.rootfs(), "big")); err != nil || fi.Size() != 30000000 {
		t.Errorf("/big after delete: %v, %v", fi, err)
	}
}

// TestExt4WritesSurviveKill9: what a container wrote to an ext4 rootfs
// before its VM was killed (kill -9 of the monitor) is back in the bundle
// after delete: with io.vzrun.ext4.sync every write that returned, by
// default all but the last ~1 s (the guest writes back within 0.1 s and
// commits its journal every second; it held 5-30 s before).
func TestExt4WritesSurviveKill9(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "sync"}[sync], func(t *testing.T) {
			v := newVZ(t)
			progress := t.TempDir()
			b := newBundle(t, "sh", "-c", "i=0; while :; do i=$((i+1)); echo line-$i >> /data.log; echo $i > /progress/n; sleep 0.05; done")
			b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/progress", Type: "bind", Source: progress, Options: []string{"rbind", "rw"}})
			b.save(t)
			b.annotate(t, "io.vzrun.rootfs", "ext4", "io.vzrun.ext4.sync", fmt.Sprint(sync))
			id := uniqueID(t)
			v.detach("run", "--detach", "--bundle", b.Dir, id)
			written := func() int {
				got, _ := os.ReadFile(filepath.Join(progress, "n"))
				n, _ := strconv.Atoi(strings.TrimSpace(string(got)))
				return n
			}
			waitFor(t, 120*time.Second, func() bool { return written() > 0 })
			n0, t0 := written(), time.Now()
			waitFor(t, 120*time.Second, func() bool { return written() >= n0+100 })
			perSecond := float64(written()-n0) / time.Since(t0).Seconds()
			pid := int(v.state(id)["pid"].(float64))
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
			n := written()
			v.runOK("delete", id)
			data, err := os.ReadFile(filepath.Join(b.rootfs(), "data.log"))
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Count(string(data), "\n")
			t.Logf("%d lines written (the last reported, %.1f a second), %d in the rootfs after kill -9 and delete", n, perSecond, lines)
			want := n
			if !sync {
				want = n - int(2*perSecond) // ~1 s of writes, with room
			}
			if lines < want {
				t.Errorf("%d of %d lines survived, want at least %d", lines, n, want)
			}
		})
	}
}

// When whoever reads the container's stdout goes away, the container's
// next write fails (EPIPE) and the run ends, as `runc run yes | head`
// does; the VM is not left busy forever.
func TestRunStdoutReaderGoesAway(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "yes")
	cmd := v.cmd("run", "--bundle", b.Dir, uniqueID(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startInBackground(t, cmd)
	line := make([]byte, 2)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "y\n" {
		t.Fatalf("first line: %q, %v", line, err)
	}
	out.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("run ended with status 0 after its reader went away")
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("run did not end after its stdout reader went away")
	}
}

// A SIGINT to a foreground run while it is still creating the container
// ends it with nothing left behind (the leftovers check of newVZ).
func TestRunInterruptedWhileCreating(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sleep", "1000")
	id := uniqueID(t)
	cmd := v.cmd("run", "--bundle", b.Dir, id)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	startInBackground(t, cmd)
	waitFor(t, 60*time.Second, func() bool { return v.run("", "state", id).code == 0 })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("run interrupted while creating: exit 0; stderr %s", stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("run did not end after SIGINT")
	}
}

// A detached create that is interrupted (SIGTERM) or killed (SIGKILL)
// while the VM is being set up reports failure and leaves nothing: no
// container created behind its back.
func TestCreateInterruptedWhileCreating(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			v := newVZ(t)
			b := newBundle(t, "sleep", "1000")
			id := uniqueID(t)
			cmd := v.cmd("create", "--bundle", b.Dir, id)
			startDetachingInBackground(t, cmd)
			// Interrupted once the monitor runs: before, the state is
			// create's own, and a kill -9 then leaves it to delete, as
			// runc's does.
			waitFor(t, 60*time.Second, func() bool {
				for _, p := range processesMentioning(id) {
					if strings.Contains(p, " monitor ") {
						return true
					}
				}
				return false
			})
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err == nil {
				t.Errorf("create interrupted by %v: exit 0", sig)
			}
			// The monitor finds its create gone and removes what it made.
			waitFor(t, 90*time.Second, func() bool { return v.run("", "state", id).code != 0 })
			waitFor(t, 30*time.Second, func() bool { return len(processesMentioning("/"+id+"/")) == 0 })
		})
	}
}

// startReadyRun starts a foreground run of b in the background and waits
// until its process has printed "ready"; it returns the run and its stderr.
func startReadyRun(t *testing.T, v *vz, b *bundle, id string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := v.cmd("run", "--bundle", b.Dir, id)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	startInBackground(t, cmd)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(stdout.String(), "ready") })
	return cmd, &stderr
}

// A foreground run in a new network namespace goes on in a child in it;
// a kill -9 of that child ends the run with 137 and leaves no state.
func TestRunChildInNetNSKilled(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo ready; sleep 1000")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	b.save(t)
	id := uniqueID(t)
	cmd, _ := startReadyRun(t, v, b, id)
	child := 0
	for _, p := range processesMentioning(id) {
		var pid int
		fmt.Sscan(p, &pid)
		if pid != cmd.Process.Pid && strings.Contains(p, " run ") && procPPid(pid) == cmd.Process.Pid {
			child = pid
		}
	}
	if child == 0 {
		t.Fatalf("no child of the run among %q", processesMentioning(id))
	}
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 137 {
		t.Errorf("run whose child was killed: %v, want exit 137", err)
	}
	if r := v.run("", "state", id); r.code == 0 {
		t.Errorf("state left after the run's child was killed: %s", r.stdout)
	}
}

// procPPid is a process's parent pid (0 if it is gone).
func procPPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		var state string
		var ppid int
		fmt.Sscan(s[i+1:], &state, &ppid)
		return ppid
	}
	return 0
}

// A run whose own log goes to a pipe nobody reads any more (`vzrun
// --debug run ... 2>&1 | head -1` once head is gone) is not killed by
// SIGPIPE half-way: it runs the container and cleans up.
func TestRunLogReaderGone(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "true")
	id := uniqueID(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	cmd := v.cmd("--debug", "run", "--bundle", b.Dir, id)
	cmd.Stderr = w
	if err := cmd.Run(); err != nil {
		t.Errorf("run with its log's reader gone: %v", err)
	}
	if r := v.run("", "state", id); r.code == 0 {
		t.Errorf("state left: %s", r.stdout)
	}
}

// A foreground run whose VM is killed under it fails with an error that
// says so (not only the agent connection's "ttrpc: closed").
func TestRunVMKilled(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "echo ready; sleep 1000")
	id := uniqueID(t)
	cmd, stderr := startReadyRun(t, v, b, id)
	for _, p := range processesMentioning("/" + id + "/") {
		if strings.Contains(p, "qemu-system") {
			var pid int
			fmt.Sscan(p, &pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(stderr.String(), "the VM exited (signal: killed)") {
		t.Errorf("run whose VM was killed: %v, stderr %q", err, stderr.String())
	}
}

func TestRunSignalForwarded(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done")
	cmd := v.cmd("run", "--bundle", b.Dir, uniqueID(t))
	var stdout syncBuffer
	cmd.Stdout = &stdout
	startInBackground(t, cmd)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(stdout.String(), "ready") })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 7 || !strings.Contains(stdout.String(), "got-term") {
		t.Errorf("after SIGTERM: exit %d, stdout %q; want 7 and got-term", code, stdout.String())
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A root and a bind-mount source that are symlinks (a bundle's rootfs
// made by a tool that links it, -v /var/run:...) are used where they
// lead, as a bind mount follows its source; the file servers refuse to
// share a symlink, which failed the create with QEMU's words.
func TestRunSymlinkedRootAndBindSource(t *testing.T) {
	v := newVZ(t)
	b := newBundle(t, "sh", "-c", "cat /data/in.txt; echo out > /data/out.txt; cat /marker")
	if err := os.Rename(b.rootfs(), filepath.Join(b.Dir, "real-rootfs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real-rootfs", b.rootfs()); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.Dir, "real-rootfs", "marker"), "in the linked root\n")
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "in.txt"), "through the link\n")
	link := filepath.Join(t.TempDir(), "data-link")
	if err := os.Symlink(data, link); err != nil {
		t.Fatal(err)
	}
	b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: link, Options: []string{"rbind"}})
	b.save(t)
	for _, mode := range []string{"template", "cold"} {
		if mode == "cold" {
			b.annotate(t, "io.vzrun.template", "false")
		}
		r := v.run("", "run", "--bundle", b.Dir, uniqueID(t))
		if r.code != 0 || r.stdout != "through the link\nin the linked root\n" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", mode, r.code, r.stdout, r.stderr)
		}
		if got, err := os.ReadFile(filepath.Join(data, "out.txt")); err != nil || string(got) != "out\n" {
			t.Errorf("%s: written through the linked bind mount: %q, %v", mode, got, err)
		}
	}
}
