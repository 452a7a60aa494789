package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runHooks runs host-side OCI hooks in order, each with the container's
// state on stdin; the first failure stops them.
//
// Where hooks run: prestart, createRuntime, poststart and poststop run on
// the host (they set up what the VM is attached to: networks, devices);
// createContainer and startContainer run in the container's namespaces,
// which are in the guest, so runc runs them there.
func runHooks(ctx context.Context, kind string, hooks []specs.Hook, st *specs.State) error {
	if len(hooks) == 0 {
		return nil
	}
	state, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for i, h := range hooks {
		hctx := ctx
		if h.Timeout != nil && *h.Timeout > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
			defer cancel()
		}
		cmd := exec.CommandContext(hctx, h.Path)
		if len(h.Args) > 0 {
			cmd.Args = h.Args
		}
		cmd.Env = h.Env
		cmd.Stdin = bytes.NewReader(state)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := startOnHost(cmd)
		if err == nil {
			err = cmd.Wait()
		}
		if err != nil && h.Timeout != nil && errors.Is(hctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("error running %s hook #%d: %s: hook ran past specified timeout of %.1fs", kind, i, h.Path, float64(*h.Timeout))
		}
		if err != nil {
			// Worded as runc words it: callers and tests match on it.
			return fmt.Errorf("error running %s hook #%d: %s: %w, stdout: %s, stderr: %s", kind, i, h.Path, err,
				strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
		}
	}
	return nil
}

// specState is the runtime-spec state handed to hooks.
func specState(st *State, status string) *specs.State {
	s := &specs.State{Version: specs.Version, ID: st.ID, Status: specs.ContainerState(status),
		Pid: st.Pid, Bundle: st.Bundle, Annotations: st.Annotations}
	// As runc: a stopped container has no pid (poststop hooks get none).
	if status == StatusStopped {
		s.Pid = 0
	}
	return s
}
