package runtime

import (
	"fmt"
	"testing"

	"github.com/vzrun/vzrun/runtime/network"
)

func TestNICOrder(t *testing.T) {
	var in []network.Interface
	for _, n := range []string{"net1", "eth1", "eth0", "eth2"} {
		in = append(in, network.Interface{Name: n})
	}
	var got []string
	for _, i := range nicOrder(in) {
		got = append(got, i.Name)
	}
	if want := "eth0 net1 eth1 eth2"; fmt.Sprint(got) != "["+want+"]" {
		t.Errorf("nicOrder: %v, want [%s]", got, want)
	}
}
