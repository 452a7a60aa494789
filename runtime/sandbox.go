package runtime

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/runtime/hypervisor"
	"github.com/vzrun/vzrun/runtime/network"
)

// Runtime holds what every container of one vzrun root shares.
type Runtime struct {
	// Root is the state root, e.g. /run/vzrun.
	Root string
	// Kernel and Initrd are the guest; empty finds them (see FindGuest).
	Kernel, Initrd string
	// CacheDir keeps the accelerator probe's verdict.
	CacheDir string
	// Accel forces an accelerator (kvm, tcg, hvf); empty chooses.
	Accel string
	// LeftSyncTimeout bounds the sync back of an ext4 image that Delete
	// finds left by a killed owner (0: none). One that does not finish
	// in time keeps the image and the state dir (Delete fails saying
	// so); a later Delete, or the shim's next Create of the container,
	// syncs it.
	LeftSyncTimeout time.Duration
	// ImagesStayWithState keeps an ext4 image that could not be synced
	// back in the container's state dir, never beside the rootfs: the
	// shim's rootfs is in containerd's bundle directory, which containerd
	// removes with the task.
	ImagesStayWithState bool
	// NoLeftSync has Delete keep an ext4 image left by a killed owner,
	// with the state, instead of syncing it: the shim's clean-up once the
	// rootfs is no longer mounted (the sync would go into the empty
	// directory under it).
	NoLeftSync bool
}

// Sandbox is a booted VM and the client of its agent.
type Sandbox struct {
	ID     string
	VM     hypervisor.VM
	Agent  api.AgentService
	client *ttrpc.Client
	Hello  *api.HelloResponse
}

// containerVM is what a container needs from its VM: the VM config and
// what the agent must be told to find the rootfs and bind mounts.
type containerVM struct {
	cfg    hypervisor.Config
	rootfs *api.Rootfs
	shares []*api.Share
	// afterStop runs once the VM has stopped, if set.
	afterStop func(context.Context) error
	// netns is the host network namespace of the VM's NICs, taps their
	// tap devices (NIC i's is taps[i]) and nicMACs the addresses the
	// guest finds them by.
	netns   string
	taps    []*network.Tap
	nicMACs []net.HardwareAddr
	// nat says the NIC is the backend's NAT (see nat.go).
	nat bool
	// templateErr is why no template could be saved for this VM.
	templateErr error
}

