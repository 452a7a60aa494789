package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"

	api "github.com/vzrun/vzrun/api/agent/v1"
	"github.com/vzrun/vzrun/runtime/hypervisor"
	"github.com/vzrun/vzrun/runtime/network"
)

// A container that asks for the host's network (no network namespace in
// its spec) cannot share it from inside a VM; it gets the backend's NAT
// instead, so it reaches what the host reaches: QEMU's user networking
// here, Virtualization.framework's NAT on macOS. The agent configures the
// NIC by DHCP. Published ports (io.vzrun.publish) come in through the
// agent, not the NAT.

// planNAT gives the VM a NAT NIC.
func (p *containerVM) planNAT(id string) {
	p.nat, p.nicMAC = true, network.StableMAC(id)
	p.cfg.NICs = append(p.cfg.NICs, hypervisor.NIC{MAC: p.nicMAC})
}

// configureNAT has the agent take an address on the NAT NIC by DHCP.
func (c *Container) configureNAT(ctx context.Context) error {
	req := &api.ConfigureNetworkRequest{ContainerId: c.ID, Interfaces: []*api.Interface{{
		Name: "eth0", NicMac: c.plan.nicMAC.String(), Dhcp: true,
	}}}
	if _, err := c.Agent.ConfigureNetwork(ctx, req); err != nil {
		return fmt.Errorf("configuring the network of %s in the guest: %w", c.ID, errgrpc.ToNative(err))
	}
	log.G(ctx).WithField("id", c.ID).Debug("nat network configured")
	return nil
}
