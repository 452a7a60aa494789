package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/vzrun/vzrun/internal/sockpath"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// Binaries; variables so tests and packagers can point elsewhere.
var (
	QEMUBinary      = "qemu-system-x86_64"
	VirtiofsdBinary = "/usr/lib/qemu/virtiofsd"
	// ProxyBinary is QEMU's 9p proxy helper (QEMU 9.1 and older).
	ProxyBinary = "/usr/lib/qemu/virtfs-proxy-helper"
)

// BootTimeout bounds how long a guest may take to greet the host.
var BootTimeout = 60 * time.Second

type vm struct {
	cfg   hypervisor.Config
	accel string
	guest guest
	// saveDir is where SaveTemplate keeps this VM's memory.
	saveDir string
	// proxy: a clone's shares are served by QEMU's 9p proxy helper (see
	// usesProxy); proxies are QEMU's ends of the helpers' sockets, one per
	// share, passed to QEMU after the taps.
	proxy   bool
	proxies []*os.File

	mu      sync.Mutex
	cmd     *exec.Cmd
	fsds    []*exec.Cmd // file servers: virtiofsd, 9p proxy
	conn    net.Conn
	done    chan struct{}
	waitErr error
	stopped bool
	timings hypervisor.Timings
}

var (
	_ hypervisor.VM        = (*vm)(nil)
	_ hypervisor.Pauser    = (*vm)(nil)
	_ hypervisor.Ballooner = (*vm)(nil)
)

// New returns a VM for cfg; nothing runs until Start.
func New(cfg hypervisor.Config) (hypervisor.VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Accel == "" {
		cfg.Accel = hypervisor.AccelTCG
	}
	if cfg.Accel == hypervisor.AccelHVF {
		return nil, fmt.Errorf("accelerator hvf is macOS only")
	}
	g, err := guestFor(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(g.binary); err != nil {
		return nil, fmt.Errorf("%s not found (apt-get install %s): %w", g.binary, g.pkgHint, err)
	}
	if len(cfg.Shares) > 0 && !cfg.Restorable {
		if _, err := os.Stat(VirtiofsdBinary); err != nil {
			return nil, fmt.Errorf("virtiofsd: %w", err)
		}
	}
	return &vm{cfg: cfg, accel: cfg.Accel, guest: g, proxy: usesProxy(cfg), done: make(chan struct{})}, nil
}

func (v *vm) path(name string) string { return filepath.Join(v.cfg.StateDir, name) }

func (v *vm) Start(ctx context.Context) (retErr error) {
	defer func() {
		if retErr != nil {
			_ = v.Stop(context.WithoutCancel(ctx))
		}
	}()
	// QEMU gets its own copies of the proxies' sockets; ours go on any
	// return, also when a later file server fails to start.
	defer func() {
		for _, f := range v.proxies {
			f.Close()
		}
		v.proxies = nil
	}()
	for i, s := range v.cfg.Shares {
		var err error
		switch {
		case v.proxy:
			err = v.startProxy(i, s)
		case !v.cfg.Restorable:
			err = v.startVirtiofsd(i, s)
		}
		if err != nil {
			return err
		}
	}
	args, err := v.args()
	if err != nil {
		return err
	}
	log.G(ctx).WithField("id", v.cfg.ID).Debugf("qemu %s", strings.Join(args, " "))
	cmd := exec.Command(v.guest.binary, args...)
	// Sockets are named relative to the state dir: its path may be too
	// long for a unix socket.
	cmd.Dir = v.cfg.StateDir
	stderr, err := os.Create(v.path("qemu.log"))
	if err != nil {
		return err
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stderr, stderr
	// Tap devices are passed open (fd 3 on): they live in the
	// container's network namespace, which QEMU need not be in.
	for _, n := range v.cfg.NICs {
		if n.Tap != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, n.Tap)
		}
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, v.proxies...)
	// The VM lives and dies with the process that owns it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if v.cfg.Restorable && !v.proxy {
		// QEMU serves a clone's shares itself (no 9p proxy helper); it
		// makes read-only shares read-only (readonly=on).
		var mounts []bindMount
		for _, s := range v.cfg.Shares {
			s.ReadOnly = false
			mounts = append(mounts, shareMounts(s)...)
		}
		if err := withBinds(cmd, mounts); err != nil {
			return err
		}
	}
	v.timings.Launched = time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", v.guest.binary, err)
	}
	v.mu.Lock()
	v.cmd = cmd
	v.mu.Unlock()
	go func() {
		err := cmd.Wait()
		v.mu.Lock()
		v.waitErr = err
		v.mu.Unlock()
		close(v.done)
	}()

	// A restored guest greeted its template's host long ago: the clone
	// is ready once the template's state is loaded.
	conn, err := v.dialAgent(ctx, v.cfg.Template == "")
	if err != nil {
		return err
	}
	v.conn = conn
	if v.cfg.Template != "" {
		if err := v.restore(ctx); err != nil {
			return err
		}
		v.timings.AgentReady = time.Now()
	}
	return nil
}

