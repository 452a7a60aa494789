package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// Main runs the agent. As PID 1 it never returns: on a fatal error it
// reports on the console and powers the VM off, so the host sees the VMM
// exit and the reason in the console log.
func Main() {
	start := uptime()
	if err := run(start); err != nil {
		fmt.Fprintf(os.Stderr, "vz-agent: %v\n", err)
	}
	if os.Getpid() == 1 {
		_ = powerOff()
		select {}
	}
	os.Exit(1)
}

func run(start int64) error {
	ctx := context.Background()
	_ = log.SetFormat(log.TextFormat)
	if os.Getpid() == 1 {
		if err := setupGuest(); err != nil {
			return fmt.Errorf("setting up the guest: %w", err)
		}
	} else if err := reaper.SetSubreaper(1); err != nil {
		return err
	}

	if p, err := sealRunc(runcBinary); err == nil {
		runcCommand = p
	} else {
		log.G(ctx).WithError(err).Warn("running runc from " + runcBinary)
	}

	// Every child of the agent is reaped here; go-runc's commands wait
	// through the same monitor, as in containerd's runc shim.
	runc.Monitor = releasingMonitor{reaper.Default}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	exits := newExitTable()
	go exits.run(reaper.Default.Subscribe())
	go func() {
		for range sigs {
			if err := reaper.Reap(); err != nil {
				log.G(ctx).WithError(err).Warn("reaping")
			}
		}
	}()

	svc := NewService(exits, start)
	server, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	api.RegisterAgentService(server, svc)
	api.RegisterForwarderService(server, NewForwarder(svc))
	if templateBoot() {
		settleClock(ctx)
	}
	l, err := listen()
	if err != nil {
		return err
	}
	svc.readyNs = uptime()
	return server.Serve(ctx, l)
}

// releasingMonitor is containerd's reaper monitor, which also releases
// each command's process handle: os/exec keeps a pidfd for it that only a
// successful Wait closes, and here the reaper has reaped the process
// (PID 1 reaps every child) before that Wait, which fails: the agent kept
// a pidfd for every runc it ran (one per exec).
type releasingMonitor struct{ *reaper.Monitor }

func (m releasingMonitor) Wait(c *exec.Cmd, ec chan runc.Exit) (int, error) {
	status, err := m.Monitor.Wait(c, ec)
	_ = c.Process.Release()
	return status, err
}
