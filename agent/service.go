package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/internal/specjson"
)

const (
	runcBinary    = "/sbin/runc"
	runcRoot      = "/run/runc"
	containersDir = "/run/vzrun/containers"
	sharesDir     = "/run/vzrun/shares"
)

// runcCommand is how the agent runs runc: runcBinary, or its sealed copy
// (sealRunc).
var runcCommand = runcBinary

// container is one OCI container in the guest.
type container struct {
	id     string
	bundle string
	runc   *runc.Runc
	init   *process
	execs  map[string]*process
	mounts []string // unmounted on delete, last first

	// ifSysctls are the spec's sysctls of network interfaces, set once
	// the NICs are in the container (ConfigureNetwork), at the latest at
	// start (where runc would have failed on a missing interface).
	netMu     sync.Mutex
	ifSysctls map[string]string
	// netAgain are the spec's other net sysctls, set again after the
	// host namespace's settings are copied (ConfigureNetwork).
	netAgain map[string]string
}

// Service implements api.AgentService.
type Service struct {
	exits   *exitTable
	startNs int64
	readyNs int64

	mu         sync.Mutex
	containers map[string]*container
	shares     map[string]string // virtio-fs tag -> mount point
	staged     map[string][]byte // container id -> spec sent in pieces
}

var _ api.AgentService = (*Service)(nil)

// NewService returns the agent service; exits must be fed by the subreaper.
func NewService(exits *exitTable, startNs int64) *Service {
	return &Service{exits: exits, startNs: startNs, containers: map[string]*container{}, shares: map[string]string{}, staged: map[string][]byte{}}
}

func (s *Service) Hello(ctx context.Context, req *api.HelloRequest) (*api.HelloResponse, error) {
	// A VM restored from a template wakes with the template's clock and
	// random state.
	if t := req.GetHostTimeUnixNano(); t > 0 {
		ts := unix.NsecToTimespec(t)
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("setting the clock: %w", err))
		}
	}
	if e := req.GetEntropy(); len(e) > 0 {
		if err := addEntropy(e); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("reseeding the random number generator: %w", err))
		}
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	return &api.HelloResponse{
		KernelRelease: unix.ByteSliceToString(u.Release[:]),
		AgentStartNs:  s.startNs,
		AgentReadyNs:  s.readyNs,
	}, nil
}

// maxSpec bounds a spec sent in pieces (runc reads config.json whole too).
const maxSpec = 256 << 20

func (s *Service) StageSpec(ctx context.Context, req *api.StageSpecRequest) (*api.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.staged[req.ContainerId]
	if len(b)+len(req.Chunk) > maxSpec {
		delete(s.staged, req.ContainerId)
		return nil, errgrpc.ToGRPC(fmt.Errorf("spec of %s: larger than %d MiB: %w", req.ContainerId, maxSpec>>20, errdefs.ErrInvalidArgument))
	}
	s.staged[req.ContainerId] = append(b, req.Chunk...)
	return &api.Empty{}, nil
}

