package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procComm and procPpid read a host process's name and parent.
func procComm(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	return strings.TrimSpace(string(b))
}

func procPpid(pid int) int {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// TestPsListsHostProcesses: `ps --format json` gives the container's host
// pids (the monitor that owns the VM, which is state's pid, QEMU and its
// file servers), as runc's gives its container's, and the table is the
// host's ps for those pids.
func TestPsListsHostProcesses(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations []string
		// fileServer serves the rootfs: a VM restored from a template
		// has QEMU's 9p proxy, a cold boot a virtiofsd.
		fileServer string
	}{
		{name: "default", fileServer: "virtfs-proxy-he"},
		{name: "cold-boot", annotations: []string{"io.vzrun.template", "false"}, fileServer: "virtiofsd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVZ(t)
			b := newBundle(t, "sh", "-c", "touch /tmp/up; while :; do sleep 1; done")
			if tc.annotations != nil {
				b.annotate(t, tc.annotations...)
			}
			testPs(t, v, b, tc.fileServer)
		})
	}
}

func testPs(t *testing.T, v *vz, b *bundle, fileServer string) {
	id := uniqueID(t)
	v.detach("run", "--detach", "--bundle", b.Dir, id)
	waitFor(t, 30*time.Second, func() bool { _, err := os.Stat(filepath.Join(b.rootfs(), "tmp", "up")); return err == nil })
	monitor := int(v.state(id)["pid"].(float64))

	var pids []int
	r := v.runOK("ps", "--format", "json", id)
	if err := json.Unmarshal([]byte(r.stdout), &pids); err != nil {
		t.Fatalf("ps --format json: %q: %v", r.stdout, err)
	}
	if len(pids) == 0 || pids[0] != monitor {
		t.Fatalf("ps --format json: %v, want the monitor %d first", pids, monitor)
	}
	comms := map[string]int{}
	for _, pid := range pids {
		comm := procComm(pid)
		if comm == "" {
			t.Errorf("pid %d of %v is not a host process", pid, pids)
			continue
		}
		comms[comm]++
		if pid != monitor && procPpid(pid) != monitor {
			t.Errorf("pid %d (%s) is not a child of the monitor %d", pid, comm, monitor)
		}
	}
	if comms["qemu-system-x86"] != 1 || comms["vzrun"] != 1 || comms[fileServer] != 1 || len(comms) != 3 {
		t.Errorf("ps --format json: want the monitor, one QEMU and one %s, got %v", fileServer, comms)
	}

	// The table: the host's ps -ef (runc's default), cut down to them.
	lines := strings.Split(strings.TrimSpace(v.runOK("ps", id).stdout), "\n")
	if f := strings.Fields(lines[0]); len(f) < 2 || f[1] != "PID" {
		t.Fatalf("ps: header %q, want ps -ef's", lines[0])
	}
	var listed []int
	for _, l := range lines[1:] {
		pid, _ := strconv.Atoi(strings.Fields(l)[1])
		listed = append(listed, pid)
	}
	slices.Sort(listed)
	want := slices.Sorted(slices.Values(pids))
	if !slices.Equal(listed, want) {
		t.Errorf("ps table lists %v, want %v:\n%s", listed, want, strings.Join(lines, "\n"))
	}
	// ps options after the id, as with runc.
	out := strings.Split(strings.TrimSpace(v.runOK("ps", id, "-o", "pid,comm").stdout), "\n")
	if !slices.Equal(strings.Fields(out[0]), []string{"PID", "COMMAND"}) || len(out) != 1+len(pids) ||
		!strings.Contains(strings.Join(out, "\n"), "qemu-system-x86") {
		t.Errorf("ps ID -o pid,comm: want a header and %d processes, got:\n%s", len(pids), strings.Join(out, "\n"))
	}

	v.runOK("kill", id, "KILL")
	waitFor(t, 30*time.Second, func() bool { return v.state(id)["status"] == "stopped" })
	// As runc: a stopped container has no processes, and that is no error.
	if got := strings.TrimSpace(v.runOK("ps", "--format", "json", id).stdout); got != "[]" {
		t.Errorf("ps --format json of a stopped container: %q, want []", got)
	}
	if out := strings.Split(strings.TrimSpace(v.runOK("ps", id).stdout), "\n"); len(out) != 1 || !strings.Contains(out[0], "PID") {
		t.Errorf("ps of a stopped container: want the header alone, got:\n%s", strings.Join(out, "\n"))
	}
	v.runOK("delete", id)
}
