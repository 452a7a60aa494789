//go:build linux

package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSyncExt4BackKeepsWhatRdumpSkips packs a tree with mkfs.ext4 -d, as
// the ext4 rootfs mode does, and syncs the image back over the tree: FIFOs,
// device nodes, hard links and extended attributes (a file capability, a
// user attribute) must survive the round trip, and a change made in the
// image (a file removed, one added) must reach the tree.
func TestSyncExt4BackKeepsWhatRdumpSkips(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mknod and security.capability")
	}
	ctx := context.Background()
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(rootfs, "usr/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(rootfs, "dev"), 0o755))
	must(os.WriteFile(filepath.Join(rootfs, "usr/bin/ping"), []byte("ping"), 0o755))
	// cap_net_raw+ep, as Debian ships ping.
	capability := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(unix.Setxattr(filepath.Join(rootfs, "usr/bin/ping"), "security.capability", capability, 0))
	must(unix.Setxattr(filepath.Join(rootfs, "usr/bin"), "user.dir", []byte("d"), 0))
	must(os.Link(filepath.Join(rootfs, "usr/bin/ping"), filepath.Join(rootfs, "ping-link")))
	must(unix.Mkfifo(filepath.Join(rootfs, "dev/initctl"), 0o600))
	must(unix.Mknod(filepath.Join(rootfs, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(rootfs, "dev/loop9"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9))))
	must(os.Chown(filepath.Join(rootfs, "dev/loop9"), 0, 6))
	// mknod applied the umask.
	must(os.Chmod(filepath.Join(rootfs, "dev/null"), 0o666))
	must(os.Chmod(filepath.Join(rootfs, "dev/loop9"), 0o660))
	must(os.WriteFile(filepath.Join(rootfs, "gone"), []byte("x"), 0o644))
	// Special mode bits, which a chown clears, and a symlink's owner.
	must(os.WriteFile(filepath.Join(rootfs, "usr/bin/su"), []byte("su"), 0o755))
	must(os.Chown(filepath.Join(rootfs, "usr/bin/su"), 0, 42))
	must(unix.Chmod(filepath.Join(rootfs, "usr/bin/su"), 0o6755))
	must(os.MkdirAll(filepath.Join(rootfs, "tmp"), 0o755))
	must(unix.Chmod(filepath.Join(rootfs, "tmp"), 0o1777))
	must(os.MkdirAll(filepath.Join(rootfs, "var/mail"), 0o755))
	must(os.Chown(filepath.Join(rootfs, "var/mail"), 0, 8))
	must(unix.Chmod(filepath.Join(rootfs, "var/mail"), 0o2775))
	must(os.Symlink("su", filepath.Join(rootfs, "usr/bin/su-link")))
	// A name with a newline (debugfs lists it on two lines), and a hard
	// link beside it that must stay one.
	must(os.WriteFile(filepath.Join(rootfs, "new\nline"), []byte("nl"), 0o644))
	must(os.Link(filepath.Join(rootfs, "new\nline"), filepath.Join(rootfs, "nl-link")))
	must(os.Lchown(filepath.Join(rootfs, "usr/bin/su-link"), 65534, 65534))
	// A sparse file: 64 MiB with one block of data at 16 MiB.
	sparse, err := os.Create(filepath.Join(rootfs, "sparse"))
	must(err)
	_, err = sparse.WriteAt([]byte("data"), 16<<20)
	must(err)
	must(sparse.Truncate(64 << 20))
	must(sparse.Close())
	// A file capability on a file with holes survives the punching.
	must(unix.Setxattr(filepath.Join(rootfs, "sparse"), "security.capability", capability, 0))

	img := filepath.Join(bundle, "rootfs.ext4")
	// The sync compares times in whole seconds: the tree is older than
	// the packing by more than one.
	time.Sleep(1100 * time.Millisecond)
	must(markPacking(img, rootfs))
	must(makeExt4(ctx, rootfs, img, "32"))
	// Made on the host while the container runs: kept by the sync.
	must(os.WriteFile(filepath.Join(rootfs, "added-later"), []byte("host"), 0o644))
	must(os.WriteFile(filepath.Join(rootfs, "usr/bin/added-later"), []byte("host"), 0o644))
	must(os.MkdirAll(filepath.Join(rootfs, "later-dir/sub"), 0o755))
	// What the container did: one file removed, one added (debugfs's own
	// writes stand in for the guest's).
	if out, err := execOutput(ctx, "debugfs", "-w", "-R", "rm /gone", img); err != nil {
		t.Fatalf("debugfs rm: %v: %s", err, out)
	}
	newFile := filepath.Join(t.TempDir(), "new")
	must(os.WriteFile(newFile, []byte("new"), 0o644))
	if out, err := execOutput(ctx, "debugfs", "-w", "-R", "write "+newFile+" new", img); err != nil {
		t.Fatalf("debugfs write: %v: %s", err, out)
	}

	// Times with nanoseconds (mkfs -d keeps whole seconds): a file's, a
	// symlink's and that of a directory the sync adds entries to.
	times := map[string]string{"usr/bin/su": "0x5f5e1000", "usr/bin/su-link": "0x5f5e1001", "dev": "0x5f5e1002"}
	for path, sec := range times {
		for _, c := range []string{"sif /" + path + " mtime " + sec, "sif /" + path + " mtime_extra " + fmt.Sprint(123456789<<2), "sif /" + path + " atime " + sec} {
			if out, err := execOutput(ctx, "debugfs", "-w", "-R", c, img); err != nil {
				t.Fatalf("debugfs %s: %v: %s", c, err, out)
			}
		}
	}

	must(syncExt4Back(ctx, img, rootfs))

	if _, err := os.Lstat(filepath.Join(rootfs, "gone")); !os.IsNotExist(err) {
		t.Errorf("a file removed in the image is still in the rootfs: %v", err)
	}
	for _, p := range []string{"added-later", "usr/bin/added-later", "later-dir/sub"} {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); err != nil {
			t.Errorf("%s, made on the host after the packing, is gone: %v", p, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "new")); err != nil || string(b) != "new" {
		t.Errorf("a file added in the image: %q, %v", b, err)
	}
	for _, c := range []struct {
		path string
		typ  uint32
		mode uint32
		rdev uint64
		gid  uint32
	}{
		{"dev/initctl", unix.S_IFIFO, 0o600, 0, 0},
		{"dev/null", unix.S_IFCHR, 0o666, unix.Mkdev(1, 3), 0},
		{"dev/loop9", unix.S_IFBLK, 0o660, unix.Mkdev(7, 9), 6},
		{"usr/bin/su", unix.S_IFREG, 0o6755, 0, 42},
		{"tmp", unix.S_IFDIR, 0o1777, 0, 0},
		{"var/mail", unix.S_IFDIR, 0o2775, 0, 8},
	} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(rootfs, c.path), &st); err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if st.Mode&unix.S_IFMT != c.typ || st.Mode&0o7777 != c.mode || st.Rdev != c.rdev || st.Gid != c.gid {
			t.Errorf("%s: mode %o rdev %d:%d gid %d, want %o %d:%d gid %d", c.path, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Gid,
				c.typ|c.mode, unix.Major(c.rdev), unix.Minor(c.rdev), c.gid)
		}
	}
	var nl, nlLink unix.Stat_t
	must(unix.Stat(filepath.Join(rootfs, "new\nline"), &nl))
	must(unix.Stat(filepath.Join(rootfs, "nl-link"), &nlLink))
	if nl.Ino != nlLink.Ino {
		t.Errorf("hard link of a name with a newline: inodes %d and %d", nl.Ino, nlLink.Ino)
	}
	var link unix.Stat_t
	must(unix.Lstat(filepath.Join(rootfs, "usr/bin/su-link"), &link))
	if link.Uid != 65534 || link.Gid != 65534 {
		t.Errorf("symlink owned by %d:%d, want 65534:65534", link.Uid, link.Gid)
	}
	var a, b unix.Stat_t
	must(unix.Stat(filepath.Join(rootfs, "usr/bin/ping"), &a))
	must(unix.Stat(filepath.Join(rootfs, "ping-link"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d and %d, %d links; want one inode, 2 links", a.Ino, b.Ino, a.Nlink)
	}
	for _, x := range []struct{ path, name, want string }{
		{"usr/bin/ping", "security.capability", string(capability)},
		{"usr/bin", "user.dir", "d"},
	} {
		buf := make([]byte, 256)
		n, err := unix.Getxattr(filepath.Join(rootfs, x.path), x.name, buf)
		if err != nil || !bytes.Equal(buf[:n], []byte(x.want)) {
			t.Errorf("%s of %s: %q, %v; want %q", x.name, x.path, buf[:max(n, 0)], err, x.want)
		}
	}
	var sp unix.Stat_t
	must(unix.Stat(filepath.Join(rootfs, "sparse"), &sp))
	if sp.Size != 64<<20 || sp.Blocks*512 > 1<<20 {
		t.Errorf("sparse file: size %d, %d bytes allocated; want 64 MiB, at most 1 MiB allocated", sp.Size, sp.Blocks*512)
	}
	if n, err := unix.Getxattr(filepath.Join(rootfs, "sparse"), "security.capability", make([]byte, 64)); err != nil || n != len(capability) {
		t.Errorf("sparse file's capability: %d bytes, %v", n, err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "sparse")); err != nil || string(b[16<<20:16<<20+4]) != "data" || bytes.Count(b, []byte{0}) != len(b)-4 {
		t.Errorf("sparse file's content changed (%v)", err)
	}
	for path, sec := range times {
		var st unix.Stat_t
		must(unix.Lstat(filepath.Join(rootfs, path), &st))
		want, _ := strconv.ParseInt(sec, 0, 64)
		if st.Mtim.Sec != want || st.Mtim.Nsec != 123456789 || st.Atim.Sec != want {
			t.Errorf("%s: mtime %d.%09d atime %d, want %d.123456789 and %d", path, st.Mtim.Sec, st.Mtim.Nsec, st.Atim.Sec, want, want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(bundle, ".vzrun-sync-*")); len(left) > 0 {
		t.Errorf("sync left %v behind", left)
	}
}

func execOutput(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// TestExtentHoles reads debugfs dump_extents -l output (from a file
// fallocated on a 1 KiB-block image, one 4 KiB block written into it):
// uninitialised extents are holes as much as unmapped ranges are.
func TestExtentHoles(t *testing.T) {
	out := []string{
		"Level Entries       Logical      Physical Length Flags",
		" 0/ 0   1/  3     0 -   399 32769 - 33168    400 Uninit",
		" 0/ 0   2/  3   400 -   403 33169 - 33172      4 ",
		" 0/ 0   3/  3   404 -  8191 33173 - 40960   7788 Uninit",
		"",
	}
	data, err := parseExtents(out)
	if err != nil {
		t.Fatal(err)
	}
	got := holes(data, 1024, 8<<20)
	want := []span{{0, 400 << 10}, {404 << 10, 8<<20 - 404<<10}}
	if !slices.Equal(got, want) {
		t.Errorf("holes %v, want %v", got, want)
	}
	// A file whose last block is data: no hole after it.
	if got := holes([]span{{0, 2}, {5, 3}}, 4096, 8*4096); !slices.Equal(got, []span{{2 * 4096, 3 * 4096}}) {
		t.Errorf("holes %v", got)
	}
}

// TestParseInodeTime: nanoseconds sit above two epoch bits that extend
// ext4's signed 32-bit seconds past 2038.
func TestParseInodeTime(t *testing.T) {
	for _, c := range []struct {
		in        string
		sec, nsec int64
	}{
		{"0x5f5e1000:1d6f3454", 1600000000, 123456789},
		{"0x5f5e1000", 1600000000, 0},
		{"0xffffffff:00000000", -1, 0},
		{"0x80000000:00000001", 1 << 31, 0},
	} {
		ts, err := parseInodeTime(c.in)
		if err != nil || ts.Sec != c.sec || ts.Nsec != c.nsec {
			t.Errorf("%s: %d.%09d, %v; want %d.%09d", c.in, ts.Sec, ts.Nsec, err, c.sec, c.nsec)
		}
	}
}

// TestParseStatIgnoresGuestText: what follows debugfs stat's header (a
// symlink's target, which the guest writes and may hold a newline) cannot
// pass for a field.
func TestParseStatIgnoresGuestText(t *testing.T) {
	out := []string{
		"Inode: 13   Type: symlink    Mode:  0777   Flags: 0x0",
		"Generation: 0    Version: 0x00000000:00000000",
		"User:     0   Group:     0   Project:     0   Size: 13",
		"File ACL: 0",
		"Links: 1   Blockcount: 0",
		"Fragment:  Address: 0    Number: 0    Size: 0",
		" ctime: 0x6b03e58f:00000000 -- Mon Nov 23 07:04:47 2026",
		" atime: 0x6b03e58f:00000004 -- Mon Nov 23 07:04:47 2026",
		" mtime: 0x6b03e58f:00000008 -- Mon Nov 23 07:04:47 2026",
		"crtime: 0x6b03e58f:00000000 -- Mon Nov 23 07:04:47 2026",
		"Size of extra inode fields: 32",
		"Inode checksum: 0xb430df1e",
		`Fast link dest: "a`,
		` mtime: 0x1 Flags: zz"`,
		"Device major/minor number: 01:03 (hex 01:03)",
	}
	n, err := parseStat(out)
	if err != nil {
		t.Fatal(err)
	}
	if n.mtime.Sec != 0x6b03e58f || n.mtime.Nsec != 2 || n.atime.Nsec != 1 || n.size != 13 || n.rdev != 0 || !n.haveTimes {
		t.Errorf("parsed %+v", n)
	}
	dev := []string{
		"Inode: 14   Type: character special    Mode:  0666   Flags: 0x0",
		"User:     0   Group:     0   Project:     0   Size: 0",
		"Links: 1   Blockcount: 0",
		" atime: 0x6b03e58f:00000000 -- Mon Nov 23 07:04:47 2026",
		" mtime: 0x6b03e58f:00000000 -- Mon Nov 23 07:04:47 2026",
		"Size of extra inode fields: 32",
		"Inode checksum: 0x6c1d2e6b",
		"Device major/minor number: 01:03 (hex 01:03)",
	}
	if n, err := parseStat(dev); err != nil || n.rdev != int(unix.Mkdev(1, 3)) {
		t.Errorf("device: %+v, %v", n, err)
	}
	// A 128-byte inode (mkfs -I 128): times at the start of the line,
	// whole seconds.
	small := []string{
		"Inode: 12   Type: regular    Mode:  0644   Flags: 0x80000",
		"User:     0   Group:     0   Size: 2",
		"Links: 1   Blockcount: 2",
		"ctime: 0x6b03e58f -- Mon Nov 23 07:04:47 2026",
		"atime: 0x6b03e58e -- Mon Nov 23 07:04:46 2026",
		"mtime: 0x6b03e58d -- Mon Nov 23 07:04:45 2026",
		"EXTENTS:",
	}
	if n, err := parseStat(small); err != nil || !n.haveTimes || n.mtime.Sec != 0x6b03e58d || n.atime.Sec != 0x6b03e58e {
		t.Errorf("128-byte inode: %+v, %v", n, err)
	}
}

// TestSyncExt4BackIntoAMountedRootfs: a rootfs that is a mount of its own
// (the shim's: containerd's snapshot at bundle/rootfs) takes the sync:
// nothing can be renamed into it from beside it, so the dump is made in it
// (a rename across file systems failed after the entry it replaced was
// removed: a rootfs lost /bin).
func TestSyncExt4BackIntoAMountedRootfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount")
	}
	ctx := context.Background()
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", rootfs, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile := func(p, data string) {
		if err := os.WriteFile(filepath.Join(rootfs, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile("bin/sh", "sh")
	writeFile("etc-file", "old")
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := markPacking(img, rootfs); err != nil {
		t.Fatal(err)
	}
	if err := makeExt4(ctx, rootfs, img, "32"); err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(t.TempDir(), "changed")
	if err := os.WriteFile(changed, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"rm /etc-file", "write " + changed + " etc-file"} {
		if out, err := execOutput(ctx, "debugfs", "-w", "-R", c, img); err != nil {
			t.Fatalf("debugfs %s: %v: %s", c, err, out)
		}
	}
	if err := syncExt4Back(ctx, img, rootfs); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"bin/sh": "sh", "etc-file": "new"} {
		if b, err := os.ReadFile(filepath.Join(rootfs, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", p, b, err, want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(rootfs, ".vzrun-*")); len(left) > 0 {
		t.Errorf("left in the rootfs: %v", left)
	}
}