// dialAgent connects to the agent's chardev (QEMU waits for this before it
// runs the guest) and reads the agent's greeting.
func (v *vm) dialAgent(ctx context.Context, greeting bool) (net.Conn, error) {
	deadline := time.Now().Add(BootTimeout)
	sock := v.path("agent.sock")
	var conn net.Conn
	for {
		c, err := sockpath.Dial(sock)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-v.done:
			return nil, v.exitError("before it opened the agent channel")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("vm %s: no agent socket after %s", v.cfg.ID, BootTimeout)
		}
	}
	v.timings.VMMReady = time.Now()
	if !greeting {
		return conn, nil
	}

	hello := make([]byte, len(api.Hello))
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(conn, hello)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			conn.Close()
			select {
			case <-v.done:
				return nil, v.exitError("during boot")
			case <-time.After(time.Second):
			}
			return nil, fmt.Errorf("vm %s: reading the agent's greeting: %w%s", v.cfg.ID, err, v.consoleTail())
		}
	case <-v.done:
		conn.Close()
		return nil, v.exitError("during boot")
	case <-ctx.Done():
		conn.Close()
		return nil, ctx.Err()
	case <-time.After(time.Until(deadline)):
		conn.Close()
		return nil, fmt.Errorf("vm %s: the agent did not come up within %s%s", v.cfg.ID, BootTimeout, v.consoleTail())
	}
	if string(hello) != api.Hello {
		conn.Close()
		return nil, fmt.Errorf("vm %s: unexpected greeting %q on the agent channel", v.cfg.ID, hello)
	}
	v.timings.AgentReady = time.Now()
	return conn, nil
}

// exitError describes an early exit of QEMU with what it and the guest said.
func (v *vm) exitError(when string) error {
	v.mu.Lock()
	werr := v.waitErr
	v.mu.Unlock()
	msg := fmt.Sprintf("vm %s: qemu exited %s", v.cfg.ID, when)
	if werr != nil {
		msg += " (" + werr.Error() + ")"
	}
	if b, _ := os.ReadFile(v.path("qemu.log")); len(b) > 0 {
		var said []string
		for _, l := range strings.Split(string(b), "\n") {
			// QEMU's "waiting for connection" notice is not the reason.
			if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, ": info: ") {
				said = append(said, l)
			}
		}
		if len(said) > 0 {
			msg += ": " + lastLines(strings.Join(said, "\n"), 3)
		}
	}
	return fmt.Errorf("%s%s: %w", msg, v.consoleTail(), hypervisor.ErrVMExited)
}

