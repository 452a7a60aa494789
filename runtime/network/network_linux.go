package network

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNS runs fn on a thread in the network namespace at nsPath.
func inNS(nsPath string, fn func() error) error {
	f, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	defer f.Close()
	return Do(f, fn)
}

// Do runs fn on a thread in the network namespace ns (an open nsfs file):
// sockets fn makes stay in it, processes it starts are born in it. The
// thread is dropped, not reused, if it cannot be moved back.
func Do(ns *os.File, fn func() error) error {
	return onThread(func() error {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering network namespace %s: %w", ns.Name(), err)
		}
		return nil
	}, fn)
}

// onThread runs enter and then fn on a locked OS thread of its own, and
// puts the thread back into this process's network namespace after. A
// thread that cannot go back is dropped with its goroutine.
func onThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// SameAsInit reports whether nsPath is the network namespace of the host's
// init: a VM must never be wired into the host's own network.
func SameAsInit(nsPath string) bool {
	var a, b unix.Stat_t
	if unix.Stat(nsPath, &a) != nil || unix.Stat("/proc/1/ns/net", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Users lists the processes other than this one in the network namespace
// at nsPath, as "pid N (comm)".
func Users(nsPath string) ([]string, error) {
	var want unix.Stat_t
	if err := unix.Stat(nsPath, &want); err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := strconv.Itoa(os.Getpid())
	var users []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil || st.Dev != want.Dev || st.Ino != want.Ino {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		users = append(users, fmt.Sprintf("pid %s (%s)", e.Name(), strings.TrimSpace(string(comm))))
	}
	return users, nil
}

// Tap is the VM's tap device. It is made in a namespace of its own and
// moves into the container's namespace only when Connect joins it to an
// interface there: until then hooks and tools that look at the
// container's namespace (nerdctl's inspect takes the first interface that
// is up as the container's) see only what they put in.
type Tap struct {
	// File is the open tap, for the VMM.
	File    *os.File
	name    string
	staging *os.File
}

// NewTap makes a tap device called name. It is not persistent: it goes
// when the last holder of File (the VMM, its owner) exits, kill -9
// included.
func NewTap(name string) (_ *Tap, retErr error) {
	t := &Tap{name: name}
	defer func() {
		if retErr != nil {
			t.Close()
		}
	}()
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("making a network namespace for the tap: %w", err)
		}
		return nil
	}, func() error {
		staging, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		t.staging = staging
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		// The virtio-net header lets the guest's offloads (checksum,
		// segmentation) pass through instead of being done in
		// software.
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("creating tap %s: %w", name, err)
		}
		t.File = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	return t, err
}

// CloseFile closes this process's copy of the tap, once the VMM has one.
func (t *Tap) CloseFile() {
	if t.File != nil {
		t.File.Close()
		t.File = nil
	}
}

// Close releases the tap and its staging namespace.
func (t *Tap) Close() {
	t.CloseFile()
	if t.staging != nil {
		t.staging.Close()
		t.staging = nil
	}
}

