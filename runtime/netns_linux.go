package runtime

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/runtime/hypervisor"
	"github.com/vzrun/vzrun/runtime/network"
)

// How a container's network reaches its VM.
//
// The spec's network namespace is the container's network as the host's
// tools see it: CNI (nerdctl's createRuntime hook), CRI or a script put a
// veth with addresses and routes into it. The VM gets a virtio-net NIC
// backed by a tap device in that namespace, the tap and the veth are
// joined with tc mirred redirects, and the guest's NIC takes the veth's
// MAC, MTU, addresses and routes inside the container's guest network
// namespace, so the container answers on the veth's address as it would
// under runc.
//
// A namespace given by path is used as it is. A new one (no path) is the
// network namespace of the container's owner process (the monitor of
// `vzrun create`, or the shim), which is started in a namespace of its own
// for it: hooks given state.pid then find it in /proc/PID/ns/net as with
// runc. A spec without a network namespace asks for the host's network,
// which a VM cannot share; its guest has loopback only.

// QEMU's user networking always hands out the same network; its DHCP
// exchange costs ~160 ms under TCG, so the address is set directly.
const (
	natAddress = "10.0.2.15/24"
	natGateway = "10.0.2.2"
)

// EnvOwnNetNS tells an owner process that it was started in a network
// namespace of its own, made for its container; its value is the number of
// an inherited descriptor of the host's network namespace, where hooks run
// (CNI plugins make their bridges in the namespace they run in).
const EnvOwnNetNS = "VZRUN_OWN_NETNS"

var hostNetNS = sync.OnceValue(func() *os.File {
	fd, err := strconv.Atoi(os.Getenv(EnvOwnNetNS))
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "host-netns")
})

// startOnHost starts cmd in the host's network namespace.
func startOnHost(cmd *exec.Cmd) error {
	if ns := hostNetNS(); ns != nil {
		return network.StartIn(ns, cmd)
	}
	return cmd.Start()
}

// wantsNewNetNS says whether spec asks for a new network namespace.
func wantsNewNetNS(spec *specs.Spec) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// hasNetNS says whether spec has a network namespace of its own.
func hasNetNS(spec *specs.Spec) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return true
		}
	}
	return false
}

// StartInNetNS makes cmd, an owner process for a container with spec,
// start in a new network namespace when the spec asks for one, with a
// descriptor of this one. Call the returned func once cmd has started.
func StartInNetNS(cmd *exec.Cmd, spec *specs.Spec) (func(), error) {
	if !wantsNewNetNS(spec) {
		return func() {}, nil
	}
	self, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
	cmd.ExtraFiles = append(cmd.ExtraFiles, self)
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, EnvOwnNetNS+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
	return func() { self.Close() }, nil
}

// netNSPath is the host network namespace the VM's network lives in, or ""
// for a loopback-only guest.
func netNSPath(ctx context.Context, id string, spec *specs.Spec) string {
	path, own := "", hostNetNS() != nil
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				path = ns.Path
				if path == "" && own {
					path = "/proc/self/ns/net"
				}
			}
		}
	}
	if path == "" {
		return ""
	}
	if network.SameAsInit(path) {
		log.G(ctx).WithField("id", id).Warnf("network namespace %s is the host's: the guest gets loopback only", path)
		return ""
	}
	return path
}

// planNIC gives the VM a NIC on a tap in the container's network
// namespace, if it has one.
func (p *containerVM) planNIC(ctx context.Context, id string, spec *specs.Spec) error {
	if !hasNetNS(spec) {
		p.planNAT(id)
		return nil
	}
	path := netNSPath(ctx, id, spec)
	if path == "" {
		return nil
	}
	if path != "/proc/self/ns/net" {
		// Processes in a namespace given by path are another
		// container's (--network container:NAME, a runc container's
		// /proc/PID/ns/net): the VM's NIC would take every packet
		// meant for them. CRI and BuildKit hand over namespaces no
		// process is in (pinned by a bind mount, as ip netns makes).
		users, err := network.Users(path)
		if err != nil {
			return fmt.Errorf("network of %s: %w", id, err)
		}
		if len(users) > 0 {
			more := ""
			if len(users) > 1 {
				more = fmt.Sprintf(" and %d more", len(users)-1)
			}
			return fmt.Errorf("network namespace %s is in use by %s%s: a container in its own VM cannot share another container's network namespace (its VM would take that namespace's traffic); give it a namespace no process is in: %w", path, users[0], more, errdefs.ErrInvalidArgument)
		}
	}
	n, err := NICCount(spec)
	if err != nil {
		return err
	}
	if _, set := spec.Annotations[AnnotationNICs]; !set && path != "/proc/self/ns/net" {
		// A namespace handed over by path (CRI, BuildKit) is filled
		// already: a NIC for each interface there.
		if ifcs, _, err := network.Inspect(path); err == nil && len(ifcs) > n {
			n = min(len(ifcs), MaxNICs)
		}
	}
	p.netns = path
	for i := range n {
		tap, err := network.NewTap(network.TapNameN(i))
		if err != nil {
			p.closeTaps()
			return fmt.Errorf("network of %s: %w", id, err)
		}
		mac := network.StableMAC(id)
		if i > 0 {
			mac = network.StableMAC(id + "/nic" + strconv.Itoa(i))
		}
		p.taps, p.nicMACs = append(p.taps, tap), append(p.nicMACs, mac)
		p.cfg.NICs = append(p.cfg.NICs, hypervisor.NIC{MAC: mac, Tap: tap.File})
	}
	return nil
}

