package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// framedConn reads the agent's channel: ttrpc's messages go to ttrpc,
// sideband frames between them (a process's output spliced to the port,
// agent/sideband_linux.go) are kept for the ReadStdio call whose tag they
// carry, which finds them when its response, behind them, arrives. An
// agent that knows no sideband answers inline. Writes are plain ttrpc.
type framedConn struct {
	net.Conn
	br   *bufio.Reader
	left int // bytes of the current ttrpc message not yet read

	mu      sync.Mutex
	nextTag uint64
	waiting map[uint64]bool   // tags of ReadStdio calls under way
	pending map[uint64][]byte // their data, once it came
}

// maxSideband bounds a sideband frame the host accepts (the agent sends at
// most a pipe's worth).
const maxSideband = 64 << 20

func newFramedConn(c net.Conn) *framedConn {
	return &framedConn{Conn: c, br: bufio.NewReaderSize(c, 64<<10), pending: map[uint64][]byte{}, waiting: map[uint64]bool{}}
}

// Read is called by ttrpc's receiver alone.
func (c *framedConn) Read(p []byte) (int, error) {
	for c.left == 0 {
		kind, err := c.br.Peek(1)
		if err != nil {
			return 0, err
		}
		if kind[0] != api.SidebandFrame {
			h, err := c.br.Peek(api.TTRPCHeaderLen)
			if err != nil {
				return 0, err
			}
			c.left = api.TTRPCHeaderLen + int(binary.BigEndian.Uint32(h[:4]))
			break
		}
		var hdr [api.SidebandHeaderLen]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return 0, err
		}
		n, tag := api.ParseSidebandHeader(&hdr)
		if n > maxSideband {
			return 0, fmt.Errorf("agent channel: sideband frame of %d bytes", n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return 0, err
		}
		c.mu.Lock()
		if c.waiting[tag] {
			c.pending[tag] = data
		}
		c.mu.Unlock()
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= n
	return n, err
}

func (c *framedConn) tag() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextTag++
	c.waiting[c.nextTag] = true
	return c.nextTag
}

func (c *framedConn) take(tag uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	data := c.pending[tag]
	delete(c.pending, tag)
	delete(c.waiting, tag)
	return data
}

// sidebandAgent asks the agent for output as sideband frames and hands it
// to its callers in the response's data, as an agent answering inline.
type sidebandAgent struct {
	api.AgentService
	conn *framedConn
}

func (a *sidebandAgent) ReadStdio(ctx context.Context, req *api.ReadStdioRequest) (*api.ReadStdioResponse, error) {
	tag := a.conn.tag()
	resp, err := a.AgentService.ReadStdio(ctx, &api.ReadStdioRequest{ContainerId: req.ContainerId, ExecId: req.ExecId, Fd: req.Fd, SidebandTag: tag})
	data := a.conn.take(tag)
	if err != nil {
		return nil, err
	}
	if resp.SidebandLen > 0 {
		if len(data) != int(resp.SidebandLen) {
			return nil, fmt.Errorf("agent channel: sideband frame %d has %d bytes, the response says %d", tag, len(data), resp.SidebandLen)
		}
		resp.Data, resp.SidebandLen = data, 0
	}
	return resp, nil
}
