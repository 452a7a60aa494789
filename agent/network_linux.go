package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// ConfigureNetwork hands the VM's NIC to the container: the guest keeps
// the container in a network namespace of its own (loopback only) until
// the host has found what the container's host-side namespace holds, then
// the NIC moves in and takes that interface's MAC, MTU, addresses and
// routes, so peers on the host's bridge see the same endpoint as with runc.
func (s *Service) ConfigureNetwork(ctx context.Context, req *api.ConfigureNetworkRequest) (_ *api.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	c.init.mu.Lock()
	pid := c.init.pid
	c.init.mu.Unlock()
	if pid <= 0 {
		return nil, fmt.Errorf("container %s has no process: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	target, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("network namespace of container %s: %w", c.id, err)
	}
	defer target.Close()
	h, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in the container's namespace: %w", err)
	}
	defer h.Close()

	for _, ifc := range req.Interfaces {
		if err := moveNIC(ctx, ifc, pid, h); err != nil {
			return nil, fmt.Errorf("interface %s: %w", ifc.Name, err)
		}
	}
	for _, r := range req.Routes {
		if err := addRoute(h, r); err != nil {
			return nil, fmt.Errorf("route %s via %s: %w", orDefault(r.Destination), r.Gateway, err)
		}
	}
	if len(req.Sysctls) > 0 {
		setNetSysctls(ctx, pid, req.Sysctls)
	}
	// The spec's own, after CNI's and the host's: they win, as under runc.
	if err := c.setInterfaceSysctls(); err != nil {
		return nil, err
	}
	if len(c.netAgain) > 0 && len(req.Sysctls) > 0 {
		err := inNetNSOf(pid, func() error {
			for k, v := range c.netAgain {
				if err := writeSysctl(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return &api.Empty{}, nil
}

// writeSysctl sets the sysctl at path k under /proc/sys, failing in
// runc's words.
func writeSysctl(k, v string) error {
	name := strings.ReplaceAll(k, "/", ".")
	f, err := os.OpenFile(filepath.Join("/proc/sys", k), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open sysctl %s file: %w", name, err)
	}
	defer f.Close()
	if _, err := f.WriteString(v); err != nil {
		return fmt.Errorf("write sysctl %s = %q: %w", name, v, err)
	}
	return nil
}

// setInterfaceSysctls sets the spec's interface sysctls in the container's
// network namespace, once; an interface the container lacks is an error,
// in runc's words.
func (c *container) setInterfaceSysctls() error {
	c.netMu.Lock()
	defer c.netMu.Unlock()
	if len(c.ifSysctls) == 0 {
		return nil
	}
	c.init.mu.Lock()
	pid := c.init.pid
	c.init.mu.Unlock()
	err := inNetNSOf(pid, func() error {
		for k, v := range c.ifSysctls {
			if err := writeSysctl(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		c.ifSysctls = nil
	}
	return err
}

// setNetSysctls writes network sysctls (paths under /proc/sys/net) in the
// network namespace of pid. One this kernel lacks or refuses is logged,
// not an error: the host found it set in its own kernel's namespace.
func setNetSysctls(ctx context.Context, pid int, sysctls map[string]string) {
	// ip_forward and conf/all first, then conf/default, then the rest: a
	// write of all's (ip_forward is all's forwarding) is copied to every
	// interface, whose own value comes after.
	keys := slices.Collect(maps.Keys(sysctls))
	rank := func(k string) int {
		switch {
		case k == "net/ipv4/ip_forward":
			return 0
		case strings.Contains(k, "/conf/all/"):
			return 1
		case strings.Contains(k, "/conf/default/"):
			return 2
		}
		return 3
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a, b)) })
	err := inNetNSOf(pid, func() error {
		for _, k := range keys {
			v := sysctls[k]
			if !strings.HasPrefix(k, "net/") || strings.Contains(k, "..") {
				continue
			}
			path := filepath.Join("/proc/sys", k)
			if cur, err := os.ReadFile(path); err == nil && strings.Join(strings.Fields(string(cur)), " ") == strings.Join(strings.Fields(v), " ") {
				continue
			} else if errors.Is(err, os.ErrNotExist) {
				// The host's kernel has settings this one lacks.
				log.G(ctx).Debugf("sysctl %s: not in the guest's kernel", k)
				continue
			}
			if err := os.WriteFile(path, []byte(v), 0); err != nil {
				log.G(ctx).WithError(err).Warnf("sysctl %s=%s", k, v)
			}
		}
		return nil
	})
	if err != nil {
		log.G(ctx).WithError(err).Warn("network sysctls")
	}
}

// moveNIC finds the NIC by the MAC the host gave it at boot, moves it into
// the namespace of pid (handled by h) and configures it there.
func moveNIC(ctx context.Context, ifc *api.Interface, pid int, h *netlink.Handle) error {
	nicMAC, err := net.ParseMAC(ifc.NicMac)
	if err != nil {
		return fmt.Errorf("nic mac: %w", errdefs.ErrInvalidArgument)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var nic netlink.Link
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == nicMAC.String() {
			nic = l
			break
		}
	}
	if nic == nil {
		return fmt.Errorf("no nic with mac %s in the vm: %w", nicMAC, errdefs.ErrNotFound)
	}
	if err := moveLink(nic, pid, ifc.Name); err != nil {
		return fmt.Errorf("moving %s into the container: %w", nic.Attrs().Name, err)
	}
	// Found again by MAC: its index may be taken in the new namespace.
	moved, err := h.LinkList()
	if err != nil {
		return err
	}
	var link netlink.Link
	for _, l := range moved {
		if l.Attrs().HardwareAddr.String() == nicMAC.String() {
			link = l
		}
	}
	if link == nil {
		return fmt.Errorf("nic %s vanished moving into the container: %w", nicMAC, errdefs.ErrNotFound)
	}
	if ifc.Name != "" && ifc.Name != link.Attrs().Name {
		if err := h.LinkSetName(link, ifc.Name); err != nil {
			return fmt.Errorf("renaming %s: %w", link.Attrs().Name, err)
		}
	}
	if ifc.HwAddr != "" {
		mac, err := net.ParseMAC(ifc.HwAddr)
		if err != nil {
			return fmt.Errorf("mac %q: %w", ifc.HwAddr, errdefs.ErrInvalidArgument)
		}
		if err := h.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("setting mac: %w", err)
		}
	}
	if ifc.Mtu > 0 {
		if err := h.LinkSetMTU(link, int(ifc.Mtu)); err != nil {
			return fmt.Errorf("setting mtu %d: %w", ifc.Mtu, err)
		}
	}
	for _, a := range ifc.Addresses {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("address %q: %w", a, errdefs.ErrInvalidArgument)
		}
		if addr.IP.To4() == nil {
			// No duplicate address detection: the address is the
			// host-side interface's, which no longer answers.
			addr.Flags |= unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("adding %s: %w", a, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing it up: %w", err)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	if ifc.Dhcp {
		// Renamed or not, the link is found again by index in its
		// namespace.
		if l, err := h.LinkByIndex(link.Attrs().Index); err == nil {
			link = l
		}
		return dhcp(ctx, pid, h, link)
	}
	return nil
}

// moveLink moves link into the network namespace of pid, named name there
// ("" keeps its name) in the same request: the guest numbers its NICs as
// it finds them, so with several, one's name here can be taken there by
// another already moved and renamed (the kernel refuses a move whose name
// is taken unless it is given one to use instead).
func moveLink(link netlink.Link, pid int, name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_PID, nl.Uint32Attr(uint32(pid))))
	if name != "" {
		req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func addRoute(h *netlink.Handle, r *api.Route) error {
	route := &netlink.Route{Scope: netlink.Scope(r.Scope), Priority: int(r.Metric), MTU: int(r.Mtu), AdvMSS: int(r.Advmss)}
	if r.Device != "" {
		link, err := h.LinkByName(r.Device)
		if err != nil {
			return err
		}
		route.LinkIndex = link.Attrs().Index
	}
	if r.Destination != "" {
		_, dst, err := net.ParseCIDR(r.Destination)
		if err != nil {
			return fmt.Errorf("destination: %w", errdefs.ErrInvalidArgument)
		}
		route.Dst = dst
	}
	if r.Gateway != "" {
		if route.Gw = net.ParseIP(r.Gateway); route.Gw == nil {
			return fmt.Errorf("gateway: %w", errdefs.ErrInvalidArgument)
		}
	}
	if r.Source != "" {
		route.Src = net.ParseIP(r.Source)
	}
	switch {
	case r.Family == 6:
		route.Family = netlink.FAMILY_V6
	case r.Family == 4:
		route.Family = netlink.FAMILY_V4
	}
	if r.Onlink {
		route.Flags |= int(netlink.FLAG_ONLINK)
	}
	// Appended, not replaced: routes to one destination through several
	// interfaces (a default route on each of two networks) are kept, as
	// the host-side namespace has them. One the guest has already is no
	// error.
	if err := h.RouteAppend(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

func orDefault(dst string) string {
	if strings.TrimSpace(dst) == "" {
		return "default"
	}
	return dst
}
