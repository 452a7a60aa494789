package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mdlayher/vsock"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// listen returns the agent's listener: the named virtio-serial port if the
// VM has one, else AF_VSOCK.
func listen() (net.Listener, error) {
	if dev, err := findPort(api.PortName); err == nil {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", dev, err)
		}
		if _, err := f.Write([]byte(api.Hello)); err != nil {
			return nil, fmt.Errorf("greeting the host on %s: %w", dev, err)
		}
		c, err := newFileConn(f)
		if err != nil {
			return nil, err
		}
		sideband = c
		return newOnceListener(c), nil
	}
	l, err := vsock.Listen(api.VsockPort, nil)
	if err != nil {
		return nil, fmt.Errorf("no virtio-serial port %q and no vsock: %w", api.PortName, err)
	}
	return l, nil
}

// findPort finds /dev/vportNpM by its name; the guest has no udev to make
// /dev/virtio-ports links.
func findPort(name string) (string, error) {
	ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, p := range ports {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(p)), nil
		}
	}
	return "", fmt.Errorf("no virtio port named %s", name)
}

type portAddr struct{}

func (portAddr) Network() string { return "virtio-serial" }
func (portAddr) String() string  { return api.PortName }

func (c *fileConn) LocalAddr() net.Addr                { return portAddr{} }
func (c *fileConn) RemoteAddr() net.Addr               { return portAddr{} }
func (c *fileConn) SetDeadline(t time.Time) error      { return nil }
func (c *fileConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fileConn) SetWriteDeadline(t time.Time) error { return nil }

// onceListener hands out one connection, then blocks until closed.
type onceListener struct {
	conns chan net.Conn
	done  chan struct{}
}

func newOnceListener(c net.Conn) *onceListener {
	l := &onceListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	l.conns <- c
	return l
}

func (l *onceListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *onceListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *onceListener) Addr() net.Addr { return portAddr{} }
