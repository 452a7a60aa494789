package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// readChunk bounds one ReadStdio answer; pipes are grown to match so one
// read drains what the process wrote.
const readChunk = 1 << 20

// process is the init process or an exec'd process of a container.
type process struct {
	containerID, execID string

	mu      sync.Mutex
	pid     int
	io      runc.IO
	console console.Console
	stdin   io.WriteCloser
	stdout  io.Reader
	stderr  io.Reader
	readMu  [3]sync.Mutex
	started bool
	exited  chan struct{}

	// Set for an exec'd process until it starts.
	spec          *specs.Process
	wantStdin     bool
	consoleSocket *runc.Socket
	// clearONLCR: the host relays the terminal to its caller's own
	// terminal, which translates newlines (runc's foreground run -t).
	clearONLCR bool
	// debug runs the exec's runc with --debug.
	debug bool

	status   int
	exitedAt time.Time
	// pendingSize is a terminal size asked for before the terminal
	// exists (an exec's, before it starts).
	pendingSize *console.WinSize
}

func newProcess(containerID, execID string) *process {
	return &process{containerID: containerID, execID: execID, exited: make(chan struct{})}
}

// setPipes takes the process's stdio from go-runc's pipes.
func (p *process) setPipes(pio runc.IO) {
	p.io = pio
	p.stdin = pio.Stdin()
	p.stdout = pio.Stdout()
	p.stderr = pio.Stderr()
	for _, r := range []io.Reader{p.stdout, p.stderr} {
		if f, ok := r.(*os.File); ok {
			_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, readChunk)
		}
	}
}

// setConsole takes the process's stdio from its terminal, at the size
// asked for before it existed.
func (p *process) setConsole(c console.Console) {
	p.mu.Lock()
	p.console = c
	p.stdin = c
	p.stdout = c
	size := p.pendingSize
	p.pendingSize = nil
	p.mu.Unlock()
	if size != nil {
		_ = c.Resize(*size)
	}
}

func (p *process) setExited(status int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return
	default:
	}
	p.status = status
	p.exitedAt = at
	close(p.exited)
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// output is the agent's end of the process's stdout (fd 1) or stderr (2).
func (p *process) output(fd int) io.Reader {
	switch fd {
	case 1:
		return p.stdout
	case 2:
		return p.stderr
	}
	return nil
}

// read returns what the process wrote to fd (1 or 2), blocking until there
// is something; eof once the stream is closed.
func (p *process) read(fd int) (data []byte, eof bool, err error) {
	r := p.output(fd)
	if r == nil {
		return nil, true, nil
	}
	p.readMu[fd].Lock()
	defer p.readMu[fd].Unlock()
	buf := make([]byte, readChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			return buf[:n], false, nil
		}
		// A terminal's master reads EIO once the last slave is closed.
		if err == io.EOF || errors.Is(err, syscall.EIO) || errors.Is(err, os.ErrClosed) {
			if fd == 1 && p.console != nil && errors.Is(err, syscall.EIO) {
				// Nothing holds the terminal any more: free the pty
				// (each exec -t would leave one in /dev/pts).
				_ = p.console.Close()
			}
			return nil, true, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// readSideband is read for a host that takes the data in a sideband
// frame of the channel: it splices what the pipe holds to the host.
func (p *process) readSideband(fd int, tag uint64) (n int, eof bool, err error) {
	if fd == 1 && p.console != nil {
		return 0, false, errNoSideband
	}
	r := p.output(fd)
	if r == nil {
		return 0, true, nil
	}
	f, ok := r.(*os.File)
	if !ok {
		return 0, false, errNoSideband
	}
	p.readMu[fd].Lock()
	defer p.readMu[fd].Unlock()
	return sideband.sendSideband(tag, f)
}

// closeOutput closes the agent's end of the process's stdout or stderr:
// its next write there fails with EPIPE (a terminal's session is hung up).
// A read blocked on it returns end of file.
func (p *process) closeOutput(fd int) {
	if c, ok := p.output(fd).(io.Closer); ok {
		_ = c.Close()
	}
}

// closeIO releases the host-facing ends of the process's stdio.
func (p *process) closeIO() {
	if p.io != nil {
		_ = p.io.Close()
	}
	if p.console != nil {
		_ = p.console.Close()
	}
}

// hangUp hangs up a terminal as closing its master would (the session
// gets SIGHUP, reads end): through the slave (TIOCGPTPEER), since the
// master cannot be closed while the output relay reads it.
func hangUp(master console.Console) error {
	peer, _, errno := unix.Syscall(unix.SYS_IOCTL, master.Fd(), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		return fmt.Errorf("opening the terminal's slave: %w", errno)
	}
	defer unix.Close(int(peer))
	return unix.IoctlSetInt(int(peer), unix.TIOCVHANGUP, 0)
}

func consoleSize(width, height uint32) console.WinSize {
	return console.WinSize{Width: uint16(width), Height: uint16(height)}
}