// consoleTail is the end of the guest console log, for error messages.
func (v *vm) consoleTail() string {
	b, err := os.ReadFile(v.cfg.ConsoleLog)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	text := strings.ReplaceAll(string(b), "\r", "")
	tail := lastLines(text, 10)
	// A panic's reason is above its stack trace; agent errors say why
	// the guest gave up.
	var reasons []string
	for _, l := range strings.Split(text, "\n") {
		if (strings.Contains(l, "Kernel panic") || strings.HasPrefix(l, "vz-agent:")) && !strings.Contains(tail, l) {
			reasons = append(reasons, l)
		}
	}
	if len(reasons) > 0 {
		tail = strings.Join(reasons, "\n") + "\n...\n" + tail
	}
	return fmt.Sprintf("\nthe guest console's last lines:\n%s", tail)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// virtio-mmio transports a machine has: -M microvm 24 (with its second
// IOAPIC), -M virt 32. Every device the VM gets takes one.
func mmioTransports(arch string) int {
	if arch == hypervisor.ArchARM64 {
		return 32
	}
	return 24
}

// checkDevices refuses a VM with more devices than its machine has
// virtio-mmio transports for (QEMU's own words: "No 'virtio-bus' bus
// found"), naming what takes them.
func (v *vm) checkDevices() error {
	c := v.cfg
	shares := len(c.Shares)
	if c.Restorable {
		shares = max(shares, hypervisor.TemplateShares)
	}
	const fixed = 3 // virtio-serial (the agent's port), rng, balloon
	nics := len(c.NICs)
	if c.Restorable {
		nics = 1 // a template's one NIC slot
	}
	if n, limit := fixed+shares+nics+len(c.Disks), mmioTransports(v.guest.arch); n > limit {
		return fmt.Errorf("vm %s needs %d virtio devices, its machine has %d: %d file shares (the rootfs, one per bind-mount source directory, one for bound files), %d drive(s), %d NIC(s) and %d of its own; bind-mount fewer directories (files and subdirectories of one directory share it): %w",
			c.ID, n, limit, len(c.Shares), len(c.Disks), nics, fixed, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (v *vm) args() ([]string, error) {
	c := v.cfg
	if err := v.checkDevices(); err != nil {
		return nil, err
	}
	mem := strconv.Itoa(c.MemoryMiB) + "M"
	machine := "microvm,memory-backend=mem"
	// Under TCG the guest gets a CPU without AVX and fast string
	// instructions (ERMS): QEMU 7.2 emulates those slowly, and glibc, Go
	// and the kernel pick them for every copy when offered. Measured here
	// against "max", cold boots: stdout relay 84-120 MB/s instead of
	// 56-61, a warm `runc --version` 0.04-0.06 s instead of 0.09-0.19,
	// container create 1.0-1.3 s instead of 1.3-1.6.
	cpu := "Nehalem"
	if v.accel == hypervisor.AccelKVM {
		cpu = "host"
	}
	// tsc=reliable: under TCG on a busy host the clocksource watchdog
	// can find the TSC skewed against the jiffies it measures it by and
	// switch to refined-jiffies, which loses ticks there: such a guest's
	// clock ran ~40% slow, and a template saved from it passed that to
	// every VM restored from it. QEMU's TSC follows the host's clock.
	cmdline := []string{"console=ttyS0", "quiet", "panic=-1", "reboot=t", "tsc=reliable"}
	if khz := tscKHz(); khz > 0 {
		// Without it, TCG guests often hang calibrating the TSC.
		cmdline = append(cmdline, "tsc_early_khz="+strconv.Itoa(khz))
	}
	if v.guest.arch == hypervisor.ArchARM64 {
		machine, cpu, cmdline = arm64Machine(v.accel)
	}
	cmdline = append(cmdline, c.KernelArgs...)
	if c.Restorable {
		// A template's boot (and its clones', which keep the
		// template's command line): its agent lets the clock settle.
		cmdline = append(cmdline, api.TemplateBootArg)
	}
	args := []string{
		"-M", machine,
		"-accel", v.accelArg(),
		"-cpu", cpu,
		"-smp", strconv.Itoa(c.CPUs),
		"-m", mem,
		// vhost-user (virtiofsd) needs guest memory it can map.
		"-object", v.memoryBackend(mem),
		"-global", "virtio-mmio.force-legacy=false",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:" + c.ConsoleLog,
		"-kernel", c.Kernel,
		"-initrd", c.Initrd,
		"-append", strings.Join(cmdline, " "),
		"-chardev", "socket,id=agent,path=agent.sock,server=on,wait=on",
		"-device", "virtio-serial-device",
		"-device", "virtserialport,chardev=agent,name=" + api.PortName,
		"-device", "virtio-rng-device",
		// A traditional balloon (update shrinks and grows the VM within
		// its boot size); free page reporting hands pages the guest
		// frees back to the host, so QEMU's RSS follows the guest's use.
		"-device", "virtio-balloon-device,free-page-reporting=on",
		"-qmp", "unix:qmp.sock,server=on,wait=off",
	}
	if c.Restorable {
		more, err := v.restorableDevices()
		if err != nil {
			return nil, err
		}
		args = append(args, more...)
	}
	for i, s := range c.Shares {
		if c.Restorable {
			break
		}
		id := "fs" + strconv.Itoa(i)
		args = append(args,
			"-chardev", "socket,id="+id+",path="+id+".sock",
			"-device", "vhost-user-fs-device,chardev="+id+",tag="+s.Tag)
	}
	for i := range c.NICs {
		if c.Restorable {
			break
		}
		args = append(args, nicArgs(c.NICs, i)...)
	}
	for i, d := range c.Disks {
		id := "disk" + strconv.Itoa(i)
		drive := "if=none,id=" + id + ",format=raw,cache=none,aio=threads,file=" + optValue(d.Path)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", "virtio-blk-device,drive="+id+",serial="+d.Serial)
	}
	return args, nil
}

// nicArgs attaches NIC i: its tap (passed as fd 3 on, in NIC order), or
// QEMU's user networking, a NAT with a DHCP server, for a NIC without one.
func nicArgs(nics []hypervisor.NIC, i int) []string {
	id := "net" + strconv.Itoa(i)
	netdev := "user,id=" + id
	if nics[i].Tap != nil {
		netdev = "tap,id=" + id + ",fd=" + strconv.Itoa(3+taps(nics[:i]))
	}
	return []string{"-netdev", netdev, "-device", "virtio-net-device,netdev=" + id + ",mac=" + nics[i].MAC.String()}
}

func (v *vm) startVirtiofsd(i int, s hypervisor.Share) error {
	name := "fs" + strconv.Itoa(i)
	sock := v.path(name + ".sock")
	// The listening socket is made here and handed over: virtiofsd names
	// its pid file after --socket-path, and two VMs' relative names (the
	// state dir's path may be too long for a socket) would collide.
	l, err := sockpath.Listen(sock)
	if err != nil {
		return fmt.Errorf("socket for virtiofsd %s: %w", s.Path, err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	defer ul.Close()
	lf, err := ul.File()
	if err != nil {
		return err
	}
	defer lf.Close()
	return v.startFileServer("virtiofsd", name+"-virtiofsd", "virtiofsd-"+strconv.Itoa(i)+".log", lf, s,
		VirtiofsdBinary, "--fd=3", "-o", "source="+fuseOptValue(s.Path), "-o", "cache=auto",
		"-o", "sandbox=chroot", "-o", "xattr", "-o", "announce_submounts")
}

// raiseFileLimit lifts the open-file limit of the file server pid:
// virtiofsd keeps a descriptor for every inode the guest has looked up,
// and under the 1024 a shell or a service usually has (soft) a container
// that had touched ~1000 files failed every open after. virtiofsd raises
// its own limit only where it may raise the hard one (CAP_SYS_RESOURCE);
// without that it keeps what it inherited, so the soft limit goes up to
// the hard one at least.
func raiseFileLimit(pid int) error {
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		return err
	}
	n := fileServerFiles()
	if n <= old.Cur {
		return nil
	}
	if unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: max(n, old.Max)}, nil) == nil || old.Cur == old.Max {
		return nil
	}
	return unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: old.Max, Max: old.Max}, nil)
}

// fileServerFiles is the open-file limit a file server asks for.
func fileServerFiles() uint64 {
	n := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v < n {
			n = v
		}
	}
	return n
}

