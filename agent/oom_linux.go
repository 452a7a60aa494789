package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// WaitOOM waits on the container's memory.events, which the kernel
// notifies (inotify IN_MODIFY) when a counter moves, until oom_kill passes
// req.After.
func (s *Service) WaitOOM(ctx context.Context, req *api.WaitOOMRequest) (_ *api.WaitOOMResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	c, err := s.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	path := filepath.Join("/sys/fs/cgroup/vzrun", c.id, "memory.events")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err != nil {
		return nil, fmt.Errorf("watching %s: %w", path, err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := oomKills(path)
		if err != nil {
			// The cgroup went with the container.
			return nil, fmt.Errorf("container %s: %v: %w", c.id, err, errdefs.ErrNotFound)
		}
		if n > req.After {
			return &api.WaitOOMResponse{OomKills: n}, nil
		}
		// Wake up now and then to notice a cancelled call.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 1000); err != nil && err != unix.EINTR {
			return nil, err
		}
		for {
			if _, err := unix.Read(fd, buf); err != nil {
				break
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// oomKills reads oom_kill from a memory.events file.
func oomKills(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, sc.Err()
}