func (s *Service) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (_ *api.CreateContainerResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	id := req.ContainerId
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return nil, fmt.Errorf("container id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	var spec specs.Spec
	specJSON := req.Spec
	if len(specJSON) == 0 {
		s.mu.Lock()
		specJSON = s.staged[id]
		delete(s.staged, id)
		s.mu.Unlock()
	}
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		return nil, fmt.Errorf("decoding spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[id]; ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrAlreadyExists)
	}
	c := &container{id: id, bundle: filepath.Join(containersDir, id), execs: map[string]*process{}}
	defer func() {
		if retErr != nil {
			c.cleanup()
		}
	}()
	if err := os.MkdirAll(c.bundle, 0o711); err != nil {
		return nil, err
	}
	root, err := s.mountRootfs(c, req.Rootfs)
	if err != nil {
		return nil, err
	}
	if req.Rootfs.Type == "9p" && spec.Linux != nil {
		if err := c.twinSpecialFiles(root, spec.Linux.ReadonlyPaths); err != nil {
			return nil, err
		}
	}
	shares := map[string]string{}
	for _, sh := range req.Shares {
		mp, err := s.mountShare(sh.Tag, sh.FsType)
		if err != nil {
			return nil, err
		}
		shares[sh.HostPath] = filepath.Join(mp, sh.Path)
	}
	if err := guestSpec(&spec, id, root, shares); err != nil {
		return nil, err
	}
	c.ifSysctls, c.netAgain = netSysctls(&spec)
	droppedDevices := dropMissingDevices(&spec)
	asLimit := takeAddressSpaceLimit(spec.Process)
	b, err := specjson.Marshal(&spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), b, 0o600); err != nil {
		return nil, err
	}
	c.runc = &runc.Runc{
		Command:   runcCommand,
		Root:      runcRoot,
		Log:       filepath.Join(c.bundle, "runc.log"),
		LogFormat: runc.JSON,
		Debug:     req.Debug,
	}
	c.init = newProcess(id, "")
	c.init.clearONLCR = req.ClearOnlcr
	pidFile := filepath.Join(c.bundle, "init.pid")
	opts := &runc.CreateOpts{PidFile: pidFile}
	if err := c.init.prepareIO(spec.Process, req.Stdin, func(cs runc.ConsoleSocket, io runc.IO) {
		opts.ConsoleSocket, opts.IO = cs, io
	}); err != nil {
		return nil, err
	}
	if err := c.runc.Create(ctx, id, c.bundle, opts); err != nil {
		c.init.closeIO()
		return nil, c.runcError("creating container", err)
	}
	pid, err := c.init.finishIO(pidFile)
	if err == nil {
		err = setAddressSpaceLimit(pid, asLimit)
	}
	if err != nil {
		_ = c.runc.Delete(context.WithoutCancel(ctx), id, &runc.DeleteOpts{Force: true})
		return nil, err
	}
	s.exits.register(pid, c.init)
	s.containers[id] = c
	runcLog := runcLogSince(c.runc.Log, 0, req.Debug)
	for _, d := range droppedDevices {
		// In runc's log format: the host relays it to its --log.
		line, _ := json.Marshal(map[string]string{"level": "warning", "msg": "device " + d + " does not exist in the VM's kernel: left out of the container", "time": time.Now().UTC().Format(time.RFC3339Nano)})
		runcLog = append(runcLog, string(line))
	}
	return &api.CreateContainerResponse{Pid: uint32(pid), RuncLog: runcLog}, nil
}

// mountRootfs mounts the container's root and returns its guest path.
func (s *Service) mountRootfs(c *container, r *api.Rootfs) (string, error) {
	if r == nil {
		return "", fmt.Errorf("no rootfs: %w", errdefs.ErrInvalidArgument)
	}
	switch r.Type {
	case "virtiofs", "9p":
		mp, err := s.mountShare(r.Source, r.Type)
		if err != nil {
			return "", err
		}
		return filepath.Join(mp, r.Path), nil
	case "ext4", "erofs":
		dev, err := findDisk(r.Source)
		if err != nil {
			return "", err
		}
		mp := filepath.Join(c.bundle, "rootfs")
		if err := os.MkdirAll(mp, 0o755); err != nil {
			return "", err
		}
		var flags uintptr
		if r.Type == "erofs" {
			flags |= unix.MS_RDONLY
		}
		var data []string
		for _, o := range r.Options {
			if o == "sync" {
				flags |= unix.MS_SYNCHRONOUS
			} else {
				data = append(data, o)
			}
		}
		if err := unix.Mount(dev, mp, r.Type, flags, strings.Join(data, ",")); err != nil {
			return "", fmt.Errorf("mounting %s rootfs %s (%s): %w", r.Type, dev, strings.Join(r.Options, ","), err)
		}
		c.mounts = append(c.mounts, mp)
		return filepath.Join(mp, r.Path), nil
	}
	return "", fmt.Errorf("rootfs type %q: %w", r.Type, errdefs.ErrNotImplemented)
}

