package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Roles of a VM's host processes.
const (
	// RoleVMM is the hypervisor process (QEMU).
	RoleVMM = "vmm"
	// RoleFileServer serves one of the VM's shared directories
	// (virtiofsd, or QEMU's 9p proxy helper in a VM restored from a
	// template).
	RoleFileServer = "file-server"
	// RoleHelper is any other helper of the VM (it names the state dir).
	RoleHelper = "helper"
)

// HostProcess is one host process that makes up a container's VM, and what
// it costs the host. The guest's processes are not host processes: they
// live inside the VMM's memory and CPU time.
type HostProcess struct {
	Pid  int    `json:"pid"`
	Role string `json:"role"`
	// Comm is the process's name (/proc/PID/comm).
	Comm string `json:"comm"`
	// RSS is the resident set in bytes; PSS shares each page among the
	// processes that map it, so PSS adds up across processes and RSS does
	// not. PSS is 0 where /proc/PID/smaps_rollup cannot be read.
	RSS uint64 `json:"rss_bytes"`
	PSS uint64 `json:"pss_bytes"`
	// CPUSeconds is user plus system time.
	CPUSeconds float64 `json:"cpu_seconds"`
}

// HostProcesses lists the host processes of c's VM, the VMM first: the
// VMM, and the helpers started next to it (children of the same owner)
// that serve one of its shared directories (virtiofsd and the 9p proxy
// run chrooted into the directory they share) or name its state dir. It
// is empty once the VM has stopped. Without procfs it holds the VMM
// alone, with no figures.
func (c *Container) HostProcesses() ([]HostProcess, error) {
	if c.sb == nil {
		return nil, nil
	}
	vmm := c.sb.VM.Pid()
	if vmm <= 0 {
		return nil, nil
	}
	var shares []string
	if c.plan != nil {
		for _, s := range c.plan.cfg.Shares {
			shares = append(shares, filepath.Clean(s.Path))
		}
	}
	return vmProcesses(vmm, c.Dir.Path, shares)
}

// vmProcesses finds the VMM and its helpers (see HostProcesses) in /proc.
func vmProcesses(vmm int, stateDir string, shares []string) ([]HostProcess, error) {
	vst, err := readProcStat(vmm)
	if err != nil {
		if _, perr := os.Stat("/proc/self/stat"); perr != nil {
			// No procfs (macOS): the VMM is all there is to tell.
			return []HostProcess{{Pid: vmm, Role: RoleVMM}}, nil
		}
		// The VMM has exited: the VM has no host processes left.
		return nil, nil
	}
	out := []HostProcess{hostProcess(vmm, RoleVMM, vst)}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == vmm {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.ppid != vst.ppid {
			continue
		}
		role := ""
		if cwd, err := os.Readlink(filepath.Join(p, "cwd")); err == nil {
			for _, s := range shares {
				if cwd == s {
					role = RoleFileServer
				}
			}
		}
		if role == "" && ownsState(pid, stateDir) {
			role = RoleHelper
		}
		if role != "" {
			out = append(out, hostProcess(pid, role, st))
		}
	}
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].Pid < out[1+j].Pid })
	return out, nil
}

// ownedPids lists the owner of a VM, its VMM (vmm, 0 while the VM boots)
// and the VMM's helpers: the host processes of a container whose state
// dir names them. A vmm that is not the owner's child is a recycled pid
// and left out; one that is the owner runs the VM in process (macOS).
func ownedPids(owner, vmm int, stateDir string) []int {
	pids := []int{owner}
	if vmm <= 0 || vmm == owner {
		return pids
	}
	if st, err := readProcStat(vmm); err == nil && st.ppid != owner {
		return pids
	}
	procs, _ := vmProcesses(vmm, stateDir, nil)
	for _, p := range procs {
		pids = append(pids, p.Pid)
	}
	return pids
}

// ProcessFootprint reads what one host process costs, for processes that
// are not part of a VM (the shim that owns it).
func ProcessFootprint(pid int, role string) (HostProcess, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return HostProcess{}, err
	}
	return hostProcess(pid, role, st), nil
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicks = 100

func hostProcess(pid int, role string, st procStat) HostProcess {
	return HostProcess{
		Pid: pid, Role: role, Comm: st.comm,
		RSS: st.rssPages * uint64(os.Getpagesize()), PSS: readPSS(pid),
		CPUSeconds: float64(st.utime+st.stime) / clockTicks,
	}
}

type procStat struct {
	comm         string
	ppid         int
	utime, stime uint64
	rssPages     uint64
}

// readProcStat parses /proc/PID/stat; it fails for a zombie.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(pid, string(b))
}

func parseProcStat(pid int, s string) (procStat, error) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15, rss 24.
	f := strings.Fields(s[end+1:])
	if len(f) < 22 || f[0] == "Z" || f[0] == "X" {
		return procStat{}, fmt.Errorf("process %d is gone", pid)
	}
	st := procStat{comm: s[open+1 : end]}
	st.ppid, _ = strconv.Atoi(f[1])
	st.utime, _ = strconv.ParseUint(f[11], 10, 64)
	st.stime, _ = strconv.ParseUint(f[12], 10, 64)
	st.rssPages, _ = strconv.ParseUint(f[21], 10, 64)
	return st, nil
}

// readPSS reads the proportional set size from /proc/PID/smaps_rollup.
func readPSS(pid int) uint64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
