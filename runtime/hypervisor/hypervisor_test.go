package hypervisor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("k"), 0o644)
	good := func() Config {
		return Config{ID: "x", StateDir: dir, Kernel: kernel, Initrd: kernel, CPUs: 1, MemoryMiB: 128,
			Shares: []Share{{Tag: "rootfs", Path: dir}}}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"good", func(*Config) {}, true},
		{"no id", func(c *Config) { c.ID = "" }, false},
		{"missing kernel", func(c *Config) { c.Kernel = "/nonexistent" }, false},
		{"zero cpus", func(c *Config) { c.CPUs = 0 }, false},
		{"tiny memory", func(c *Config) { c.MemoryMiB = 32 }, false},
		{"bad tag", func(c *Config) { c.Shares[0].Tag = "has space" }, false},
		{"share is a file", func(c *Config) { c.Shares[0].Path = kernel }, false},
		{"bad accel", func(c *Config) { c.Accel = "xen" }, false},
		{"disk", func(c *Config) { c.Disks = []Disk{{Path: kernel, Serial: "rootfs"}} }, true},
		{"missing disk", func(c *Config) { c.Disks = []Disk{{Path: "/nonexistent", Serial: "rootfs"}} }, false},
		{"file bind", func(c *Config) { c.Shares[0].Binds = []Bind{{Name: "vmlinux", Source: "/etc/hostname"}} }, true},
		{"bind name with a slash", func(c *Config) { c.Shares[0].Binds = []Bind{{Name: "../vmlinux", Source: "/etc/hostname"}} }, false},
		{"bind of a directory", func(c *Config) { c.Shares[0].Binds = []Bind{{Name: "vmlinux", Source: "/etc"}} }, false},
		{"bind of a relative path", func(c *Config) { c.Shares[0].Binds = []Bind{{Name: "vmlinux", Source: "vmlinux"}} }, false},
		{"bind without its entry", func(c *Config) { c.Shares[0].Binds = []Bind{{Name: "nothing", Source: "/etc/hostname"}} }, false},
		{"missing bind source", func(c *Config) { c.Shares[0].Binds = []Bind{{Name: "vmlinux", Source: "/nonexistent"}} }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mutate(&c)
			err := c.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("error %v is neither invalid argument nor not-exist", err)
			}
		})
	}
}
