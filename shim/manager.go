package shim

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	vzruntime "github.com/vzrun/vzrun/runtime"
)

// RuntimeName is the runtime type containerd knows the shim by.
const RuntimeName = "io.containerd.vz.v2"

// StateRoot holds the shim's containers, one directory per namespace.
var StateRoot = "/run/vzrun/containerd"

// Run is the shim binary's main. containerd 2.3 and later start a shim
// through pkg/shim's bootstrap protocol, which pkg/shim 2.4 alone speaks;
// a start by containerd 2.0–2.2 (the legacy protocol) is answered here,
// everything else is pkg/shim's.
func Run(ctx context.Context) {
	if len(os.Args) == 3 && os.Args[1] == sentinelArg {
		runSentinel(os.Args[2])
	}
	m := NewManager(RuntimeName)
	if cmd, ok := parseStart(os.Args[1:]); ok {
		answered, err := cmd.run(ctx, m)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %s", m.Name(), err)
			os.Exit(1)
		}
		if answered {
			return
		}
	}
	// The shim waits for its own children (QEMU, virtiofsd); containerd's
	// implicit reaper would take their exit statuses first.
	shim.RunShim(ctx, m, func(c *shim.Config) { c.NoReaper = true })
}

// startCommand is a `start` command line, read as pkg/shim reads it (same
// flags, its own flag set: pkg/shim defines them on the global one later).
type startCommand struct {
	id, namespace, address, containerd string
	debug                              bool
}