// nicOrder lists the interfaces the VM's NICs take, in NIC order: eth0
// (CNI's first network) first, then the others by name, numbers in names
// compared as numbers (eth2 before eth10): CNI names a container's
// interfaces after its networks' order (eth0, eth1, ...; Multus net1,
// net2, ...), but makes them in no fixed order.
func nicOrder(ifcs []network.Interface) []network.Interface {
	out := slices.Clone(ifcs)
	slices.SortStableFunc(out, func(a, b network.Interface) int {
		if (a.Name == "eth0") != (b.Name == "eth0") {
			if a.Name == "eth0" {
				return -1
			}
			return 1
		}
		pa, na := splitNumber(a.Name)
		pb, nb := splitNumber(b.Name)
		if c := strings.Compare(pa, pb); c != 0 {
			return c
		}
		return cmp.Compare(na, nb)
	})
	return out
}

// splitNumber splits a name into its stem and trailing number (-1 if
// none).
func splitNumber(name string) (string, int) {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(name[i:])
	if err != nil {
		return name, -1
	}
	return name[:i], n
}

// connectNetwork joins the VM's NIC to what the container's network
// namespace holds once hooks have filled it; with nothing there the guest
// keeps loopback only.
func (c *Container) connectNetwork(ctx context.Context) error {
	p := c.plan
	if p != nil && p.nat {
		return c.configureNAT(ctx)
	}
	if p == nil || p.netns == "" {
		return c.noNetwork(ctx)
	}
	ifcs, routes, err := network.Inspect(p.netns)
	if err != nil {
		return err
	}
	if len(ifcs) == 0 {
		log.G(ctx).WithField("id", c.ID).Debug("no interface in the network namespace: loopback only")
		return c.noNetwork(ctx)
	}
	ifcs = nicOrder(ifcs)
	if len(ifcs) > len(p.taps) {
		var left []string
		for _, i := range ifcs[len(p.taps):] {
			left = append(left, i.Name)
		}
		log.G(ctx).WithField("id", c.ID).Warnf("%d interfaces in the network namespace but %d NIC(s) in the VM: %s do not reach it (annotation %s sets the number of NICs)",
			len(ifcs), len(p.taps), strings.Join(left, ", "), AnnotationNICs)
		ifcs = ifcs[:len(p.taps)]
	}
	var names []string
	req := &api.ConfigureNetworkRequest{ContainerId: c.ID}
	for n, ifc := range ifcs {
		names = append(names, ifc.Name)
		if p.netns != "/proc/self/ns/net" {
			// A namespace that outlives the owner keeps the
			// redirects: delete removes them (also those of a
			// connect that failed half-way).
			c.State.NetNS, c.State.NetIface, c.State.NetIfaces = p.netns, names[0], names
			if err := c.Dir.Update(c.State); err != nil {
				return err
			}
		}
		if err := network.Connect(p.netns, p.taps[n], ifc); err != nil {
			return fmt.Errorf("network of %s: %w", c.ID, err)
		}
		gi := &api.Interface{Name: ifc.Name, NicMac: p.nicMACs[n].String(), HwAddr: ifc.MAC.String(), Mtu: uint32(ifc.MTU)}
		for _, a := range ifc.Addrs {
			gi.Addresses = append(gi.Addresses, a.String())
		}
		req.Interfaces = append(req.Interfaces, gi)
	}
	for _, r := range routes {
		if !slices.Contains(names, r.Device) {
			continue
		}
		gr := &api.Route{Device: r.Device, Scope: uint32(r.Scope), Family: uint32(r.Family),
			Metric: uint32(r.Metric), Mtu: uint32(r.MTU), Advmss: uint32(r.AdvMSS), Onlink: r.Onlink}
		if r.Dst != nil {
			gr.Destination = r.Dst.String()
		}
		if r.Gw != nil {
			gr.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			gr.Source = r.Src.String()
		}
		req.Routes = append(req.Routes, gr)
	}
	// What CNI set in the namespace (the tuning plugin's sysctls) the
	// guest's gets too; the spec's own sysctls, which runc applies after
	// the hooks, win.
	if sysctls, err := network.ChangedSysctls(p.netns, names...); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.ID).Warn("reading the network namespace's sysctls")
	} else {
		var own map[string]string
		if c.Spec.Linux != nil {
			own = c.Spec.Linux.Sysctl
		}
		for k, v := range sysctls {
			if _, ok := own[strings.ReplaceAll(k, "/", ".")]; !ok {
				if req.Sysctls == nil {
					req.Sysctls = map[string]string{}
				}
				req.Sysctls[k] = v
			}
		}
	}
	if _, err := c.Agent.ConfigureNetwork(ctx, req); err != nil {
		return fmt.Errorf("configuring the network of %s in the guest: %w", c.ID, errgrpc.ToNative(err))
	}
	log.G(ctx).WithFields(log.Fields{"id": c.ID, "interfaces": names}).Debug("network connected")
	return nil
}

