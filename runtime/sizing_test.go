package runtime

import (
	"fmt"
	"math"
	goruntime "runtime"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestVMSize(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	ncpu := goruntime.NumCPU()
	host := hostMemoryMiB()
	if host < DefaultMemoryMiB {
		t.Fatalf("host memory %d MiB", host)
	}
	tests := []struct {
		name    string
		res     *specs.LinuxResources
		ann     map[string]string
		cpus    int
		mem     int
		wantErr bool
	}{
		{name: "defaults", cpus: DefaultCPUs, mem: DefaultMemoryMiB},
		{name: "memory limit plus headroom", res: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(512 << 20)}}, cpus: 1, mem: 512 + agentHeadroomMiB},
		{name: "limit rounds up to MiB", res: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(100<<20 + 1)}}, cpus: 1, mem: 101 + agentHeadroomMiB},
		{name: "quota 1.5 cpus", res: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(150000), Period: u64(100000)}}, cpus: min(2, ncpu), mem: DefaultMemoryMiB},
		{name: "quota without period", res: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(50000)}}, cpus: 1, mem: DefaultMemoryMiB},
		{name: "cpuset", res: &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-1"}}, cpus: min(2, ncpu), mem: DefaultMemoryMiB},
		{name: "cpuset names cpu 1", res: &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "1"}}, cpus: min(2, ncpu), mem: DefaultMemoryMiB},
		{name: "quota and a wider cpuset", res: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(50000), Cpus: "0-1"}}, cpus: min(2, ncpu), mem: DefaultMemoryMiB},
		{name: "bad cpuset", res: &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "3-1"}}, wantErr: true},
		{name: "annotations win", res: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(512 << 20)}}, ann: map[string]string{AnnotationCPUs: "1", AnnotationMemory: "300"}, cpus: 1, mem: 300},
		{name: "cpus capped at host", ann: map[string]string{AnnotationCPUs: "1000"}, cpus: ncpu, mem: DefaultMemoryMiB},
		{name: "bad cpus annotation", ann: map[string]string{AnnotationCPUs: "zero"}, wantErr: true},
		{name: "too little memory", ann: map[string]string{AnnotationMemory: "10"}, wantErr: true},
		{name: "less than a VM needs", ann: map[string]string{AnnotationMemory: "64"}, wantErr: true},
		{name: "more memory than the host", ann: map[string]string{AnnotationMemory: fmt.Sprint(host + 1)}, wantErr: true},
		{name: "a limit above the host's memory", res: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(int64(host+1) << 20)}}, cpus: 1, mem: host},
		{name: "the largest limit", res: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(math.MaxInt64)}}, cpus: 1, mem: host},
		{name: "template false", ann: map[string]string{AnnotationTemplate: "false"}, cpus: DefaultCPUs, mem: DefaultMemoryMiB},
		{name: "bad template annotation", ann: map[string]string{AnnotationTemplate: "maybe"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &specs.Spec{Linux: &specs.Linux{Resources: tc.res}, Annotations: tc.ann}
			cpus, mem, err := VMSize(s)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %d cpus %d MiB", cpus, mem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cpus != tc.cpus || mem != tc.mem {
				t.Errorf("got %d cpus %d MiB, want %d cpus %d MiB", cpus, mem, tc.cpus, tc.mem)
			}
		})
	}
}

func TestNICCount(t *testing.T) {
	for _, tc := range []struct {
		ann  map[string]string
		want int
		bad  bool
	}{
		{nil, 1, false},
		{map[string]string{"nerdctl/networks": `["bridge"]`}, 1, false},
		{map[string]string{"nerdctl/networks": `["a","b","c"]`}, 3, false},
		{map[string]string{"nerdctl/networks": `["none"]`}, 1, false},
		{map[string]string{"nerdctl/networks": `["container:x"]`}, 1, false},
		{map[string]string{"nerdctl/networks": `not json`}, 1, false},
		{map[string]string{"nerdctl/networks": `["a","b","c","d","e","f","g","h","i"]`}, MaxNICs, false},
		{map[string]string{"io.vzrun.nics": "2", "nerdctl/networks": `["a","b","c"]`}, 2, false},
		{map[string]string{"io.vzrun.nics": "0"}, 0, true},
		{map[string]string{"io.vzrun.nics": "9"}, 0, true},
		{map[string]string{"io.vzrun.nics": "two"}, 0, true},
	} {
		got, err := NICCount(&specs.Spec{Annotations: tc.ann})
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("NICCount(%v) = %d, %v; want %d, error %v", tc.ann, got, err, tc.want, tc.bad)
		}
	}
}
