package runtime

import (
	"encoding/json"
	"fmt"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Annotations vzrun reads from the spec.
const (
	AnnotationCPUs       = "io.vzrun.cpus"
	AnnotationMemory     = "io.vzrun.memory" // MiB
	AnnotationRootfs     = "io.vzrun.rootfs" // virtiofs or ext4
	AnnotationExt4Data   = "io.vzrun.ext4.data"
	AnnotationExt4Sync   = "io.vzrun.ext4.sync" // true: a synchronous mount
	AnnotationAccel      = "io.vzrun.accel"
	AnnotationDiskSizeMB = "io.vzrun.disk-size" // MiB, ext4 rootfs image
	AnnotationNICs       = "io.vzrun.nics"      // NICs for the namespace's interfaces
)

// annotationNerdctlNetworks is where nerdctl lists a container's networks
// (a JSON array: CNI network names, or one of none, host, container:ID,
// ns:PATH); each CNI network is an interface in the namespace.
const annotationNerdctlNetworks = "nerdctl/networks"

// MaxNICs bounds io.vzrun.nics; each NIC is a virtio device of the VM.
const MaxNICs = 8

// NICCount is how many NICs the VM of a container with its own network
// namespace gets: the interfaces its namespace will hold are made by hooks
// after the VM starts (and a VM's devices are fixed at its start), so the
// count comes from io.vzrun.nics, else from nerdctl's list of networks,
// else it is one.
func NICCount(s *specs.Spec) (int, error) {
	if v, ok := s.Annotations[AnnotationNICs]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxNICs {
			return 0, fmt.Errorf("annotation %s=%q: want a number of NICs from 1 to %d: %w", AnnotationNICs, v, MaxNICs, errdefs.ErrInvalidArgument)
		}
		return n, nil
	}
	var networks []string
	if json.Unmarshal([]byte(s.Annotations[annotationNerdctlNetworks]), &networks) != nil {
		return 1, nil
	}
	for _, n := range networks {
		if n == "none" || n == "host" || strings.HasPrefix(n, "container:") || strings.HasPrefix(n, "ns:") {
			return 1, nil
		}
	}
	return min(max(len(networks), 1), MaxNICs), nil
}

const (
	// DefaultCPUs and DefaultMemoryMiB size a VM whose spec sets no limits.
	DefaultCPUs      = 1
	DefaultMemoryMiB = 1024
	// agentHeadroomMiB is added to a memory limit for the guest kernel and
	// the agent, so the container gets the limit it asked for.
	agentHeadroomMiB = 128
	// MinMemoryMiB is the smallest VM a container is created in: the
	// guest kernel, the agent and runc's create take ~80 MiB, and below
	// that the create dies in the guest (OOM) with an unclear error.
	MinMemoryMiB = 128
)

// VMSize derives vCPUs and guest memory from the spec: annotations first,
// then linux.resources (cpu quota/period or cpuset; memory limit plus
// headroom), else the defaults.
func VMSize(s *specs.Spec) (cpus, memMiB int, err error) {
	cpus, memMiB = DefaultCPUs, DefaultMemoryMiB
	if s.Linux != nil && s.Linux.Resources != nil {
		r := s.Linux.Resources
		if c := r.CPU; c != nil {
			if c.Quota != nil && *c.Quota > 0 {
				period := uint64(100000)
				if c.Period != nil && *c.Period > 0 {
					period = *c.Period
				}
				cpus = int((uint64(*c.Quota) + period - 1) / period)
			}
			// The guest needs every CPU the cpuset names, or the
			// container's cpuset.cpus cannot be written there.
			if c.Cpus != "" {
				n, err := highestCPU(c.Cpus)
				if err != nil {
					return 0, 0, fmt.Errorf("linux.resources.cpu.cpus: %w", err)
				}
				cpus = max(cpus, n+1)
			}
		}
		// A limit above the host's memory limits nothing (as with runc):
		// the VM gets the host's memory.
		if m := r.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
			limitMiB := uint64(*m.Limit) >> 20
			if uint64(*m.Limit)&(1<<20-1) != 0 {
				limitMiB++
			}
			memMiB = int(min(limitMiB+agentHeadroomMiB, uint64(max(hostMemoryMiB(), DefaultMemoryMiB))))
		}
	}
	if v, ok := s.Annotations[AnnotationCPUs]; ok {
		if cpus, err = strconv.Atoi(v); err != nil || cpus < 1 {
			return 0, 0, fmt.Errorf("annotation %s=%q: want a positive number: %w", AnnotationCPUs, v, errdefs.ErrInvalidArgument)
		}
	}
	if v, ok := s.Annotations[AnnotationMemory]; ok {
		if memMiB, err = strconv.Atoi(v); err != nil || memMiB < MinMemoryMiB {
			return 0, 0, fmt.Errorf("annotation %s=%q: want MiB, at least %d: %w", AnnotationMemory, v, MinMemoryMiB, errdefs.ErrInvalidArgument)
		}
		if host := hostMemoryMiB(); host > 0 && memMiB > host {
			return 0, 0, fmt.Errorf("annotation %s=%q: more than the host's memory (%d MiB): %w", AnnotationMemory, v, host, errdefs.ErrInvalidArgument)
		}
	}
	if v, ok := s.Annotations[AnnotationTemplate]; ok {
		if _, err := strconv.ParseBool(v); err != nil {
			return 0, 0, fmt.Errorf("annotation %s=%q: want true or false: %w", AnnotationTemplate, v, errdefs.ErrInvalidArgument)
		}
	}
	if n := goruntime.NumCPU(); cpus > n {
		cpus = n
	}
	return cpus, memMiB, nil
}

// highestCPU is the highest CPU in a cpuset list such as "0-3,6".
func highestCPU(set string) (int, error) {
	n := -1
	for _, part := range strings.Split(set, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("bad cpu list %q: %w", set, errdefs.ErrInvalidArgument)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0, fmt.Errorf("bad cpu list %q: %w", set, errdefs.ErrInvalidArgument)
			}
		}
		n = max(n, b)
	}
	return n, nil
}
