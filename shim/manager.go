package shim

import (
	"context"
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
	"golang.org/x/sys/unix"

	vzruntime "github.com/vzrun/vzrun/runtime"
)

// RuntimeName is the runtime type containerd knows the shim by.
const RuntimeName = "io.containerd.vz.v2"

// StateRoot holds the shim's containers, one directory per namespace.
var StateRoot = "/run/vzrun/containerd"

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
	if err := r.Delete(ctx, id, true); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).Warn("deleting the container's state")
	}
	cwd, err := os.Getwd()
	if err == nil {
		if err := mount.UnmountRecursive(filepath.Join(cwd, "rootfs"), 0); err != nil {
			log.G(ctx).WithError(err).Warn("unmounting the rootfs")
		}
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}, nil
}

func (m manager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{Name: m.name}, nil
}
