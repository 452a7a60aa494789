package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Container statuses, as the runtime spec names them, plus creating.
const (
	StatusCreating = "creating"
	StatusCreated  = "created"
	StatusRunning  = "running"
	StatusPaused   = "paused"
	StatusStopped  = "stopped"
)

// State is what vzrun keeps of a container in ROOT/ID/state.json.
type State struct {
	ID          string            `json:"id"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Status      string            `json:"status"`
	Pid         int               `json:"pid"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Accel       string            `json:"accel,omitempty"`
	// OwnerStart is the start time (clock ticks since boot) of the process
	// Pid, so a recycled pid is never taken for the owner.
	OwnerStart uint64 `json:"owner_start,omitempty"`
	// VMMPid is the hypervisor process, a child of the owner.
	VMMPid     int    `json:"vmm_pid,omitempty"`
	ExitStatus int    `json:"exit_status,omitempty"`
	Owner      string `json:"owner,omitempty"`
	// NetNS and NetIface name the interface of a network namespace that
	// outlives the container, redirected to the VM's tap until delete.
	NetNS    string `json:"netns,omitempty"`
	NetIface string `json:"net_iface,omitempty"`
	// NetIfaces are all the interfaces joined to the VM's NICs (NetIface
	// is the first).
	NetIfaces []string `json:"net_ifaces,omitempty"`
}

// alive says whether the owner recorded in st is still running.
func (st *State) alive() bool {
	if st.Pid <= 0 {
		return false
	}
	start, err := processStart(st.Pid)
	return err == nil && (st.OwnerStart == 0 || start == st.OwnerStart)
}

// processStart reads a process's start time from /proc/PID/stat; it fails
// for a zombie.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d is gone", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// StateDir is one container's directory under the root. Holding it means
// holding its flock: commands on one id are serialised.
type StateDir struct {
	Path string
	lock *os.File
}

// CreateStateDir makes ROOT/ID, failing if the container exists, and
// returns it locked.
func CreateStateDir(root, id string) (*StateDir, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fmt.Errorf("creating root %s: %w", root, err)
	}
	dir := filepath.Join(root, id)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("container %s already exists: %w", id, errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	d, err := lockDir(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// OpenStateDir locks the state of an existing container.
func OpenStateDir(root, id string) (*StateDir, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, id)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("container %s does not exist: %w", id, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return lockDir(dir)
}

func lockDir(dir string) (*StateDir, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking state: %w", err)
	}
	return &StateDir{Path: dir, lock: f}, nil
}

// lockDelete serialises deletes of one container: it holds a flock on
// the state directory itself (not its lock file, which the container's
// own commands take), until release.
func lockDelete(root, id string) (release func(), err error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	release, err = flockPath(filepath.Join(root, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container %s does not exist: %w", id, errdefs.ErrNotFound)
	}
	return release, err
}

// flockPath holds an exclusive flock on path, a file or a directory,
// until release.
func flockPath(path string) (release func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// File is the path of a file in the state dir.
func (d *StateDir) File(name string) string { return filepath.Join(d.Path, name) }

// Save writes the state atomically.
func (d *StateDir) Save(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := d.File("state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.File("state.json"))
}

// Load reads the state.
func (d *StateDir) Load() (*State, error) {
	b, err := os.ReadFile(d.File("state.json"))
	if err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", d.File("state.json"), err)
	}
	return &st, nil
}

// Update locks the directory, saves st and unlocks it again.
func (d *StateDir) Update(st *State) error {
	l, err := lockDir(d.Path)
	if err != nil {
		return err
	}
	defer l.Unlock()
	return l.Save(st)
}

// Unlock releases the lock; the directory stays.
func (d *StateDir) Unlock() {
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
}

// Remove deletes the directory (locking it first if it is not held) and
// releases the lock.
func (d *StateDir) Remove() error {
	if d.lock == nil {
		l, err := lockDir(d.Path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		d.lock = l.lock
	}
	err := os.RemoveAll(d.Path)
	d.Unlock()
	return err
}

// currentUser names the user for `vzrun list`.
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}