// startFileServer starts a file server for share s with conn as its fd
// 3, logging to logName in the state dir. Its argv[0] is the state dir's
// path/name, which is how `delete` finds one left behind (its working
// directory goes with its chroot into the share).
func (v *vm) startFileServer(what, name, logName string, conn *os.File, s hypervisor.Share, binary string, args ...string) error {
	cmd := exec.Command(binary, args...)
	cmd.Args[0] = v.path(name)
	cmd.Dir = v.cfg.StateDir
	cmd.ExtraFiles = []*os.File{conn}
	logf, err := os.Create(v.path(logName))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := withBinds(cmd, shareMounts(s)); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s for %s: %w", what, s.Path, err)
	}
	if err := raiseFileLimit(cmd.Process.Pid); err != nil {
		log.L.WithError(err).WithField("id", v.cfg.ID).Warnf("raising the open-file limit of %s", what)
	}
	v.mu.Lock()
	v.fsds = append(v.fsds, cmd)
	v.mu.Unlock()
	go func() {
		err := cmd.Wait()
		v.fileServerExited(what, s.Path, err)
	}()
	return nil
}

// fileServerExited stops the VM when one of its file servers dies under
// it (killed, crashed): the guest's rootfs or volume would fail every
// access from then on, so the container ends, as Kata ends a sandbox whose
// virtiofsd died. A file server ending because QEMU is going is normal.
func (v *vm) fileServerExited(what, path string, err error) {
	select {
	case <-v.done:
		return
	case <-time.After(time.Second):
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped || v.cmd == nil {
		return
	}
	log.L.WithError(err).WithField("id", v.cfg.ID).Warnf("%s for %s exited: stopping the VM", what, path)
	_ = v.cmd.Process.Kill()
}

// usesProxy says whether the shares of a VM restored from a template are
// served by QEMU's 9p proxy helper, one process per share, rather than by
// QEMU's own 9p server ("local"). QEMU 7.2's local server refuses, since
// its fix for CVE-2023-2861, every operation that would open a special
// file on the host, and its mknod opens the new node to set its mode: a
// FIFO, unix socket or device node cannot be made on the rootfs, and a
// statfs of one fails. The helper does mknod, chown and statfs by path,
// as the guest's credentials, chrooted into the share, and hands QEMU
// descriptors of the regular files the guest opens. Metadata goes over a
// socket: ~20% slower execs and small-file writes under TCG here, no
// measurable change in a whole run from a template.
// QEMU 9.2 dropped the helper; the local server of QEMU 10 makes special
// files (measured with 10.0.2).
func usesProxy(cfg hypervisor.Config) bool {
	if cfg.Template == "" {
		return false
	}
	_, err := os.Stat(ProxyBinary)
	return err == nil
}

// startProxy serves share i with QEMU's 9p proxy helper, chrooted into
// the share; QEMU gets the other end of a socket pair.
func (v *vm) startProxy(i int, s hypervisor.Share) error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// QEMU and the helper talk through a relay of this process's (see
	// relay9p): a socket pair each.
	hfds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return err
	}
	qemuEnd, helperEnd := os.NewFile(uintptr(fds[0]), "p9-qemu"), os.NewFile(uintptr(hfds[1]), "p9-helper")
	defer helperEnd.Close()
	v.proxies = append(v.proxies, qemuEnd)
	n := strconv.Itoa(i)
	if err := v.startFileServer("the 9p proxy", "p9-"+n+"-proxy", "p9proxy-"+n+".log", helperEnd, s,
		ProxyBinary, "--nodaemon", "--fd", "3", "--path", s.Path); err != nil {
		syscall.Close(fds[1])
		syscall.Close(hfds[0])
		return err
	}
	// The relay sets privileged xattrs itself, in the shared directory as
	// the helper sees it (its root: the share, with the files bound over
	// its entries and read-only where the share is).
	root := &helperRoot{pid: v.lastFileServer(), share: s.Path}
	go func() {
		if err := relay9p(fds[1], hfds[0], root); err != nil {
			log.L.WithError(err).WithField("id", v.cfg.ID).Debugf("9p relay for %s", s.Path)
		}
	}()
	return nil
}