// noNetwork tells the agent that no NIC comes, where the spec sets
// sysctls of interfaces: it sets them now, and fails the create on an
// interface the container lacks, as runc does.
func (c *Container) noNetwork(ctx context.Context) error {
	if c.Spec.Linux == nil || !slices.ContainsFunc(slices.Collect(maps.Keys(c.Spec.Linux.Sysctl)), interfaceSysctl) {
		return nil
	}
	if _, err := c.Agent.ConfigureNetwork(ctx, &api.ConfigureNetworkRequest{ContainerId: c.ID}); err != nil {
		return fmt.Errorf("configuring the network of %s in the guest: %w", c.ID, errgrpc.ToNative(err))
	}
	return nil
}

// interfaceSysctl says k (net.ipv4.conf.eth0.rp_filter) is a network
// interface's own sysctl, other than all's, default's and lo's.
func interfaceSysctl(k string) bool {
	f := strings.Split(strings.ReplaceAll(k, ".", "/"), "/")
	return len(f) >= 5 && f[0] == "net" && (f[1] == "ipv4" || f[1] == "ipv6") && (f[2] == "conf" || f[2] == "neigh") &&
		f[3] != "all" && f[3] != "default" && f[3] != "lo"
}

// releaseNetwork empties the network namespace an owner was started in
// for its container, once the container has ended: under runc the
// namespace ends with the container's last process and its veth with it,
// but the shim stays in it until the task is deleted, and a veth left
// there would hold its bridge port (and, once CNI has released it, an
// address) for a container that is gone.
func (c *Container) releaseNetwork(ctx context.Context) {
	if c.plan == nil || c.plan.netns != "/proc/self/ns/net" {
		return
	}
	if err := network.RemoveLinks(c.plan.netns); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.ID).Warn("removing the ended container's interfaces")
	}
}

// disconnectNetwork undoes connectNetwork in a namespace that outlives
// the container.
func disconnectNetwork(ctx context.Context, st *State) {
	if st.NetNS == "" {
		return
	}
	ifcs := st.NetIfaces
	if len(ifcs) == 0 {
		ifcs = []string{st.NetIface} // a state from before NetIfaces
	}
	for _, name := range ifcs {
		if err := network.Disconnect(st.NetNS, name); err != nil {
			log.G(ctx).WithError(err).WithField("id", st.ID).Warnf("removing the network redirect of %s", name)
		}
	}
}

// checkPrivileges refuses to start a container without root: on Linux
// vzrun makes network namespaces, tap devices and the mount namespaces of
// its file servers, and runs VMs for other users' bundles.
func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("running a container needs root on Linux, for its VM's network namespace, tap device and file server mounts; rootless use is not supported: %w", errdefs.ErrPermissionDenied)
	}
	return nil
}

// runInNetNS runs this command again, as a child in a new network
// namespace, when a foreground `run` asks for a new one: the child owns
// the VM, so hooks given state.pid find the container's namespace in
// /proc/PID/ns/net as with runc, and CNI plugins run from them see it.
// This process passes signals on and exits as the child does. handled is
// false when nothing needed doing; killed is the child's pid if a signal
// killed it (its state may be left).
func runInNetNS(spec *specs.Spec) (status int, handled bool, killed int, err error) {
	if !wantsNewNetNS(spec) || hostNetNS() != nil {
		return 0, false, 0, nil
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The child goes with this process, and the VM with the child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, err := StartInNetNS(cmd, spec)
	if err != nil {
		return -1, true, 0, err
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	err = cmd.Start()
	started()
	if err != nil {
		return -1, true, 0, fmt.Errorf("starting vzrun in a new network namespace: %w", err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				switch s {
				case unix.SIGCHLD, unix.SIGURG, unix.SIGPIPE:
				default:
					_ = cmd.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), true, cmd.Process.Pid, nil
		}
		return ee.ExitCode(), true, 0, nil
	}
	return 0, true, 0, err
}

// listenOnHost listens on a TCP address of the host's network namespace,
// also from an owner process that lives in its container's.
func listenOnHost(addr string) (l net.Listener, err error) {
	ns := hostNetNS()
	if ns == nil {
		return net.Listen("tcp", addr)
	}
	err = network.Do(ns, func() error {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}
