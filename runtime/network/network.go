package network

import (
	"crypto/sha256"
	"net"
	"strconv"
)

// Interface is a network interface found in a container's namespace.
type Interface struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	MTU   int
	// Addrs are the interface's global addresses (link-local ones are
	// the guest kernel's business).
	Addrs []*net.IPNet
}

// Route is a route through one of the namespace's interfaces that the
// kernel did not add by itself for an address.
type Route struct {
	Dst      *net.IPNet // nil: default route
	Gw       net.IP
	Src      net.IP
	Device   string
	Scope    uint8
	Family   int // 4 or 6
	Protocol int
	// Metric is the route's priority; MTU and AdvMSS its metrics (0:
	// none).
	Metric, MTU, AdvMSS int
	// Onlink says the gateway is on the link without a subnet for it.
	Onlink bool
}

// TapName is the name of the VM's (first) tap device in the container's
// namespace.
const TapName = "vztap0"

// TapNameN is the name of the tap of the VM's NIC i.
func TapNameN(i int) string { return "vztap" + strconv.Itoa(i) }

// StableMAC is a locally administered unicast MAC derived from key, for a
// NIC that must be found again (by the agent) or keep its identity (on
// macOS, a NAT attachment's DHCP lease).
func StableMAC(key string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(key))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}