// moveInto moves the tap from its staging namespace into the namespace at
// nsPath, numbered after everything there so that it sorts last.
func (t *Tap) moveInto(nsPath string) error {
	target, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	th, err := netlink.NewHandleAt(netns.NsHandle(target.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer th.Close()
	links, err := th.LinkList()
	if err != nil {
		return err
	}
	next := 1
	for _, l := range links {
		next = max(next, l.Attrs().Index+1)
	}
	sh, err := netlink.NewHandleAt(netns.NsHandle(t.staging.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer sh.Close()
	link, err := sh.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", t.name, err)
	}
	// RTM_NEWLINK with IFLA_NEW_IFINDEX (Linux 5.x on) picks the index;
	// without it the tap keeps the one it has.
	err = inNS(fmt.Sprintf("/proc/self/fd/%d", t.staging.Fd()), func() error {
		req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(link.Attrs().Index)
		req.AddData(msg)
		req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(target.Fd()))))
		req.AddData(nl.NewRtAttr(unix.IFLA_NEW_IFINDEX, nl.Uint32Attr(uint32(next))))
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
	if err != nil {
		if err := sh.LinkSetNsFd(link, int(target.Fd())); err != nil {
			if errors.Is(err, unix.EEXIST) {
				// Another VM's tap is there: the namespace is another
				// container's (--network container:NAME).
				return fmt.Errorf("network namespace %s already has a VM's NIC (%s): a container in its own VM cannot share another container's network namespace: %w", nsPath, t.name, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("moving tap %s into %s: %w", t.name, nsPath, err)
		}
	}
	return nil
}

// Inspect lists the interfaces (but lo and those named in skip) of the
// namespace at nsPath, with their routes.
func Inspect(nsPath string, skip ...string) ([]Interface, []Route, error) {
	h, err := handleAt(nsPath)
	if err != nil {
		return nil, nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, nil, err
	}
	var ifcs []Interface
	var routes []Route
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || slices.Contains(skip, a.Name) || !ethernet(l) {
			continue
		}
		names[a.Index] = a.Name
		ifc := Interface{Name: a.Name, Index: a.Index, MAC: a.HardwareAddr, MTU: a.MTU}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, nil, fmt.Errorf("addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			// IPv6's link-local address is every interface's own (the
			// guest makes one); an IPv4 one (169.254.x.y) is assigned.
			if ad.IP.To4() == nil && ad.IP.IsLinkLocalUnicast() {
				continue
			}
			ifc.Addrs = append(ifc.Addrs, ad.IPNet)
		}
		ifcs = append(ifcs, ifc)
	}
	// The whole table at once, in its order: of two routes to one
	// destination with one metric the kernel takes the first, so the
	// guest must have them in the same order.
	rs, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("routes: %w", err)
	}
	for _, r := range rs {
		name, ok := names[r.LinkIndex]
		if !ok {
			continue
		}
		// The guest's kernel adds the subnet routes of the addresses
		// itself.
		if r.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		family := 4
		if r.Family == netlink.FAMILY_V6 {
			family = 6
		}
		// IPv6's link-local and multicast routes are every
		// interface's own; IPv4 link-local ones (169.254.0.0/16) are a
		// network's choice: a gateway (Calico's 169.254.1.1), a
		// metadata service.
		if family == 6 && r.Dst != nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) {
			continue
		}
		routes = append(routes, Route{Dst: r.Dst, Gw: r.Gw, Src: r.Src, Device: name,
			Scope: uint8(r.Scope), Family: family, Protocol: int(r.Protocol),
			Metric: r.Priority, MTU: r.MTU, AdvMSS: r.AdvMSS, Onlink: r.Flags&unix.RTNH_F_ONLINK != 0})
	}
	// A gateway must be reachable when its route is added: routes without
	// one (a /32 address's scope-link route to its gateway) go first.
	slices.SortStableFunc(routes, func(a, b Route) int {
		return cmp.Compare(boolInt(a.Gw != nil), boolInt(b.Gw != nil))
	})
	return ifcs, routes, nil
}

// ethernet says l can be a VM NIC's peer: an Ethernet interface (a veth,
// macvlan, ipvlan, ...), not one of the tunnels' fallback devices a new
// namespace gets when their modules are loaded (tunl0, sit0, gre0,
// gretap0, erspan0, ip6tnl0, ...), which sit there down and unused.
func ethernet(l netlink.Link) bool {
	switch l.Type() {
	case "ipip", "sit", "gre", "gretap", "ip6gre", "ip6gretap", "erspan", "ip6erspan", "ip6tnl", "vti", "vti6", "tun":
		return false
	}
	a := l.Attrs()
	return (a.EncapType == "" || a.EncapType == "ether") && len(a.HardwareAddr) == 6
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// handleAt is a netlink handle in the network namespace at nsPath.
func handleAt(nsPath string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
}

// Connect moves the tap into the namespace at nsPath and joins it to ifc
// there: everything that arrives on one leaves by the other, and the tap
// takes ifc's MTU.
func Connect(nsPath string, tap *Tap, ifc Interface) error {
	if err := tap.moveInto(nsPath); err != nil {
		return err
	}
	h, err := handleAt(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	t, err := h.LinkByName(tap.name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", tap.name, err)
	}
	peer, err := h.LinkByName(ifc.Name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifc.Name, err)
	}
	if ifc.MTU > 0 {
		if err := h.LinkSetMTU(t, ifc.MTU); err != nil {
			return fmt.Errorf("mtu of %s: %w", tap.name, err)
		}
	}
	if err := h.LinkSetUp(t); err != nil {
		return fmt.Errorf("bringing %s up: %w", tap.name, err)
	}
	for _, pair := range [][2]netlink.Link{{peer, t}, {t, peer}} {
		if err := redirect(h, pair[0], pair[1]); err != nil {
			return fmt.Errorf("redirecting %s to %s: %w", pair[0].Attrs().Name, pair[1].Attrs().Name, err)
		}
	}
	return nil
}

// redirectPriority is the priority of Connect's redirect filters.
const redirectPriority = 1

// redirect sends every frame arriving on from out of to.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: from.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
	if err := h.QdiscAdd(ingress); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("ingress qdisc: %w", err)
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.MakeHandle(0xffff, 0),
			Priority:  redirectPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
	if err := h.FilterAdd(filter); err != nil {
		return fmt.Errorf("mirred filter: %w", err)
	}
	return nil
}

// Disconnect removes what Connect added to ifName: its redirect (a u32
// filter with a mirred action at Connect's priority on the ingress qdisc)
// and the ingress qdisc if nothing else is left on it; filters someone
// else put there stay. The tap goes by itself. A namespace or interface
// already gone is not an error.
func Disconnect(nsPath, ifName string) error {
	h, err := handleAt(nsPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		return nil
	}
	ingress := netlink.MakeHandle(0xffff, 0)
	filters, err := h.FilterList(l, ingress)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // no ingress qdisc
		}
		return fmt.Errorf("filters of %s: %w", ifName, err)
	}
	left := 0
	for _, f := range filters {
		if !isRedirect(f) {
			left++
			continue
		}
		if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing the redirect of %s: %w", ifName, err)
		}
	}
	if left > 0 {
		return nil
	}
	qdiscs, err := h.QdiscList(l)
	if err != nil {
		return err
	}
	for _, q := range qdiscs {
		if q.Type() == "ingress" {
			if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("removing the ingress qdisc of %s: %w", ifName, err)
			}
		}
	}
	return nil
}

// isRedirect says f is a redirect Connect made: a u32 filter at its
// priority whose action is a mirred redirect.
func isRedirect(f netlink.Filter) bool {
	u, ok := f.(*netlink.U32)
	if !ok || u.Attrs().Priority != redirectPriority {
		return false
	}
	for _, a := range u.Actions {
		if m, ok := a.(*netlink.MirredAction); ok && m.MirredAction == netlink.TCA_EGRESS_REDIR {
			return true
		}
	}
	return false
}

// RemoveLinks removes every interface but loopback from the namespace at
// nsPath, as the namespace's end would: a veth's peer on a bridge goes
// with it.
func RemoveLinks(nsPath string) error {
	h, err := handleAt(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("removing %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// StartIn starts cmd in the network namespace of ns (an open nsfs file).
func StartIn(ns *os.File, cmd *exec.Cmd) error { return Do(ns, cmd.Start) }
