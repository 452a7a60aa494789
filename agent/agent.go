package agent

import (
	"context"
	"fmt"
	"os"
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
	runc.Monitor = reaper.Default
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
	l, err := listen()
	if err != nil {
		return err
	}
	svc.readyNs = uptime()
	return server.Serve(ctx, l)
}
