package hypervisor

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestKernelArch(t *testing.T) {
	elf := func(machine uint16) []byte {
		b := make([]byte, 64)
		copy(b, "\x7fELF\x02\x01")
		binary.LittleEndian.PutUint16(b[18:], machine)
		return b
	}
	image := make([]byte, 64)
	copy(image[0x38:], "ARM\x64")
	bz := make([]byte, 0x300)
	copy(bz[0x202:], "HdrS")
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"vmlinux x86_64", elf(62), ArchAMD64},
		{"vmlinux aarch64", elf(183), ArchARM64},
		{"arm64 Image", image, ArchARM64},
		{"bzImage", bz, ArchAMD64},
		{"riscv vmlinux", elf(243), ""},
		{"gzip", []byte("\x1f\x8b\x08\x00"), ""},
		{"empty", nil, ""},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := KernelArch(p)
			if tc.want == "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("KernelArch = %q, %v; want an invalid-argument error", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("KernelArch = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := KernelArch(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing kernel: %v, want not-exist", err)
	}
}