// mountShare mounts a shared directory's tag once (virtio-fs, or 9p for
// a VM restored from a template); containers share the mount. Called with
// s.mu held.
func (s *Service) mountShare(tag, fsType string) (string, error) {
	if mp, ok := s.shares[tag]; ok {
		return mp, nil
	}
	mp := filepath.Join(sharesDir, tag)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return "", err
	}
	switch fsType {
	case "", "virtiofs":
		if err := unix.Mount(tag, mp, "virtiofs", 0, ""); err != nil {
			return "", fmt.Errorf("mounting virtio-fs %s: %w", tag, err)
		}
	case "9p":
		// cache=mmap keeps the guest coherent with the host's view of
		// the directory (it is shared live, as with virtio-fs).
		opts := "trans=virtio,version=9p2000.L,msize=262144,cache=mmap,access=client,posixacl"
		if err := unix.Mount(tag, mp, "9p", 0, opts); err != nil {
			return "", fmt.Errorf("mounting 9p %s: %w", tag, err)
		}
	default:
		return "", fmt.Errorf("share type %q: %w", fsType, errdefs.ErrNotImplemented)
	}
	s.shares[tag] = mp
	return mp, nil
}

// findDisk finds the virtio-blk disk whose serial is serial.
func findDisk(serial string) (string, error) {
	disks, _ := filepath.Glob("/sys/block/vd*/serial")
	for _, d := range disks {
		b, err := os.ReadFile(d)
		if err == nil && strings.TrimSpace(string(b)) == serial {
			return "/dev/" + filepath.Base(filepath.Dir(d)), nil
		}
	}
	return "", fmt.Errorf("no disk with serial %s: %w", serial, errdefs.ErrNotFound)
}

// runcError turns a failed runc command into an error carrying runc's own
// message from its log.
func (c *container) runcError(what string, err error) error {
	msg := lastRuncError(c.runc.Log)
	if msg == "" {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: runc: %s", what, msg)
}

func lastRuncError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var msg string
	for _, line := range strings.Split(string(b), "\n") {
		var e struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			msg = e.Msg
		}
	}
	return msg
}

