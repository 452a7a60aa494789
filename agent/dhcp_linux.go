package agent

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/containerd/log"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// dhcp asks the NAT's DHCP server (QEMU's user networking, the macOS
// framework's NAT) for an address for link, in the network namespace of
// pid, and applies the lease: address and default route.
func dhcp(ctx context.Context, pid int, h *netlink.Handle, link netlink.Link) error {
	// The DHCP client's raw socket is made in the thread's namespace; it
	// stays there, and renews the lease later from any thread.
	var c *nclient4.Client
	var lease *nclient4.Lease
	err := inNetNSOf(pid, func() (err error) {
		c, err = nclient4.New(link.Attrs().Name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if lease, err = c.Request(rctx); err != nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("dhcp on %s: %w", link.Attrs().Name, err)
	}
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: mask}}
	leaseLifetime(addr, lease)
	if err := h.AddrAdd(link, addr); err != nil {
		c.Close()
		return fmt.Errorf("adding %s from dhcp: %w", addr.IPNet, err)
	}
	if routers := ack.Router(); len(routers) > 0 {
		if err := h.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: routers[0]}); err != nil {
			c.Close()
			return fmt.Errorf("default route via %s: %w", routers[0], err)
		}
	}
	go keepLease(pid, link.Attrs().Index, c, lease, addr)
	return nil
}

// infiniteLease is DHCP's "forever" (0xffffffff seconds).
const infiniteLease = time.Duration(0xffffffff) * time.Second

// leaseLifetime gives addr the lease's lifetime, as a DHCP client does:
// `ip addr` shows it, and the address goes if the lease is not renewed.
func leaseLifetime(addr *netlink.Addr, lease *nclient4.Lease) {
	lt := lease.ACK.IPAddressLeaseTime(infiniteLease)
	if lt >= infiniteLease || lt <= 0 {
		addr.ValidLft, addr.PreferedLft = 0, 0 // forever
		return
	}
	addr.ValidLft, addr.PreferedLft = int(lt/time.Second), int(lt/time.Second)
}

// keepLease renews the lease at its renewal time (T1, half the lease by
// default), for as long as the container's network namespace lives; a
// NAT's DHCP server could otherwise give the address to another VM once
// the lease runs out. A failed renewal is retried until the lease ends.
func keepLease(pid, ifindex int, c *nclient4.Client, lease *nclient4.Lease, addr *netlink.Addr) {
	defer c.Close()
	for {
		lt := lease.ACK.IPAddressLeaseTime(infiniteLease)
		if lt >= infiniteLease || lt <= 0 {
			return
		}
		expires := lease.CreationTime.Add(lt)
		wait := lease.ACK.IPAddressRenewalTime(lt / 2)
		for {
			time.Sleep(wait)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			renewed, err := c.Renew(ctx, lease)
			cancel()
			if err == nil {
				lease = renewed
				break
			}
			left := time.Until(expires)
			if left <= 0 {
				log.L.WithError(err).Warnf("dhcp: lease of %s ended, not renewed", addr.IPNet)
				return
			}
			wait = max(left/2, 10*time.Second)
		}
		leaseLifetime(addr, lease)
		ns, err := netns.GetFromPid(pid)
		if err != nil {
			return // the container is gone
		}
		h, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			return
		}
		link, err := h.LinkByIndex(ifindex)
		if err == nil {
			err = h.AddrReplace(link, addr)
		}
		h.Close()
		if err != nil {
			log.L.WithError(err).Warnf("dhcp: renewing %s", addr.IPNet)
			return
		}
	}
}
