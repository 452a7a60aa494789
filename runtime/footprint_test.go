package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       procStat
		err        bool
	}{
		{"plain", "42 (qemu-system-x86) S 7 42 42 0 -1 4194560 100 0 0 0 250 120 0 0 20 0 4 0 1000 1234567 5000 18446744073709551615",
			procStat{comm: "qemu-system-x86", ppid: 7, utime: 250, stime: 120, rssPages: 5000}, false},
		{"comm with parens and spaces", "43 (a) b (c) R 1 43 43 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 6 7 8",
			procStat{comm: "a) b (c", ppid: 1, utime: 3, stime: 4, rssPages: 7}, false},
		{"zombie", "44 (x) Z 1 44 44 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0", procStat{}, true},
		{"truncated", "45 (x) S 1", procStat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat(1, tc.stat)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestVMProcesses starts stand-ins for a VMM and its helpers as children
// of the test, as the owner of a VM starts them, and one bystander.
func TestVMProcesses(t *testing.T) {
	stateDir, share, elsewhere := t.TempDir(), t.TempDir(), t.TempDir()
	start := func(dir string, args ...string) int {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
		// Measured once it runs: blocked reading its stdin, past exec.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			st, err := readProcStat(cmd.Process.Pid)
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); err == nil && st.rssPages > 0 && filepath.Base(exe) != filepath.Base(os.Args[0]) {
				break
			}
		}
		return cmd.Process.Pid
	}
	vmm := start(stateDir, "cat")
	fsd := start(share, "cat")
	helper := start(elsewhere, "sh", "-c", "read x", filepath.Join(stateDir, "helper.sock"))
	bystander := start(elsewhere, "cat")

	procs, err := vmProcesses(vmm, stateDir, []string{share})
	if err != nil {
		t.Fatal(err)
	}
	roles := map[int]string{}
	for _, p := range procs {
		roles[p.Pid] = p.Role
		if p.RSS == 0 {
			t.Errorf("%d (%s): RSS 0", p.Pid, p.Comm)
		}
	}
	want := map[int]string{vmm: RoleVMM, fsd: RoleFileServer, helper: RoleHelper}
	if len(procs) == 0 || procs[0].Pid != vmm {
		t.Errorf("the VMM is not listed first: %+v", procs)
	}
	for pid, role := range want {
		if roles[pid] != role {
			t.Errorf("pid %d: role %q, want %q (all: %+v)", pid, roles[pid], role, procs)
		}
	}
	if r, ok := roles[bystander]; ok {
		t.Errorf("bystander %d listed as %s", bystander, r)
	}
}

func TestVMProcessesAfterTheVMM(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	procs, err := vmProcesses(cmd.Process.Pid, t.TempDir(), nil)
	if err != nil || len(procs) != 0 {
		t.Errorf("an exited VMM: %+v, %v; want none", procs, err)
	}
}
