//go:build !linux

package runtime

import (
	"context"
	"net"
	"os/exec"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Where there are no network namespaces (macOS) the VM's network is the
// backend's own (Virtualization.framework's NAT); nothing is joined.

// StartInNetNS starts cmd as it is.
func StartInNetNS(cmd *exec.Cmd, spec *specs.Spec) (func(), error) { return func() {}, nil }

func startOnHost(cmd *exec.Cmd) error { return cmd.Start() }

func listenOnHost(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// checkPrivileges: Virtualization.framework needs no root, only the
// virtualization entitlement.
func checkPrivileges() error { return nil }

func runInNetNS(spec *specs.Spec) (int, bool, int, error) { return 0, false, 0, nil }

// The framework's NAT network is the Mac's to choose: DHCP.
const natAddress, natGateway = "", ""

// planNIC: every VM gets the framework's NAT.
func (p *containerVM) planNIC(ctx context.Context, id string, spec *specs.Spec) error {
	p.planNAT(id)
	return nil
}

func (c *Container) connectNetwork(ctx context.Context) error {
	if c.plan != nil && c.plan.nat {
		return c.configureNAT(ctx)
	}
	return nil
}

func disconnectNetwork(ctx context.Context, st *State) {}

func (c *Container) releaseNetwork(ctx context.Context) {}
