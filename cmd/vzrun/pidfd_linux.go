package main

import (
	"fmt"
	"net"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/vzrun/vzrun/runtime"
)

// sendPidfd is --pidfd-socket: a pidfd of the container's pid goes to
// the socket, as runc sends its init's. The pid is the process that owns
// the VM, which passes the signals it gets on to the container.
func sendPidfd(c *cli.Context, r *runtime.Runtime, id string) error {
	path := c.String("pidfd-socket")
	if path == "" {
		return nil
	}
	st, err := r.State(c.Context, id)
	if err != nil {
		return err
	}
	// runc names the message after its init type; "standard" is a
	// container's init.
	return sendPidfdOf(path, st.Pid, "standard")
}

// sendPidfdOf sends a pidfd of pid to the unix socket at path, with msg.
func sendPidfdOf(path string, pid int, msg string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("--pidfd-socket: pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("--pidfd-socket: %w", err)
	}
	defer conn.Close()
	if _, _, err := conn.WriteMsgUnix([]byte(msg), unix.UnixRights(fd), nil); err != nil {
		return fmt.Errorf("--pidfd-socket: sending the pidfd: %w", err)
	}
	return nil
}
