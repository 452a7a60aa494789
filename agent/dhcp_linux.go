package agent

import (
	"context"
	"fmt"
	"net"
	goruntime "runtime"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// dhcp asks the NAT's DHCP server (QEMU's user networking, the macOS
// framework's NAT) for an address for link, in the network namespace of
// pid, and applies the lease: address and default route.
func dhcp(ctx context.Context, pid int, h *netlink.Handle, link netlink.Link) error {
	type result struct {
		lease *nclient4.Lease
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		// The DHCP client's raw socket is made in the namespace of the
		// thread that makes it; the thread is dropped if it cannot go
		// back.
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPid(pid)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			ch <- result{err: err}
			return
		}
		var r result
		c, err := nclient4.New(link.Attrs().Name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			r.lease, r.err = c.Request(rctx)
			cancel()
			c.Close()
		} else {
			r.err = err
		}
		if netns.Set(orig) == nil {
			goruntime.UnlockOSThread()
		}
		ch <- r
	}()
	r := <-ch
	if r.err != nil {
		return fmt.Errorf("dhcp on %s: %w", link.Attrs().Name, r.err)
	}
	ack := r.lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: mask}}
	if err := h.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("adding %s from dhcp: %w", addr.IPNet, err)
	}
	if routers := ack.Router(); len(routers) > 0 {
		if err := h.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: routers[0]}); err != nil {
			return fmt.Errorf("default route via %s: %w", routers[0], err)
		}
	}
	return nil
}