// lastFileServer is the PID of the file server started last.
func (v *vm) lastFileServer() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fsds[len(v.fsds)-1].Process.Pid
}

func (v *vm) AgentConn() net.Conn { return v.conn }

func (v *vm) Wait(ctx context.Context) error {
	select {
	case <-v.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	v.reapHelpers(2 * time.Second)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped {
		return nil
	}
	return v.waitErr
}

// reapHelpers gives the file servers (virtiofsd, 9p proxy), which exit
// when QEMU disconnects, a moment to do so, then kills them.
func (v *vm) reapHelpers(grace time.Duration) {
	v.mu.Lock()
	fsds := v.fsds
	v.fsds = nil
	v.mu.Unlock()
	deadline := time.Now().Add(grace)
	for _, c := range fsds {
		for c.ProcessState == nil && processAlive(c.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		_ = c.Process.Kill()
	}
	for _, n := range []string{"agent.sock", "qmp.sock"} {
		_ = os.Remove(v.path(n))
	}
	for i := range v.cfg.Shares {
		_ = os.Remove(v.path("fs" + strconv.Itoa(i) + ".sock"))
	}
}

func processAlive(pid int) bool {
	// A zombie still answers kill(0); look at its state instead.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func (v *vm) Stop(ctx context.Context) error {
	v.mu.Lock()
	v.stopped = true
	cmd := v.cmd
	v.mu.Unlock()
	if v.conn != nil {
		v.conn.Close()
	}
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-v.done
	}
	v.reapHelpers(0)
	return nil
}

func (v *vm) Pid() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil {
		return 0
	}
	return v.cmd.Process.Pid
}

