package runtime

import (
	"context"
	"encoding/json"

	"github.com/containerd/log"
)

// debugLogging says whether this process logs at debug level (--debug):
// the guest's runc then runs with --debug too.
func debugLogging() bool {
	return log.GetLevel() >= log.DebugLevel
}

// logGuestRunc puts the lines the guest's runc logged (its JSON log, as
// the agent returns them) into this process's log at their own levels, so
// `vzrun --debug` shows runc's debug lines and runc's warnings reach the
// caller as they would from runc itself.
func logGuestRunc(ctx context.Context, lines []string) {
	for _, line := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			continue
		}
		msg, _ := e["msg"].(string)
		level, _ := e["level"].(string)
		delete(e, "msg")
		delete(e, "level")
		delete(e, "time")
		entry := log.G(ctx).WithFields(log.Fields(e)).WithField("guest", "runc")
		switch level {
		case "debug", "trace":
			entry.Debug(msg)
		case "info":
			entry.Info(msg)
		case "warning", "warn":
			entry.Warn(msg)
		default:
			entry.Error(msg)
		}
	}
}
