package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Where the file server cannot bind-mount a bound file on its own (the vz
// backend), shareFile links it into the state dir: the guest gets the
// file, never the directory it is in.
func TestShareFileByLink(t *testing.T) {
	ctx := context.Background()
	host := t.TempDir()
	rw, ro := filepath.Join(host, "rw"), filepath.Join(host, "ro")
	for _, f := range []string{rw, ro, filepath.Join(host, "secret")} {
		if err := os.WriteFile(f, []byte("host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("ro", filepath.Join(host, "ro-link")); err != nil {
		t.Fatal(err)
	}
	dir := &StateDir{Path: t.TempDir()}
	p := &containerVM{}
	for _, m := range []specs.Mount{
		{Destination: "/rw", Source: rw, Options: []string{"rbind", "rw"}},
		{Destination: "/ro", Source: filepath.Join(host, "ro-link"), Options: []string{"rbind", "ro"}},
	} {
		alone, err := p.shareFile(ctx, dir, m, m.Source, false)
		if err != nil || !alone {
			t.Fatalf("shareFile(%s) = %v, %v; want shared alone", m.Source, alone, err)
		}
	}
	if len(p.cfg.Shares) != 2 {
		t.Fatalf("shares %+v; want files and files-ro", p.cfg.Shares)
	}
	for i, want := range []struct {
		tag      string
		readOnly bool
		file     string
	}{{"files", false, rw}, {"files-ro", true, ro}} {
		s := p.cfg.Shares[i]
		if s.Tag != want.tag || s.ReadOnly != want.readOnly || s.Path != dir.File(want.tag) || len(s.Binds) != 0 {
			t.Errorf("share %d = %+v; want tag %s, read-only %v, in the state dir, no binds", i, s, want.tag, want.readOnly)
		}
		entries, err := os.ReadDir(s.Path)
		if err != nil || len(entries) != 1 || entries[0].Name() != "0" {
			t.Fatalf("%s holds %v (%v); want only the entry 0", s.Path, entries, err)
		}
		a, _ := os.Stat(filepath.Join(s.Path, "0"))
		b, _ := os.Stat(want.file)
		if !os.SameFile(a, b) {
			t.Errorf("%s/0 is not %s", s.Path, want.file)
		}
		if g := p.shares[i]; g.Tag != want.tag || g.Path != "0" || !g.IsFile {
			t.Errorf("guest share %d = %+v", i, g)
		}
	}
	// Writes go both ways, as through a bind mount.
	if err := os.WriteFile(filepath.Join(dir.File("files"), "0"), []byte("guest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(rw); string(b) != "guest\n" {
		t.Errorf("host file reads %q after a write through the share", b)
	}

	// A file on another file system cannot be linked: the caller falls
	// back to its directory, and no share is added.
	alone, err := p.shareFile(ctx, dir, specs.Mount{Destination: "/v", Source: "/proc/version"}, "/proc/version", false)
	if err != nil || alone {
		t.Errorf("shareFile(/proc/version) = %v, %v; want not alone, no error", alone, err)
	}
	if len(p.cfg.Shares) != 2 || len(p.shares) != 2 {
		t.Errorf("a failed link changed the shares: %+v", p.cfg.Shares)
	}
}

// Where the file server can (QEMU's), the entry is a placeholder the
// server bind-mounts the file over, read-only ones included.
func TestShareFileByMount(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := &StateDir{Path: t.TempDir()}
	p := &containerVM{}
	for _, opt := range []string{"rw", "ro"} {
		alone, err := p.shareFile(context.Background(), dir, specs.Mount{Destination: "/" + opt, Source: src, Options: []string{"bind", opt}}, src, true)
		if err != nil || !alone {
			t.Fatalf("shareFile = %v, %v", alone, err)
		}
	}
	if len(p.cfg.Shares) != 1 {
		t.Fatalf("shares %+v; want one", p.cfg.Shares)
	}
	s := p.cfg.Shares[0]
	want := []string{"0 " + src + " false", "1 " + src + " true"}
	for i, b := range s.Binds {
		if got := fmt.Sprintf("%s %s %v", b.Name, b.Source, b.ReadOnly); got != want[i] {
			t.Errorf("bind %d = %q; want %q", i, got, want[i])
		}
	}
	if s.Tag != "files" || s.ReadOnly || len(s.Binds) != 2 {
		t.Errorf("share %+v", s)
	}
	for _, name := range []string{"0", "1"} {
		fi, err := os.Stat(filepath.Join(s.Path, name))
		if err != nil || fi.Size() != 0 {
			t.Errorf("placeholder %s: %v, %v", name, fi, err)
		}
	}
}