// planVM turns a spec into a VM config in stateDir.
func (r *Runtime) planVM(ctx context.Context, id, bundle string, spec *specs.Spec, dir *StateDir) (*containerVM, error) {
	kernel, initrd, err := r.guest()
	if err != nil {
		return nil, err
	}
	cpus, mem, err := VMSize(spec)
	if err != nil {
		return nil, err
	}
	if _, err := parsePublish(spec.Annotations[AnnotationPublish]); err != nil {
		return nil, err
	}
	if _, err := NICCount(spec); err != nil {
		return nil, err
	}
	accel := r.Accel
	if a := spec.Annotations[AnnotationAccel]; a != "" {
		accel = a
	}
	if accel == "" {
		var why string
		accel, why = chooseAccel(ctx, kernel, initrd, r.cacheDir())
		log.G(ctx).WithField("id", id).Debugf("accelerator %s: %s", accel, why)
	}
	p := &containerVM{cfg: hypervisor.Config{
		ID: id, StateDir: dir.Path, Kernel: kernel, Initrd: initrd,
		CPUs: cpus, MemoryMiB: mem, Accel: accel,
		ConsoleLog: dir.File("console.log"),
	}}

	rootfs := RootfsPath(spec, bundle)
	mode := spec.Annotations[AnnotationRootfs]
	switch mode {
	case "", "virtiofs":
		p.cfg.Shares = append(p.cfg.Shares, hypervisor.Share{Tag: "rootfs", Path: rootfs})
		p.rootfs = &api.Rootfs{Type: "virtiofs", Source: "rootfs"}
	case "ext4":
		img := dir.File("rootfs.ext4")
		data := spec.Annotations[AnnotationExt4Data]
		if data == "" {
			data = "ordered"
		}
		if data != "ordered" && data != "writeback" && data != "journal" {
			return nil, fmt.Errorf("annotation %s=%q: want ordered, writeback or journal: %w", AnnotationExt4Data, data, errdefs.ErrInvalidArgument)
		}
		// The journal commits every second (not 5): a killed VM loses at
		// most ~1 s of writes; with io.vzrun.ext4.sync none that returned.
		opts := []string{"data=" + data, "commit=1"}
		if v, ok := spec.Annotations[AnnotationExt4Sync]; ok {
			sync, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("annotation %s=%q: want true or false: %w", AnnotationExt4Sync, v, errdefs.ErrInvalidArgument)
			}
			if sync {
				opts = append(opts, "sync")
			}
		}
		if err := markPacking(img, rootfs); err != nil {
			return nil, err
		}
		if err := makeExt4(ctx, rootfs, img, spec.Annotations[AnnotationDiskSizeMB]); err != nil {
			return nil, err
		}
		p.cfg.Disks = append(p.cfg.Disks, hypervisor.Disk{Path: img, Serial: "rootfs"})
		p.rootfs = &api.Rootfs{Type: "ext4", Source: "rootfs", Options: opts}
		// Synced, the image goes; one left behind (its monitor killed)
		// is synced by delete (syncLeftImage).
		p.afterStop = func(ctx context.Context) error {
			if err := syncExt4Back(ctx, img, rootfs); err != nil {
				return keepImage(ctx, img, rootfs, id, err, r.ImagesStayWithState)
			}
			return os.Remove(img)
		}
	default:
		return nil, fmt.Errorf("annotation %s=%q: want virtiofs or ext4: %w", AnnotationRootfs, mode, errdefs.ErrInvalidArgument)
	}

	// Bind-mount sources reach the guest through shares, one per host
	// directory. Files (binds of /etc/localtime, of a socket) are shared
	// on their own, through a directory of the state dir (shareFile): the
	// guest reaches the file, not the host directory it is in. Only where
	// that cannot be done is a file reached through its directory.
	dirs := map[string]int{}
	for _, m := range spec.Mounts {
		if !isBind(m) {
			continue
		}
		src := m.Source
		if !filepath.IsAbs(src) {
			src = filepath.Join(bundle, src)
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("bind mount %s: source: %w", m.Destination, err)
		}
		// A bind mount follows symlinks in its source; the file
		// servers refuse to share a path that is one (/var/run, a
		// symlink to a directory).
		if resolved, err := filepath.EvalSymlinks(src); err == nil {
			src = resolved
		}
		if !fi.IsDir() {
			alone, err := p.shareFile(ctx, dir, m, src, bindFilesAlone)
			if err != nil {
				return nil, err
			}
			if alone {
				continue
			}
		}
		shareDir, sub := src, ""
		if !fi.IsDir() {
			shareDir, sub = filepath.Dir(src), filepath.Base(src)
		}
		// A directory only bound read-only is shared read-only: the guest
		// cannot write it either.
		ro := slices.Contains(m.Options, "ro")
		i, ok := dirs[shareDir]
		if !ok {
			i = len(p.cfg.Shares)
			dirs[shareDir] = i
			p.cfg.Shares = append(p.cfg.Shares, hypervisor.Share{Tag: "m" + strconv.Itoa(len(dirs)-1), Path: shareDir, ReadOnly: ro})
		}
		p.cfg.Shares[i].ReadOnly = p.cfg.Shares[i].ReadOnly && ro
		p.shares = append(p.shares, &api.Share{HostPath: m.Source, Tag: p.cfg.Shares[i].Tag, Path: sub, IsFile: !fi.IsDir()})
	}
	if err := p.planNIC(ctx, id, spec); err != nil {
		return nil, err
	}
	r.restorable(ctx, p, spec)
	if err := p.cfg.Validate(); err != nil {
		p.closeTaps()
		return nil, err
	}
	return p, nil
}

