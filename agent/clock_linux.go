package agent

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/containerd/log"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// templateBoot says this guest boots to be saved as a VM template (the
// host puts api.TemplateBootArg on its command line).
func templateBoot() bool {
	b, err := os.ReadFile("/proc/cmdline")
	return err == nil && strings.Contains(" "+strings.TrimSpace(string(b))+" ", " "+api.TemplateBootArg+" ")
}

// settleClock waits, before the agent greets the host (which saves the VM
// then), for the x86 kernel to leave its early TSC clocksource for the
// calibrated one, ~1 s after boot: a template saved before that wakes
// every clone on tsc-early, to switch later inside the clone, calibrated
// against a clock the restore has moved. Bounded: a guest that never
// switches is saved as it is.
func settleClock(ctx context.Context) {
	const path = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		cs := strings.TrimSpace(string(b))
		if err != nil || cs != "tsc-early" {
			return
		}
		if time.Now().After(deadline) {
			log.G(ctx).Warnf("clocksource still %s: saving the template on it", cs)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