// runcLogSince is what runc logged to path from offset off on, for the
// host's log: warnings and errors, and debug lines if debug. The lines are
// runc's own JSON.
func runcLogSince(path string, off int64, debug bool) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct{ Level string }
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if debug || (e.Level != "debug" && e.Level != "info" && e.Level != "trace") {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (c *container) cleanup() {
	for i := len(c.mounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(c.mounts[i], unix.MNT_DETACH)
	}
	_ = os.RemoveAll(c.bundle)
}

// prepareIO makes the process's stdio: a console socket for a terminal,
// else pipes. set receives what runc must be given.
func (p *process) prepareIO(ps *specs.Process, stdin bool, set func(runc.ConsoleSocket, runc.IO)) error {
	if ps != nil && ps.Terminal {
		sock, err := runc.NewTempConsoleSocket()
		if err != nil {
			return fmt.Errorf("making console socket: %w", err)
		}
		p.consoleSocket = sock
		set(sock, nil)
		return nil
	}
	var uid, gid int
	if ps != nil {
		uid, gid = int(ps.User.UID), int(ps.User.GID)
	}
	pio, err := runc.NewPipeIO(uid, gid, func(o *runc.IOOption) { o.OpenStdin = stdin })
	if err != nil {
		return fmt.Errorf("making stdio pipes: %w", err)
	}
	p.setPipes(pio)
	set(nil, pio)
	return nil
}

// finishIO takes the terminal from the console socket, if any, and reads
// the process's pid.
func (p *process) finishIO(pidFile string) (int, error) {
	if p.consoleSocket != nil {
		defer p.consoleSocket.Close()
		con, err := p.consoleSocket.ReceiveMaster()
		if err != nil {
			return 0, fmt.Errorf("receiving the terminal: %w", err)
		}
		if p.clearONLCR {
			if err := console.ClearONLCR(con.Fd()); err != nil {
				_ = con.Close()
				return 0, fmt.Errorf("clearing ONLCR on the terminal: %w", err)
			}
		}
		p.setConsole(con)
		p.consoleSocket = nil
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("reading pid file: %w", err)
	}
	p.mu.Lock()
	p.pid = pid
	p.mu.Unlock()
	return pid, nil
}

func (s *Service) container(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *Service) process(id, execID string) (*container, *process, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.init, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("process %s in container %s: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

func (s *Service) Start(ctx context.Context, req *api.StartRequest) (_ *api.StartResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	started := p.started
	p.started = true
	p.mu.Unlock()
	if started {
		return nil, fmt.Errorf("process %q of %s already started: %w", req.ExecId, req.ContainerId, errdefs.ErrFailedPrecondition)
	}
	if req.ExecId == "" {
		if err := c.setInterfaceSysctls(); err != nil {
			p.mu.Lock()
			p.started = false
			p.mu.Unlock()
			return nil, err
		}
		if err := c.runc.Start(ctx, c.id); err != nil {
			return nil, c.runcError("starting container", err)
		}
		return &api.StartResponse{Pid: uint32(p.pid)}, nil
	}
	if c.init.hasExited() {
		return nil, fmt.Errorf("container %s is not running: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	pidFile := filepath.Join(c.bundle, "exec-"+req.ExecId+".pid")
	opts := &runc.ExecOpts{PidFile: pidFile, Detach: true}
	if err := p.prepareIO(p.spec, p.wantStdin, func(cs runc.ConsoleSocket, io runc.IO) {
		opts.ConsoleSocket, opts.IO = cs, io
	}); err != nil {
		return nil, err
	}
	r := *c.runc
	r.Debug = p.debug
	logFrom := fileSize(r.Log)
	if err := r.Exec(ctx, c.id, *p.spec, opts); err != nil {
		p.closeIO()
		p.setExited(255, time.Now())
		return nil, c.runcError("exec", err)
	}
	pid, err := p.finishIO(pidFile)
	if err != nil {
		return nil, err
	}
	s.exits.register(pid, p)
	return &api.StartResponse{Pid: uint32(pid), RuncLog: runcLogSince(r.Log, logFrom, p.debug)}, nil
}

func (s *Service) Exec(ctx context.Context, req *api.ExecRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if req.ExecId == "" || strings.ContainsAny(req.ExecId, "/\x00") {
		return nil, fmt.Errorf("exec id %q: %w", req.ExecId, errdefs.ErrInvalidArgument)
	}
	var ps specs.Process
	if err := json.Unmarshal(req.Process, &ps); err != nil {
		return nil, fmt.Errorf("decoding process: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(ps.Args) == 0 {
		return nil, fmt.Errorf("process has no args: %w", errdefs.ErrInvalidArgument)
	}
	ps.ApparmorProfile, ps.SelinuxLabel = "", ""
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := c.execs[req.ExecId]; ok {
		// An ended exec's id can be used again (the host may not have
		// said DeleteProcess); one created or running cannot.
		if !old.hasExited() {
			return nil, fmt.Errorf("process %s in %s: %w", req.ExecId, c.id, errdefs.ErrAlreadyExists)
		}
		c.forgetExec(req.ExecId, old)
	}
	p := newProcess(c.id, req.ExecId)
	p.spec = &ps
	p.wantStdin = req.Stdin
	p.debug = req.Debug
	p.clearONLCR = req.ClearOnlcr
	c.execs[req.ExecId] = p
	return &api.Empty{}, nil
}

func (s *Service) Signal(ctx context.Context, req *api.SignalRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if req.ExecId == "" {
		if p.hasExited() && !req.All {
			return nil, fmt.Errorf("container %s is not running: %w", c.id, errdefs.ErrNotFound)
		}
		if err := c.runc.Kill(ctx, c.id, int(req.Signal), &runc.KillOpts{All: req.All}); err != nil {
			return nil, c.runcError("signalling container", err)
		}
		return &api.Empty{}, nil
	}
	p.mu.Lock()
	pid := p.pid
	p.mu.Unlock()
	if pid == 0 || p.hasExited() {
		return nil, fmt.Errorf("process %s is not running: %w", req.ExecId, errdefs.ErrNotFound)
	}
	if err := unix.Kill(pid, syscall.Signal(req.Signal)); err != nil {
		return nil, fmt.Errorf("signalling %s: %w", req.ExecId, err)
	}
	return &api.Empty{}, nil
}

func (s *Service) Wait(ctx context.Context, req *api.WaitRequest) (_ *api.WaitResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &api.WaitResponse{ExitStatus: uint32(p.status), ExitedAtUnixNano: p.exitedAt.UnixNano()}, nil
}

func (s *Service) ReadStdio(ctx context.Context, req *api.ReadStdioRequest) (_ *api.ReadStdioResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.outputOf(req.ContainerId, req.ExecId, req.Fd)
	if err != nil {
		return nil, err
	}
	if req.SidebandTag != 0 && sideband != nil {
		n, eof, err := p.readSideband(int(req.Fd), req.SidebandTag)
		if err == nil {
			return &api.ReadStdioResponse{SidebandLen: uint32(n), Eof: eof}, nil
		}
		if !errors.Is(err, errNoSideband) {
			return nil, err
		}
	}
	data, eof, err := p.read(int(req.Fd))
	if err != nil {
		return nil, err
	}
	return &api.ReadStdioResponse{Data: data, Eof: eof}, nil
}

func (s *Service) WriteStdin(ctx context.Context, req *api.WriteStdinRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if p.stdin == nil {
		return nil, fmt.Errorf("process has no stdin: %w", errdefs.ErrFailedPrecondition)
	}
	if _, err := p.stdin.Write(req.Data); err != nil {
		return nil, fmt.Errorf("writing stdin: %w", err)
	}
	return &api.Empty{}, nil
}

func (s *Service) CloseOutput(ctx context.Context, req *api.CloseOutputRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	p, err := s.outputOf(req.ContainerId, req.ExecId, req.Fd)
	if err != nil {
		return nil, err
	}
	p.closeOutput(int(req.Fd))
	return &api.Empty{}, nil
}

// outputOf finds the process whose stdout (fd 1) or stderr (2) a request
// names.
func (s *Service) outputOf(id, execID string, fd uint32) (*process, error) {
	_, p, err := s.process(id, execID)
	if err != nil {
		return nil, err
	}
	if fd != 1 && fd != 2 {
		return nil, fmt.Errorf("fd %d: %w", fd, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

func (s *Service) CloseStdin(ctx context.Context, req *api.CloseStdinRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	// A terminal's stdin is the terminal itself: closing it hangs up
	// the process, so only pipes are closed, unless a hangup is asked
	// for.
	p.mu.Lock()
	con := p.console
	p.mu.Unlock()
	switch {
	case con != nil && req.Hangup:
		if err := hangUp(con); err != nil {
			log.G(ctx).WithError(err).WithField("id", req.ContainerId).Warn("hanging up the terminal")
		}
	case p.stdin != nil && con == nil:
		_ = p.stdin.Close()
	}
	return &api.Empty{}, nil
}

func (s *Service) ResizePty(ctx context.Context, req *api.ResizePtyRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	size := consoleSize(req.Width, req.Height)
	p.mu.Lock()
	con := p.console
	if con == nil && p.spec != nil && p.spec.Terminal {
		// An exec's terminal comes with its start (nerdctl exec -it
		// sizes it first, as containerd's runc shim allows).
		p.pendingSize = &size
		p.mu.Unlock()
		return &api.Empty{}, nil
	}
	p.mu.Unlock()
	if con == nil {
		return nil, fmt.Errorf("process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	if err := con.Resize(size); err != nil {
		return nil, fmt.Errorf("resizing terminal: %w", err)
	}
	return &api.Empty{}, nil
}

func (s *Service) State(ctx context.Context, req *api.StateRequest) (_ *api.StateResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	resp := &api.StateResponse{Pid: uint32(p.pid)}
	switch {
	case p.hasExited():
		resp.Status = "stopped"
		resp.ExitStatus = uint32(p.status)
	case req.ExecId != "":
		resp.Status = "running"
		if !p.started {
			resp.Status = "created"
		}
	default:
		st, err := c.runc.State(ctx, c.id)
		if err != nil {
			return nil, c.runcError("reading state", err)
		}
		resp.Status = st.Status
	}
	return resp, nil
}

func (s *Service) Pids(ctx context.Context, req *api.PidsRequest) (_ *api.PidsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	pids, err := c.runc.Ps(ctx, c.id)
	if err != nil {
		return nil, c.runcError("listing processes", err)
	}
	resp := &api.PidsResponse{}
	for _, p := range pids {
		resp.Pids = append(resp.Pids, uint32(p))
	}
	return resp, nil
}

func (s *Service) Pause(ctx context.Context, req *api.ContainerRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.runc.Pause(ctx, c.id); err != nil {
		return nil, c.runcError("pausing", err)
	}
	return &api.Empty{}, nil
}

func (s *Service) Resume(ctx context.Context, req *api.ContainerRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.runc.Resume(ctx, c.id); err != nil {
		return nil, c.runcError("resuming", err)
	}
	return &api.Empty{}, nil
}

func (s *Service) Update(ctx context.Context, req *api.UpdateRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	var r specs.LinuxResources
	if err := json.Unmarshal(req.Resources, &r); err != nil {
		return nil, fmt.Errorf("decoding resources: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := c.runc.Update(ctx, c.id, &r); err != nil {
		return nil, c.runcError("updating", err)
	}
	return &api.Empty{}, nil
}

func (s *Service) Stats(ctx context.Context, req *api.ContainerRequest) (_ *api.StatsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	m, err := cgroup2.Load(filepath.Join("/vzrun", c.id))
	if err != nil {
		return nil, fmt.Errorf("loading cgroup of %s: %w", c.id, err)
	}
	st, err := m.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading cgroup of %s: %w", c.id, err)
	}
	// Without a memory limit of its own the container is bounded by the
	// VM's memory: that, not "max", is its limit (nerdctl stats would
	// show the host's memory).
	if mem := st.GetMemory(); mem != nil {
		var si unix.Sysinfo_t
		if err := unix.Sysinfo(&si); err == nil {
			if total := uint64(si.Totalram) * uint64(si.Unit); total > 0 && mem.UsageLimit > total {
				mem.UsageLimit = total
			}
		}
	}
	b, err := proto.Marshal(st)
	if err != nil {
		return nil, err
	}
	return &api.StatsResponse{CgroupV2Metrics: b}, nil
}

func (s *Service) DeleteContainer(ctx context.Context, req *api.DeleteContainerRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if !c.init.hasExited() && !req.Force {
		if st, err := c.runc.State(ctx, c.id); err == nil && st.Status != "created" && st.Status != "stopped" {
			return nil, fmt.Errorf("container %s is %s: %w", c.id, st.Status, errdefs.ErrFailedPrecondition)
		}
	}
	if err := c.runc.Delete(ctx, c.id, &runc.DeleteOpts{Force: true}); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("runc delete")
	}
	c.init.closeIO()
	s.mu.Lock()
	for _, p := range c.execs {
		p.closeIO()
	}
	delete(s.containers, c.id)
	s.mu.Unlock()
	c.cleanup()
	return &api.Empty{}, nil
}

func (s *Service) DeleteProcess(ctx context.Context, req *api.DeleteProcessRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if req.ExecId == "" {
		return nil, fmt.Errorf("no exec id: the container's own process goes with DeleteContainer: %w", errdefs.ErrInvalidArgument)
	}
	c, p, err := s.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	running := p.started && p.pid != 0
	p.mu.Unlock()
	if running && !p.hasExited() {
		return nil, fmt.Errorf("process %s in %s is running: %w", req.ExecId, c.id, errdefs.ErrFailedPrecondition)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.execs[req.ExecId] == p {
		c.forgetExec(req.ExecId, p)
	}
	return &api.Empty{}, nil
}

// forgetExec drops an ended (or never started) exec and what it holds:
// its stdio's agent ends and its pid file. Called with s.mu held.
func (c *container) forgetExec(execID string, p *process) {
	p.closeIO()
	_ = os.Remove(filepath.Join(c.bundle, "exec-"+execID+".pid"))
	delete(c.execs, execID)
}

func (s *Service) Shutdown(ctx context.Context, _ *api.Empty) (*api.Empty, error) {
	// Block-device root file systems are unmounted so that their journals
	// are checkpointed: the host reads the image once the VM is gone.
	s.mu.Lock()
	for _, c := range s.containers {
		if c.init.hasExited() {
			for i := len(c.mounts) - 1; i >= 0; i-- {
				_ = unix.Unmount(c.mounts[i], 0)
			}
		}
	}
	s.mu.Unlock()
	// Answer first: the host waits for the VMM to exit, not for this call.
	go func() {
		time.Sleep(10 * time.Millisecond)
		if err := powerOff(); err != nil {
			log.G(ctx).WithError(err).Error("power off")
		}
	}()
	return &api.Empty{}, nil
}
