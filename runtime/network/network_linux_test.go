package network

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// The fallback devices a new namespace gets when tunnel modules are
// loaded are no NIC's peers; veths and the like are.
func TestEthernet(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for _, tc := range []struct {
		l    netlink.Link
		want bool
	}{
		{&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", HardwareAddr: mac, EncapType: "ether"}}, true},
		{&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "net1", HardwareAddr: mac, EncapType: "ether"}}, true},
		{&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: "tunl0", HardwareAddr: net.HardwareAddr{0, 0, 0, 0}, EncapType: "ipip"}}, false},
		{&netlink.Sittun{LinkAttrs: netlink.LinkAttrs{Name: "sit0", EncapType: "sit"}}, false},
		{&netlink.Gretap{LinkAttrs: netlink.LinkAttrs{Name: "gretap0", HardwareAddr: mac, EncapType: "ether"}}, false},
		{&netlink.Gretap{LinkAttrs: netlink.LinkAttrs{Name: "erspan0", HardwareAddr: mac, EncapType: "ether"}}, false},
		{&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "odd", HardwareAddr: net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}, EncapType: "infiniband"}}, false},
	} {
		if got := ethernet(tc.l); got != tc.want {
			t.Errorf("ethernet(%s %s) = %v, want %v", tc.l.Type(), tc.l.Attrs().Name, got, tc.want)
		}
	}
}
