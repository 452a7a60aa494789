package vz

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vzrun/vzrun/runtime/hypervisor"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "Image")
	b := make([]byte, 64)
	copy(b[0x38:], "ARM\x64")
	if err := os.WriteFile(image, b, 0o644); err != nil {
		t.Fatal(err)
	}
	good := func() hypervisor.Config {
		return hypervisor.Config{ID: "c1", StateDir: dir, Kernel: image, Initrd: image, CPUs: 2, MemoryMiB: 512,
			NICs: []hypervisor.NIC{{MAC: net.HardwareAddr{0x02, 1, 2, 3, 4, 5}}}}
	}
	tests := []struct {
		name   string
		host   string
		mutate func(*hypervisor.Config)
		ok     bool
	}{
		{"arm64 guest on Apple silicon", "arm64", func(*hypervisor.Config) {}, true},
		{"hvf asked for", "arm64", func(c *hypervisor.Config) { c.Accel = hypervisor.AccelHVF }, true},
		{"tcg asked for", "arm64", func(c *hypervisor.Config) { c.Accel = hypervisor.AccelTCG }, false},
		{"arm64 guest on an Intel Mac", "amd64", func(*hypervisor.Config) {}, false},
		{"tap device", "arm64", func(c *hypervisor.Config) { c.NICs[0].Tap = os.Stdin }, false},
		{"restorable", "arm64", func(c *hypervisor.Config) { c.Restorable = true }, false},
		{"invalid config", "arm64", func(c *hypervisor.Config) { c.CPUs = 0 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mutate(&c)
			err := checkConfig(c, tc.host)
			if (err == nil) != tc.ok {
				t.Fatalf("checkConfig = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errdefs.ErrNotImplemented) {
				t.Errorf("error %v is neither an invalid argument nor not implemented", err)
			}
		})
	}
}

func TestKernelCmdline(t *testing.T) {
	got := kernelCmdline(hypervisor.Config{KernelArgs: []string{"vzrun.debug=1"}})
	if got != "console=hvc0 quiet panic=-1 vzrun.debug=1" {
		t.Errorf("cmdline %q", got)
	}
}

func TestConsoleTail(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "console.log")
	if consoleTail(p) != "" {
		t.Error("a missing log has a tail")
	}
	var lines []string
	for i := range 15 {
		lines = append(lines, strings.Repeat("x", i))
	}
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\r\n")+"\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tail := consoleTail(p)
	if strings.Contains(tail, "\r") || strings.Count(tail, "\n") != 11 || !strings.HasSuffix(tail, strings.Repeat("x", 14)) {
		t.Errorf("tail %q", tail)
	}
}
