package agent

import (
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
)

// exitTable routes the exits the subreaper sees to processes. An exit may
// arrive before the process is registered (a short-lived container exits
// before runc's pid file is read), so unclaimed exits are kept a while.
type exitTable struct {
	mu        sync.Mutex
	procs     map[int]*process
	unclaimed map[int]runc.Exit
}

func newExitTable() *exitTable {
	return &exitTable{procs: map[int]*process{}, unclaimed: map[int]runc.Exit{}}
}

// run consumes exits until the channel is closed.
func (t *exitTable) run(exits <-chan runc.Exit) {
	for e := range exits {
		t.mu.Lock()
		if p, ok := t.procs[e.Pid]; ok {
			delete(t.procs, e.Pid)
			t.mu.Unlock()
			p.setExited(e.Status, e.Timestamp)
			continue
		}
		// runc's own short-lived processes end up here too; drop old ones.
		for pid, u := range t.unclaimed {
			if time.Since(u.Timestamp) > time.Minute {
				delete(t.unclaimed, pid)
			}
		}
		t.unclaimed[e.Pid] = e
		t.mu.Unlock()
	}
}

// register ties pid to p, delivering an exit that already happened.
func (t *exitTable) register(pid int, p *process) {
	t.mu.Lock()
	e, ok := t.unclaimed[pid]
	if ok {
		delete(t.unclaimed, pid)
	} else {
		t.procs[pid] = p
	}
	t.mu.Unlock()
	if ok {
		p.setExited(e.Status, e.Timestamp)
	}
}
