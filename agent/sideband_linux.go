package agent

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// What the agent sends on its virtio-serial port is ttrpc's stream with,
// between two of its messages, sideband frames (api.SidebandFrame): a
// process's output asked for by a ReadStdio request with sideband_tag set,
// which the host takes apart in runtime/sideband.go. Only a host that sets
// sideband_tag gets sideband frames.
//
// A sideband frame is spliced from the process's pipe to the port: the
// pipe's pages go to the host as one virtqueue buffer with no copy in the
// guest. Inline, every byte costs a pipe read, two protobuf encodings
// (the response, then ttrpc's envelope) and a port write, which the driver
// cuts into 32 KiB buffers (drivers/char/virtio_console.c), each one a
// notification of the host: under TCG the guest's one vCPU was the limit.
// sidebandMax bounds one sideband frame: the process's pipe holds no more
// (setPipes).
const sidebandMax = readChunk

// sideband is the agent's virtio-serial channel; nil on vsock.
var sideband *fileConn

// fileConn makes a character device a net.Conn for ttrpc.
type fileConn struct {
	*os.File
	rc syscall.RawConn

	wmu sync.Mutex
	// idle is signalled when a ttrpc message has been written whole:
	// ttrpc may write one in several calls.
	idle *sync.Cond
	hdr  [api.TTRPCHeaderLen]byte
	hdrN int // bytes of the current message's header written
	left int // bytes of its payload still to write
	// broken: a sideband frame was cut short, the channel is lost.
	broken error
	// stage is the pipe a sideband frame is staged in (read, write end).
	stage [2]int
}

func newFileConn(f *os.File) (*fileConn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &fileConn{File: f, rc: rc}
	c.idle = sync.NewCond(&c.wmu)
	if err := unix.Pipe2(c.stage[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(c.stage[1]), unix.F_SETPIPE_SZ, sidebandMax); err != nil {
		return nil, err
	}
	return c, nil
}

// Write writes ttrpc's stream, following its messages' boundaries.
func (c *fileConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.broken != nil {
		return 0, c.broken
	}
	n, err := c.File.Write(b)
	for w := b[:n]; len(w) > 0; {
		if c.left > 0 {
			k := min(c.left, len(w))
			c.left -= k
			w = w[k:]
			continue
		}
		k := copy(c.hdr[c.hdrN:], w)
		c.hdrN += k
		w = w[k:]
		if c.hdrN == api.TTRPCHeaderLen {
			c.left = int(binary.BigEndian.Uint32(c.hdr[:4]))
			c.hdrN = 0
		}
	}
	if c.betweenMessages() {
		c.idle.Broadcast()
	}
	return n, err
}

func (c *fileConn) betweenMessages() bool { return c.hdrN == 0 && c.left == 0 }

// errNoSideband: the stream cannot be spliced; answer inline.
var errNoSideband = errors.New("no sideband for this stream")

// sendSideband waits until src (a pipe) has data, then splices what it
// holds, at most sidebandMax bytes, to the host in a sideband frame
// tagged tag. It returns how many bytes it sent, or eof once the pipe's
// writers are gone and it is drained.
//
// The data goes through a staging pipe (a pipe to pipe splice moves page
// references, no copy): the port's splice_write must be given all its
// source pipe holds. It sizes its scatterlist by the pipe's occupancy and
// the virtqueue walks the list to its end, so asking for fewer bytes than
// the pipe holds hands the device unset entries, and the 6.1 guest kernel
// oopses (NULL page in vring_map_one_sg). The process may be adding to its
// pipe at any time; the staging pipe holds exactly the frame.
func (c *fileConn) sendSideband(tag uint64, src *os.File) (n int, eof bool, err error) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return 0, false, errNoSideband
	}
	var serr error
	rerr := srcRC.Read(func(fd uintptr) bool {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		for !c.betweenMessages() && c.broken == nil {
			c.idle.Wait()
		}
		if c.broken != nil {
			serr = c.broken
			return true
		}
		m, err := unix.Splice(int(fd), nil, c.stage[1], nil, sidebandMax, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // wait until the pipe is readable
		case err != nil:
			serr = err
		case m == 0:
			eof = true
		default:
			n, serr = c.spliceStaged(tag, int(m))
		}
		return true
	})
	if rerr != nil {
		if errors.Is(rerr, os.ErrClosed) || errors.Is(rerr, io.EOF) {
			return 0, true, nil
		}
		return 0, false, rerr
	}
	return n, eof, serr
}

// spliceStaged sends the n bytes of the staging pipe as one sideband
// frame; c.wmu is held.
func (c *fileConn) spliceStaged(tag uint64, n int) (int, error) {
	var hdr [api.SidebandHeaderLen]byte
	api.PutSidebandHeader(&hdr, n, tag)
	if _, err := c.File.Write(hdr[:]); err != nil {
		c.broken = err
		return 0, err
	}
	for left := n; left > 0; {
		var m int64
		var serr error
		werr := c.rc.Write(func(pfd uintptr) bool {
			// left is all the staging pipe holds (see sendSideband).
			m, serr = unix.Splice(c.stage[0], nil, int(pfd), nil, left, unix.SPLICE_F_MOVE)
			return serr != unix.EAGAIN
		})
		if serr == nil {
			serr = werr
		}
		if serr == unix.EINTR {
			continue
		}
		if serr == nil && m == 0 {
			serr = errors.New("splice to the agent port moved nothing")
		}
		if serr != nil {
			// The host has a frame header without its data: the channel
			// is lost.
			c.broken = serr
			return 0, serr
		}
		left -= int(m)
	}
	return n, nil
}
