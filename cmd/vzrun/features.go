package main

import (
	"encoding/json"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"github.com/urfave/cli/v2"

	"github.com/vzrun/vzrun/runtime"
)

var featuresCommand = &cli.Command{
	Name:  "features",
	Usage: "print what vzrun supports, as runtime-spec features JSON",
	Action: func(c *cli.Context) error {
		yes := true
		f := features.Features{
			OCIVersionMin: "1.0.0",
			OCIVersionMax: specs.Version,
			Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
			MountOptions: []string{"bind", "rbind", "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
				"private", "rprivate", "shared", "rshared", "slave", "rslave", "relatime", "strictatime", "noatime", "tmpcopyup"},
			Linux: &features.Linux{
				Namespaces: []string{"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"},
				Cgroup:     &features.Cgroup{V1: new(bool), V2: &yes},
				Seccomp:    guestSeccomp(&yes),
			},
			Annotations: map[string]string{
				"io.vzrun.hypervisor":        "qemu microvm (linux), Virtualization.framework (macos)",
				runtime.AnnotationCPUs:       "vCPUs of the container's VM",
				runtime.AnnotationMemory:     "memory of the container's VM, MiB",
				runtime.AnnotationRootfs:     "virtiofs (default) or ext4",
				runtime.AnnotationExt4Data:   "ext4 rootfs journal mode: ordered (default), writeback or journal",
				runtime.AnnotationExt4Sync:   "true mounts the ext4 rootfs synchronously",
				runtime.AnnotationDiskSizeMB: "size of the ext4 rootfs image, MiB",
				runtime.AnnotationTemplate:   "false boots the VM cold instead of restoring a template",
				runtime.AnnotationAccel:      "accelerator: kvm, tcg or hvf (default: chosen by a probe)",
				runtime.AnnotationNICs:       "NICs of the VM, 1-8 (default: one per nerdctl network or interface of a namespace given by path)",
				runtime.AnnotationPublish:    "[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp],... published without CNI",
			},
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "    ")
		return enc.Encode(f)
	},
}

// guestSeccomp is what the guest's runc (pinned v1.5.2, with libseccomp)
// supports on the guest's kernel (6.1, CONFIG_SECCOMP_FILTER): the
// values `runc features` prints for that runc on such a kernel. Callers
// (runc's own tests, containerd) pick seccomp flags from supportedFlags.
func guestSeccomp(yes *bool) *features.Seccomp {
	return &features.Seccomp{
		Enabled: yes,
		Actions: []string{"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
			"SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"},
		Operators: []string{"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"},
		// The guest runs one architecture; its compat ones as runc has them.
		Archs:          []string{"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"},
		KnownFlags:     []string{"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"},
		SupportedFlags: []string{"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"},
	}
}
