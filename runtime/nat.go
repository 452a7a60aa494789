package runtime

import (
	"context"
	"fmt"
	"net"
	"os"

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

// EnvNATDHCP set to 1 configures a NAT NIC by DHCP even where its network
// is known, as on macOS.
const EnvNATDHCP = "VZRUN_NAT_DHCP"

// planNAT gives the VM a NAT NIC.
func (p *containerVM) planNAT(id string) {
	p.nat, p.nicMACs = true, []net.HardwareAddr{network.StableMAC(id)}
	p.cfg.NICs = append(p.cfg.NICs, hypervisor.NIC{MAC: p.nicMACs[0]})
}

// configureNAT has the agent configure the NAT NIC: statically where the
// NAT's network is known (natConfig), else by DHCP.
func (c *Container) configureNAT(ctx context.Context) error {
	ifc := &api.Interface{Name: "eth0", NicMac: c.plan.nicMACs[0].String()}
	req := &api.ConfigureNetworkRequest{ContainerId: c.ID, Interfaces: []*api.Interface{ifc}}
	if natAddress != "" && os.Getenv(EnvNATDHCP) != "1" {
		ifc.Addresses = []string{natAddress}
		req.Routes = []*api.Route{{Gateway: natGateway, Device: "eth0", Family: 4}}
	} else {
		ifc.Dhcp = true
	}
	if _, err := c.Agent.ConfigureNetwork(ctx, req); err != nil {
		return fmt.Errorf("configuring the network of %s in the guest: %w", c.ID, errgrpc.ToNative(err))
	}
	log.G(ctx).WithField("id", c.ID).Debug("nat network configured")
	return nil
}