// parseStart says whether args ask for a start, and with what.
func parseStart(args []string) (*startCommand, bool) {
	c := &startCommand{}
	var info, version bool
	fs := flag.NewFlagSet("shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.namespace, "namespace", "", "")
	fs.StringVar(&c.id, "id", "", "")
	fs.StringVar(&c.address, "address", "", "")
	fs.StringVar(&c.containerd, "publish-binary", "", "")
	fs.BoolVar(&c.debug, "debug", false, "")
	fs.BoolVar(&info, "info", false, "")
	fs.BoolVar(&version, "v", false, "")
	fs.BoolVar(&version, "version", false, "")
	fs.String("socket", "", "")
	fs.String("debug-socket", "", "")
	fs.String("bundle", "", "")
	if err := fs.Parse(args); err != nil || info || version || fs.Arg(0) != "start" {
		return nil, false
	}
	return c, true
}

// maxStartInput bounds what is read from containerd on stdin.
const maxStartInput = 10 << 20

// run reads what containerd wrote on stdin. A start by containerd 2.0–2.2
// it answers itself (answered); otherwise it hands the same bytes on to
// pkg/shim as its stdin.
func (c *startCommand) run(ctx context.Context, m shim.Shim) (answered bool, _ error) {
	input, err := io.ReadAll(io.LimitReader(os.Stdin, maxStartInput))
	if err != nil {
		return false, fmt.Errorf("reading stdin: %w", err)
	}
	if params := c.legacyParams(input, os.Getenv); params != nil {
		return true, startLegacy(ctx, m, params, os.Stdout)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return false, err
	}
	go func() {
		_, _ = w.Write(input)
		w.Close()
	}()
	os.Stdin = r
	return false, nil
}

// legacyParams tells the two start protocols apart by stdin, the only
// thing that differs (both pass the same flags and environment): containerd
// 2.3 and later write a BootstrapParams naming this instance; 2.0–2.2 write
// nothing, or the runtime options as a protobuf Any. For the latter it
// returns the BootstrapParams 2.3 would have sent, made of the command line
// and the environment (TTRPC_ADDRESS, GRPC_ADDRESS, NAMESPACE); nil for the
// former.
func (c *startCommand) legacyParams(input []byte, getenv func(string) string) *bootapi.BootstrapParams {
	if len(input) > 0 {
		var p bootapi.BootstrapParams
		// Runtime options can parse as BootstrapParams too: only the
		// right instance and namespace make it one.
		if proto.Unmarshal(input, &p) == nil && p.GetInstanceID() == c.id && p.GetNamespace() == c.namespace {
			return nil
		}
	}
	p := &bootapi.BootstrapParams{
		InstanceID:             c.id,
		Namespace:              c.namespace,
		LogLevel:               bootapi.LogLevel_LOG_LEVEL_INFO,
		ContainerdGrpcAddress:  c.address,
		ContainerdTtrpcAddress: getenv("TTRPC_ADDRESS"),
		ContainerdBinary:       c.containerd,
	}
	if p.Namespace == "" {
		p.Namespace = getenv("NAMESPACE")
	}
	if p.ContainerdGrpcAddress == "" {
		p.ContainerdGrpcAddress = getenv("GRPC_ADDRESS")
	}
	if c.debug {
		p.LogLevel = bootapi.LogLevel_LOG_LEVEL_DEBUG
	}
	var opts anypb.Any
	if len(input) > 0 && proto.Unmarshal(input, &opts) == nil && opts.GetTypeUrl() != "" {
		_ = p.AddExtension(&opts)
	}
	return p
}

// legacyResult is the start reply containerd 2.0–2.2 read: JSON on stdout.
type legacyResult struct {
	Version  int32  `json:"version"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

// startLegacy starts the shim server as for containerd 2.3 and writes the
// reply in the legacy form. Those containerds put the socket in the
// default directory (/run/containerd/s), which Start uses when the params
// name none.
func startLegacy(ctx context.Context, m shim.Shim, params *bootapi.BootstrapParams, out io.Writer) error {
	if params.GetNamespace() == "" {
		return fmt.Errorf("shim namespace cannot be empty: %w", errdefs.ErrInvalidArgument)
	}
	ctx = namespaces.WithNamespace(ctx, params.GetNamespace())
	res, err := m.Start(ctx, params)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(legacyResult{Version: res.GetVersion(), Address: res.GetAddress(), Protocol: res.GetProtocol()})
}

type manager struct{ name string }

// NewManager returns the shim's process manager for shim.RunShim.
func NewManager(name string) shim.Shim { return manager{name: name} }

func (m manager) Name() string { return m.name }

// Start launches the shim server for a task (containerd runs this from the
// bundle directory) and returns the address it serves on. stdout and
// stderr are containerd's reply channel here, so nothing is logged to them.
func (m manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := params.GetInstanceID()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = "/run/containerd/s"
	}
	addr, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), id, false)
	if err != nil {
		return nil, err
	}
	l, err := shim.NewSocket(addr)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("creating shim socket: %w", err)
		}
		if shim.CanConnect(addr) {
			return &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}, nil
		}
		_ = shim.RemoveSocket(addr)
		if l, err = shim.NewSocket(addr); err != nil {
			return nil, fmt.Errorf("creating shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			l.Close()
			_ = shim.RemoveSocket(addr)
		}
	}()
	f, err := l.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The shim owns the VM: it lives in the container's new network
	// namespace, where nerdctl's hooks find it through the task's pid.
	spec, err := vzruntime.LoadSpec(cwd)
	if err != nil {
		return nil, err
	}
	started, err := vzruntime.StartInNetNS(cmd, spec)
	if err != nil {
		return nil, err
	}
	defer started()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait() }()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Debug("adjusting the shim's oom score")
	}
	return &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}, nil
}

// Stop cleans up after a shim that is gone (containerd calls it from the
// bundle directory): the VM and its helpers, the state, the rootfs mount.
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	r := newRuntime(ns)
	// containerd gives this clean-up 5 s (io.containerd.timeout.shim.
	// cleanup) and then kills it: an ext4 image left by the dead shim is
	// synced back only if that fits, else it stays with the state, and
	// the container's next task (Create) syncs it first.
	r.LeftSyncTimeout = leftSyncTimeout()
	// Run in the bundle, or given it. A clean-up run again (containerd
	// restarted during the last) finds the rootfs unmounted: an image is
	// not synced into the empty directory under it but stays with the
	// state.
	cwd, cwdErr := os.Getwd()
	if opts, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok && opts.BundlePath != "" {
		cwd, cwdErr = opts.BundlePath, nil
	}
	if cwdErr == nil {
		if mounted, err := mountinfo.Mounted(filepath.Join(cwd, "rootfs")); err != nil || !mounted {
			r.NoLeftSync = true
		}
	}
	if err := r.Delete(ctx, id, true); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).Warn("deleting the container's state")
	}
	if cwdErr == nil {
		if err := mount.UnmountRecursive(filepath.Join(cwd, "rootfs"), 0); err != nil {
			log.G(ctx).WithError(err).Warn("unmounting the rootfs")
		}
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}, nil
}

// leftSyncTimeout bounds the sync back in a dead shim's clean-up: 3 s,
// or VZRUN_LEFT_SYNC_TIMEOUT (a Go duration) from containerd's
// environment, for a containerd with a longer clean-up timeout.
func leftSyncTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("VZRUN_LEFT_SYNC_TIMEOUT")); err == nil && d > 0 {
		return d
	}
	return 3 * time.Second
}

func (m manager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{Name: m.name}, nil
}