func (v *vm) Accel() string                    { return v.accel }
func (v *vm) Timings() hypervisor.Timings      { return v.timings }
func (v *vm) Pause(ctx context.Context) error  { return v.qmp(ctx, "stop", nil) }
func (v *vm) Resume(ctx context.Context) error { return v.qmp(ctx, "cont", nil) }

func (v *vm) SetMemory(ctx context.Context, mib int) (int, error) {
	mib = min(max(mib, 64), v.cfg.MemoryMiB)
	return mib, v.qmp(ctx, "balloon", map[string]any{"value": int64(mib) << 20})
}

// qmp runs one QMP command.
func (v *vm) qmp(ctx context.Context, command string, args map[string]any) error {
	c, err := v.dialQMP(ctx)
	if err != nil {
		return fmt.Errorf("qmp: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		return fmt.Errorf("qmp: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		msg := map[string]any{"execute": cmd}
		if cmd == command && args != nil {
			msg["arguments"] = args
		}
		b, err := json.Marshal(msg)
		if err != nil {
			return err
		}
		if _, err := c.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("qmp %s: %w", cmd, err)
			}
			if strings.Contains(line, `"error"`) {
				return fmt.Errorf("qmp %s: %s", cmd, strings.TrimSpace(line))
			}
			if strings.Contains(line, `"return"`) {
				break
			}
		}
	}
	return nil
}

// tscKHz is the host TSC frequency, from /proc/cpuinfo.
func tscKHz() int {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, val, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// TCGTranslationMiB caps TCG's translated-code buffer; 0 keeps QEMU's
// default (1 GiB reserved, of which a restored VM with an idle container
// has filled ~43 MiB). Measured here (2026-11-22, 6 runs each): 16 MiB
// saved 42 MiB of an idle QEMU's PSS and made a run from a template 2x
// slower, 32 MiB saved 21 MiB at 1.5x, 48 MiB changed neither.
var TCGTranslationMiB = 0

func (v *vm) accelArg() string {
	if v.accel == hypervisor.AccelTCG && TCGTranslationMiB > 0 {
		return "tcg,tb-size=" + strconv.Itoa(TCGTranslationMiB)
	}
	return v.accel
}

// optValue escapes a value (a path) for a QEMU option list, where a comma
// separates options and ",," is a comma.
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// fuseOptValue escapes a value for virtiofsd's -o, where a comma separates
// options and a backslash escapes.
func fuseOptValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, ",", `\,`).Replace(s)
}
