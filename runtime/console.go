package runtime

import (
	"fmt"
	"net"
	"os"

	"github.com/containerd/console"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// newTerminal makes a pty for a detached container's terminal, as runc
// does for --console-socket: the master goes to the caller over the
// socket, the slave becomes this process's controlling terminal (so window
// size changes arrive as SIGWINCH) and carries the guest pty's bytes. The
// slave is raw: the guest's pty does the line discipline. size is the
// process's consoleSize, if any: as in runc, the pty starts with it, and
// it is what goes on to the guest's pty.
func newTerminal(socketPath string, size *specs.Box) (*os.File, error) {
	master, slavePath, err := console.NewPty()
	if err != nil {
		return nil, fmt.Errorf("allocating a pty: %w", err)
	}
	defer master.Close()
	if size != nil && size.Width != 0 && size.Height != 0 {
		if err := master.Resize(console.WinSize{Width: uint16(size.Width), Height: uint16(size.Height)}); err != nil {
			return nil, fmt.Errorf("sizing the pty: %w", err)
		}
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	// Raw before the master leaves: input the caller writes at once must
	// not be echoed (or translated) by this pty as well as the guest's.
	if c, err := console.ConsoleFromFile(slave); err == nil {
		_ = c.SetRaw()
	}
	// containerd/console's raw mode keeps output processing (OPOST), whose
	// ONLCR would turn the guest's "\r\n" into "\r\r\n": the bytes pass
	// as they are.
	_ = console.ClearONLCR(slave.Fd())
	if err := sendFile(socketPath, master.Name(), int(master.Fd())); err != nil {
		slave.Close()
		return nil, err
	}
	// Only a session leader without a terminal can do this; a foreground
	// vzrun exec keeps the caller's terminal and skips it.
	_ = unix.IoctlSetInt(int(slave.Fd()), unix.TIOCSCTTY, 0)
	return slave, nil
}

// sendFile passes fd over the unix socket at path, named name, the way
// runc hands a console master to its caller.
func sendFile(path, name string, fd int) error {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("connecting to console socket %s: %w", path, err)
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("console socket %s is not a unix socket", path)
	}
	if _, _, err := uc.WriteMsgUnix([]byte(name), unix.UnixRights(fd), nil); err != nil {
		return fmt.Errorf("sending the terminal over %s: %w", path, err)
	}
	return nil
}
