package agent

import (
	goruntime "runtime"

	"github.com/vishvananda/netns"
)

// inNetNSOf runs fn on a thread in the network namespace of pid: sockets
// it makes stay there. The thread is dropped, not reused, if it cannot be
// moved back.
func inNetNSOf(pid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPid(pid)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			goruntime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
