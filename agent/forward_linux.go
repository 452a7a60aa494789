package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/containerd/errdefs"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// Forwarder serves api.ForwarderService for the containers of s.
type Forwarder struct{ s *Service }

var _ api.ForwarderService = Forwarder{}

// NewForwarder relays TCP connections into the containers of s.
func NewForwarder(s *Service) Forwarder { return Forwarder{s} }

func (f Forwarder) Forward(ctx context.Context, srv api.Forwarder_ForwardServer) error {
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	c, err := f.s.container(first.ContainerId)
	if err != nil {
		return err
	}
	c.init.mu.Lock()
	pid := c.init.pid
	c.init.mu.Unlock()
	if pid <= 0 || first.Port == 0 || first.Port > 65535 {
		return fmt.Errorf("forwarding to %s port %d: %w", c.id, first.Port, errdefs.ErrInvalidArgument)
	}
	conn, err := dialIn(pid, int(first.Port))
	if err != nil {
		return fmt.Errorf("connecting to port %d of %s: %w", first.Port, c.id, err)
	}
	defer conn.Close()
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		if len(first.Data) > 0 {
			if _, err := conn.Write(first.Data); err != nil {
				return
			}
		}
		for {
			m, err := srv.Recv()
			if err != nil {
				_ = conn.CloseWrite()
				return
			}
			if len(m.Data) > 0 {
				if _, err := conn.Write(m.Data); err != nil {
					return
				}
			}
			if m.CloseWrite {
				_ = conn.CloseWrite()
				return
			}
		}
	}()
	buf := make([]byte, 256<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if err := srv.Send(&api.ForwardData{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			// Half-closed: the host may still be sending.
			if err := srv.Send(&api.ForwardData{CloseWrite: true}); err != nil {
				return err
			}
			select {
			case <-recvDone:
			case <-ctx.Done():
			}
			return nil
		}
		if err != nil {
			return nil
		}
	}
}

// dialIn connects to 127.0.0.1:port in the network namespace of pid; the
// socket stays in that namespace whatever thread uses it later.
func dialIn(pid, port int) (c *net.TCPConn, err error) {
	err = inNetNSOf(pid, func() error {
		conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c = conn.(*net.TCPConn)
		}
		return err
	})
	return c, err
}
