package runtime

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// AnnotationPublish publishes container ports on the host without a CNI
// network: a comma-separated list of [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp].
// The process that owns the VM listens on the host and relays each
// connection to the container's port through the agent (over the agent
// channel: vsock on macOS, virtio-serial here), so it works wherever the
// host cannot route to the guest.
const AnnotationPublish = "io.vzrun.publish"

type portMapping struct {
	hostIP        string
	hostPort      int
	containerPort int
}

func (m portMapping) String() string {
	return fmt.Sprintf("%s:%d->%d/tcp", m.hostIP, m.hostPort, m.containerPort)
}

// parsePublish reads the io.vzrun.publish annotation.
func parsePublish(s string) ([]portMapping, error) {
	var out []portMapping
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("annotation %s: %q: %s: %w", AnnotationPublish, item, why, errdefs.ErrInvalidArgument)
		}
		spec, proto, _ := strings.Cut(item, "/")
		if proto != "" && proto != "tcp" {
			return nil, bad("only tcp is published")
		}
		m := portMapping{hostIP: "0.0.0.0"}
		parts := strings.Split(spec, ":")
		if len(parts) == 3 {
			m.hostIP, parts = parts[0], parts[1:]
			if net.ParseIP(m.hostIP) == nil {
				return nil, bad("host address is not an IP")
			}
		}
		if len(parts) != 2 {
			return nil, bad("want [HOST_IP:]HOST_PORT:CONTAINER_PORT")
		}
		var err error
		if m.hostPort, err = strconv.Atoi(parts[0]); err != nil || m.hostPort < 1 || m.hostPort > 65535 {
			return nil, bad("host port")
		}
		if m.containerPort, err = strconv.Atoi(parts[1]); err != nil || m.containerPort < 1 || m.containerPort > 65535 {
			return nil, bad("container port")
		}
		out = append(out, m)
	}
	return out, nil
}

// publish listens on the host ports the spec publishes, for as long as the
// container's VM runs.
func (c *Container) publish(ctx context.Context) error {
	maps, err := parsePublish(c.Spec.Annotations[AnnotationPublish])
	if err != nil || len(maps) == 0 {
		return err
	}
	fwd := api.NewForwarderClient(c.sb.client)
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.stopPublishing = cancel
	for _, m := range maps {
		l, err := listenOnHost(net.JoinHostPort(m.hostIP, strconv.Itoa(m.hostPort)))
		if err != nil {
			cancel()
			return fmt.Errorf("publishing %s: %w", m, err)
		}
		context.AfterFunc(fctx, func() { l.Close() })
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				go c.relayPort(fctx, fwd, conn.(*net.TCPConn), m)
			}
		}()
		log.G(ctx).WithField("id", c.ID).Debugf("publishing %s", m)
	}
	return nil
}

// relayPort carries one host connection to the container's port and back.
func (c *Container) relayPort(ctx context.Context, fwd api.ForwarderClient, conn *net.TCPConn, m portMapping) {
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	context.AfterFunc(ctx, func() { conn.Close() })
	stream, err := fwd.Forward(ctx)
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", c.ID).Warnf("forwarding %s", m)
		return
	}
	if err := stream.Send(&api.ForwardData{ContainerId: c.ID, Port: uint32(m.containerPort)}); err != nil {
		return
	}
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if stream.Send(&api.ForwardData{Data: buf[:n]}) != nil {
					return
				}
			}
			if err != nil {
				_ = stream.Send(&api.ForwardData{CloseWrite: true})
				return
			}
		}
	}()
	for {
		d, err := stream.Recv()
		if err != nil {
			return
		}
		if len(d.Data) > 0 {
			if _, err := conn.Write(d.Data); err != nil {
				return
			}
		}
		if d.CloseWrite {
			_ = conn.CloseWrite()
		}
	}
}