// shareFile shares a bound file (src) with the guest on its own, as an
// entry of a directory of the state dir. With mountable (the backend's
// file server can bind-mount it there in a mount namespace of its own:
// hypervisor.Share.Binds) the entry is a placeholder the file goes over.
// Otherwise (Virtualization.framework serves shares from the process
// that runs the VM, where no private mount can hide a thing) the entry is
// a hard link to the file: the same inode, as a bind mount is, so writes
// go both ways; files bound read-only go in a share the guest cannot
// write. A file a link cannot reach (on another file system than the
// state dir) is not shared here (false), and the caller shares its
// directory, with a warning.
func (p *containerVM) shareFile(ctx context.Context, dir *StateDir, m specs.Mount, src string, mountable bool) (bool, error) {
	ro := slices.Contains(m.Options, "ro")
	tag := "files"
	if ro && !mountable {
		tag = "files-ro"
	}
	if err := os.MkdirAll(dir.File(tag), 0o700); err != nil {
		return false, fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	n := 0
	for _, s := range p.shares {
		if s.Tag == tag {
			n++
		}
	}
	name := strconv.Itoa(n)
	entry := filepath.Join(dir.File(tag), name)
	if mountable {
		if err := os.WriteFile(entry, nil, 0o600); err != nil {
			return false, fmt.Errorf("bind mount %s: %w", m.Destination, err)
		}
	} else {
		target, err := filepath.EvalSymlinks(src)
		if err == nil {
			err = os.Link(target, entry)
		}
		if err != nil {
			log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Warnf("bind mount %s: %s cannot be shared on its own, so the VM is given its directory", m.Destination, src)
			return false, nil
		}
	}
	i := slices.IndexFunc(p.cfg.Shares, func(s hypervisor.Share) bool { return s.Tag == tag })
	if i < 0 {
		i = len(p.cfg.Shares)
		p.cfg.Shares = append(p.cfg.Shares, hypervisor.Share{Tag: tag, Path: dir.File(tag), ReadOnly: tag == "files-ro"})
	}
	if mountable {
		share := &p.cfg.Shares[i]
		share.Binds = append(share.Binds, hypervisor.Bind{Name: name, Source: src, ReadOnly: ro})
	}
	p.shares = append(p.shares, &api.Share{HostPath: m.Source, Tag: tag, Path: name, IsFile: true})
	return true, nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// boot starts the VM and connects to its agent.
func (r *Runtime) boot(ctx context.Context, p *containerVM) (*Sandbox, error) {
	// The VMM holds the taps from here on; they go when the VMM does.
	defer p.closeTapFiles()
	vm, err := newVM(p.cfg)
	if err != nil {
		return nil, err
	}
	if err := vm.Start(ctx); err != nil {
		return nil, err
	}
	conn := newFramedConn(vm.AgentConn())
	client := ttrpc.NewClient(conn)
	agent := &sidebandAgent{AgentService: api.NewAgentClient(client), conn: conn}
	sb := &Sandbox{ID: p.cfg.ID, VM: vm, Agent: agent, client: client}
	// A restored guest takes the host's clock and fresh entropy.
	hello, err := sb.Agent.Hello(ctx, &api.HelloRequest{HostTimeUnixNano: time.Now().UnixNano(), Entropy: entropy()})
	if err != nil {
		sb.Kill(ctx)
		return nil, fmt.Errorf("greeting the agent: %w", errgrpc.ToNative(err))
	}
	sb.Hello = hello
	if p.templateErr != nil {
		log.G(ctx).WithError(p.templateErr).WithField("id", p.cfg.ID).Warn("booted cold: no vm template could be saved")
	}
	t := vm.Timings()
	log.G(ctx).WithFields(log.Fields{
		"id":          p.cfg.ID,
		"accel":       vm.Accel(),
		"vmm_start":   t.VMMReady.Sub(t.Launched),
		"kernel_boot": kernelBoot(p, hello),
		"agent_init":  agentInit(p, hello),
		"agent_ready": t.AgentReady.Sub(t.Launched),
		"vcpus":       p.cfg.CPUs,
		"memory_mib":  p.cfg.MemoryMiB,
		"guest":       hello.KernelRelease,
		"template":    p.cfg.Template != "",
	}).Debug("vm ready")
	return sb, nil
}

// closeTapFiles closes this process's copies of the taps: the VMM has its
// own.
func (p *containerVM) closeTapFiles() {
	for _, t := range p.taps {
		t.CloseFile()
	}
}

// closeTaps releases the taps.
func (p *containerVM) closeTaps() {
	for _, t := range p.taps {
		t.Close()
	}
}

// Shutdown powers the guest off and waits for the VM to stop, killing it
// if it does not.
func (s *Sandbox) Shutdown(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.Agent.Shutdown(sctx, &api.Empty{}); err == nil {
		if err := s.VM.Wait(sctx); err == nil {
			s.client.Close()
			return
		}
	}
	log.G(ctx).WithField("id", s.ID).Warn("guest did not power off; killing the vm")
	s.Kill(ctx)
}

// Kill stops the VM at once.
func (s *Sandbox) Kill(ctx context.Context) {
	s.client.Close()
	_ = s.VM.Stop(ctx)
}

func (r *Runtime) cacheDir() string {
	if r.CacheDir != "" {
		return r.CacheDir
	}
	if d := os.Getenv("VZRUN_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "vzrun")
	}
	return filepath.Join(r.Root, ".cache")
}

// guest finds the kernel and initrd: set explicitly, from VZRUN_KERNEL and
// VZRUN_INITRD, or installed in ../share/vzrun next to the binary,
// /usr/local/share/vzrun or /usr/share/vzrun.
func (r *Runtime) guest() (kernel, initrd string, err error) {
	kernel, initrd = r.Kernel, r.Initrd
	if kernel == "" {
		kernel = os.Getenv("VZRUN_KERNEL")
	}
	if initrd == "" {
		initrd = os.Getenv("VZRUN_INITRD")
	}
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), "..", "share", "vzrun"))
	}
	dirs = append(dirs, "/usr/local/share/vzrun", "/usr/share/vzrun")
	find := func(set, name string) (string, error) {
		if set != "" {
			if _, err := os.Stat(set); err != nil {
				return "", fmt.Errorf("guest %s: %w", name, err)
			}
			// QEMU runs in the state dir: a relative path would not
			// reach it.
			return filepath.Abs(set)
		}
		for _, d := range dirs {
			p := filepath.Join(d, guestFile(name))
			if _, err := os.Stat(p); err == nil {
				return filepath.Clean(p), nil
			}
		}
		return "", fmt.Errorf("guest %s %s not found in %s (run `make kernel initrd install`, or set VZRUN_%s): %w",
			name, guestFile(name), strings.Join(dirs, ", "), strings.ToUpper(name), errdefs.ErrNotFound)
	}
	if kernel, err = find(kernel, "kernel"); err != nil {
		return "", "", err
	}
	if initrd, err = find(initrd, "initrd"); err != nil {
		return "", "", err
	}
	return kernel, initrd, nil
}

// kernelBoot is how long the guest took to start the agent; a restored
// guest's is its template's, not worth reporting.
func kernelBoot(p *containerVM, hello *api.HelloResponse) any {
	if p.cfg.Template != "" {
		return "restored"
	}
	return time.Duration(hello.AgentStartNs)
}

// agentInit is how long the agent took from its start to listening on its
// channel (mounts, runc sealed, the port opened); likewise the template's
// in a restored guest.
func agentInit(p *containerVM, hello *api.HelloResponse) any {
	if p.cfg.Template != "" {
		return "restored"
	}
	return time.Duration(hello.AgentReadyNs - hello.AgentStartNs)
}
