package runtime

import (
	"fmt"
	"testing"

	"github.com/vzrun/vzrun/runtime/network"
)

func TestNICOrder(t *testing.T) {
	var in []network.Interface
	for _, n := range []string{"net1", "eth10", "eth2", "eth1", "eth0", "net0x"} {
		in = append(in, network.Interface{Name: n})
	}
	var got []string
	for _, i := range nicOrder(in) {
		got = append(got, i.Name)
	}
	if want := "eth0 eth1 eth2 eth10 net1 net0x"; fmt.Sprint(got) != "["+want+"]" {
		t.Errorf("nicOrder: %v, want [%s]", got, want)
	}
}
