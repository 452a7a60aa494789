package agent

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// dhcp asks the NAT's DHCP server (QEMU's user networking, the macOS
// framework's NAT) for an address for link, in the network namespace of
// pid, and applies the lease: address and default route.
func dhcp(ctx context.Context, pid int, h *netlink.Handle, link netlink.Link) error {
	// The DHCP client's raw socket is made in the thread's namespace.
	var lease *nclient4.Lease
	err := inNetNSOf(pid, func() error {
		c, err := nclient4.New(link.Attrs().Name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		if err != nil {
			return err
		}
		defer c.Close()
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		lease, err = c.Request(rctx)
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
