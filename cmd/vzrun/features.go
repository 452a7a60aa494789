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
				Seccomp:    &features.Seccomp{Enabled: &yes},
			},
			Annotations: map[string]string{
				"io.vzrun.hypervisor":    "qemu microvm (linux), Virtualization.framework (macos)",
				runtime.AnnotationCPUs:   "vCPUs of the container's VM",
				runtime.AnnotationMemory: "memory of the container's VM, MiB",
				runtime.AnnotationRootfs: "virtiofs (default) or ext4",
			},
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "    ")
		return enc.Encode(f)
	},
}
