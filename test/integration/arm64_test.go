package integration

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "github.com/vzrun/vzrun/api/agent/v1"
)

// arm64Guest is the guest Apple silicon Macs boot (make guest-arm64): the
// kernel Image, its initramfs, and an arm64 busybox for the container.
type arm64Guest struct {
	kernel, initrd, busybox string
}

// requiresArm64Guest skips where the arm64 guest or qemu-system-aarch64 is
// missing, and fails under CI=true, like requiresVM.
func requiresArm64Guest(t *testing.T) arm64Guest {
	t.Helper()
	share := filepath.Join(repoRoot, "_output", "share", "vzrun")
	cache := os.Getenv("VZRUN_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "vzrun")
	}
	g := arm64Guest{
		kernel:  filepath.Join(share, "Image"),
		initrd:  filepath.Join(share, "initrd-arm64.img"),
		busybox: filepath.Join(cache, "busybox-arm64", "busybox"),
	}
	var missing []string
	for _, f := range []string{g.kernel, g.initrd, g.busybox} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f+" (make guest-arm64)")
		}
	}
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		missing = append(missing, "qemu-system-aarch64 (make deps-arm64)")
	}
	if len(missing) == 0 {
		return g
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but cannot boot the arm64 guest: missing %s", strings.Join(missing, ", "))
	}
	t.Skipf("cannot boot the arm64 guest: missing %s", strings.Join(missing, ", "))
	return g
}

// TestArm64Guest boots the arm64 guest — kernel, agent and static runc as
// Virtualization.framework boots them on a Mac — under qemu-system-aarch64
// -M virt with software emulation. The emulation is slow, so this is the
// one arm64 test; the rest of the suite covers the agent on x86_64.
func TestArm64Guest(t *testing.T) {
	g := requiresArm64Guest(t)

	// Through vzrun and the QEMU backend (virtio-mmio devices, virtio-fs
	// rootfs): echo in a container, run by the guest's runc.
	t.Run("run echo", func(t *testing.T) {
		v := newVZ(t)
		b := newBundle(t, "sh", "-c", "echo hello from arm64; uname -m; uname -r")
		// newBundle's busybox is the host's; every applet links to this file.
		bb, err := os.ReadFile(g.busybox)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.rootfs(), "bin", "busybox"), bb, 0o755); err != nil {
			t.Fatal(err)
		}
		// A cold boot each time, as on a Mac (the framework backend has no
		// templates), not a clone of a saved VM.
		b.annotate(t, "io.vzrun.template", "false")
		r := v.run("", "--kernel", g.kernel, "--initrd", g.initrd, "--accel", "tcg", "run", "--bundle", b.Dir, uniqueID(t))
		if r.code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		if len(lines) != 3 || lines[0] != "hello from arm64" || lines[1] != "aarch64" || !strings.HasSuffix(lines[2], "-vzrun") {
			t.Errorf("stdout %q, want hello from arm64, aarch64 and our kernel's release (stderr: %s)", r.stdout, r.stderr)
		}
	})

	// The Mac's devices are virtio-pci and its console is hvc0: the same
	// kernel finds them, and the agent greets on a virtio-pci port. (The
	// Mac's agent channel, vsock, needs /dev/vhost-vsock, which this host
	// lacks.)
	t.Run("virtio-pci and hvc0", func(t *testing.T) {
		dir := t.TempDir()
		console, sock := filepath.Join(dir, "console.log"), filepath.Join(dir, "agent.sock")
		cmd := exec.Command("qemu-system-aarch64", "-M", "virt,accel=tcg", "-cpu", "cortex-a72", "-m", "512M",
			"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
			"-kernel", g.kernel, "-initrd", g.initrd, "-append", "console=hvc0 panic=-1",
			"-chardev", "file,id=con,path="+console,
			"-chardev", "socket,id=agent,path="+sock+",server=on,wait=on",
			"-device", "virtio-serial-pci", "-device", "virtconsole,chardev=con",
			"-device", "virtserialport,chardev=agent,name="+api.PortName,
			"-device", "virtio-rng-pci")
		var qemuOut syncBuffer
		cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		var conn net.Conn
		for deadline := time.Now().Add(10 * time.Second); conn == nil; {
			c, err := net.Dial("unix", sock)
			if err == nil {
				conn = c
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no agent socket: %v\n%s", err, qemuOut.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		defer conn.Close()
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(60 * time.Second))
		hello := make([]byte, len(api.Hello))
		if _, err := io.ReadFull(conn, hello); err != nil || string(hello) != api.Hello {
			b, _ := os.ReadFile(console)
			t.Fatalf("greeting %q, %v; console:\n%s", hello, err, b)
		}
		t.Logf("agent greeted over virtio-pci %s after QEMU connected", time.Since(start).Round(time.Millisecond))
		b, _ := os.ReadFile(console)
		if !bytes.Contains(b, []byte("Run /init as init process")) {
			t.Errorf("hvc0 console has no boot messages:\n%s", b)
		}
	})
}
