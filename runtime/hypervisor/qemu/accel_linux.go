package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vzrun/vzrun/runtime/hypervisor"
)

// ChooseAccel picks the accelerator for our guest: kvm where /dev/kvm
// opens and a probe VM really boots our kernel and agent on it, else tcg.
// /dev/kvm alone proves nothing: a PVM host has one that only runs
// PVM-patched guests. The verdict is cached in cacheDir, keyed by the
// kernel, initrd, QEMU and host kernel, so the probe runs once.
func ChooseAccel(ctx context.Context, kernel, initrd, cacheDir string) (accel, why string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return hypervisor.AccelTCG, "no usable /dev/kvm"
	}
	f.Close()
	key := probeKey(kernel, initrd)
	cache := filepath.Join(cacheDir, "accel-"+key)
	if b, err := os.ReadFile(cache); err == nil {
		a, reason, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		if a == hypervisor.AccelKVM || a == hypervisor.AccelTCG {
			return a, reason + " (cached probe)"
		}
	}
	accel, why = hypervisor.AccelKVM, "probe VM booted on kvm"
	if err := probeKVM(ctx, kernel, initrd); err != nil {
		accel, why = hypervisor.AccelTCG, "kvm probe failed: "+firstLine(err.Error())
	}
	if err := os.MkdirAll(cacheDir, 0o755); err == nil {
		_ = os.WriteFile(cache, []byte(accel+" "+why+"\n"), 0o644)
		removeStaleVerdicts(cacheDir, cache)
	}
	return accel, why
}

// removeStaleVerdicts removes probe verdicts of other inputs (every
// rebuilt initrd makes a new one) untouched for a week.
func removeStaleVerdicts(cacheDir, keep string) {
	old, _ := filepath.Glob(filepath.Join(cacheDir, "accel-*"))
	for _, f := range old {
		if fi, err := os.Stat(f); err == nil && f != keep && time.Since(fi.ModTime()) > 7*24*time.Hour {
			_ = os.Remove(f)
		}
	}
}

func probeKVM(ctx context.Context, kernel, initrd string) error {
	dir, err := os.MkdirTemp("", "vzrun-kvm-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	v, err := New(hypervisor.Config{
		ID: "kvm-probe", StateDir: dir, Kernel: kernel, Initrd: initrd,
		CPUs: 1, MemoryMiB: 256, Accel: hypervisor.AccelKVM,
		ConsoleLog: filepath.Join(dir, "console.log"),
	})
	if err != nil {
		return err
	}
	// A guest that works on KVM is up in well under a second.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	defer v.Stop(context.WithoutCancel(ctx))
	return v.Start(ctx)
}

func probeKey(files ...string) string {
	h := sha256.New()
	qemu, _ := exec.LookPath(QEMUBinary)
	for _, f := range append(files, qemu) {
		fi, err := os.Stat(f)
		if err == nil {
			fmt.Fprintf(h, "%s %d %d\n", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	h.Write(u.Release[:])
	h.Write(u.Version[:])
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
