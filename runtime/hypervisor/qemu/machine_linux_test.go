package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vzrun/vzrun/runtime/hypervisor"
)

func TestGuestMachine(t *testing.T) {
	dir := t.TempDir()
	image := make([]byte, 64)
	copy(image[0x38:], "ARM\x64")
	elf := make([]byte, 64)
	copy(elf, "\x7fELF\x02\x01")
	elf[18] = 62
	tests := []struct {
		name, accel string
		kernel      []byte
		wantBinary  string
		wantArgs    []string
		wantErr     bool
	}{
		{"x86_64 vmlinux", "tcg", elf, QEMUBinary, []string{"microvm,memory-backend=mem", "-accel tcg", "console=ttyS0"}, false},
		{"unknown kernel stays x86_64", "tcg", []byte("?"), QEMUBinary, []string{"microvm,", "-accel tcg"}, false},
		{"arm64 Image", "tcg", image, QEMUBinaryARM64, []string{"virt,memory-backend=mem", "-accel tcg", "cortex-a72", "console=ttyAMA0"}, false},
		{"arm64 Image on kvm", "kvm", image, "", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kernel := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(kernel, tc.kernel, 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := hypervisor.Config{ID: "t", StateDir: dir, Kernel: kernel, Initrd: kernel, CPUs: 1, MemoryMiB: 128, Accel: tc.accel, ConsoleLog: filepath.Join(dir, "console.log")}
			g, err := guestFor(cfg)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("guestFor = %+v, want an error", g)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.binary != tc.wantBinary {
				t.Errorf("binary %s, want %s", g.binary, tc.wantBinary)
			}
			argv, err := (&vm{cfg: cfg, accel: tc.accel, guest: g}).args()
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Join(argv, " ")
			for _, want := range tc.wantArgs {
				if !strings.Contains(args, want) {
					t.Errorf("args lack %q: %s", want, args)
				}
			}
		})
	}
}
