package runtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// makeExt4 packs a rootfs directory into an ext4 image.
func makeExt4(ctx context.Context, rootfs, img, sizeMiB string) error {
	size := 0
	if sizeMiB != "" {
		n, err := strconv.Atoi(sizeMiB)
		if err != nil || n < 16 {
			return fmt.Errorf("annotation %s=%q: want MiB, at least 16: %w", AnnotationDiskSizeMB, sizeMiB, errdefs.ErrInvalidArgument)
		}
		size = n
	} else {
		used, err := dirSize(rootfs)
		if err != nil {
			return err
		}
		// Room to write: twice the tree, at least 1 GiB free (the
		// image is sparse: its journal, 32 MiB at that size, and what
		// is written take space; 256 MiB free was too little for a
		// 500 MB file).
		size = int(max(2*used, used+1<<30) >> 20)
	}
	// Made under another name: an image named img is always whole, so a
	// delete after a kill never syncs back a half-made one.
	tmp := img + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(size) << 20)
	f.Close()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", rootfs, tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mkfs.ext4 -d %s: %v: %s", rootfs, err, strings.TrimSpace(string(out)))
	}
	return os.Rename(tmp, img)
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		n += fi.Size() + 4096
		return nil
	})
	return n, err
}

// syncExt4Back makes rootfs hold what the stopped VM left in its ext4
// image, so that the block mode, like virtio-fs, leaves the container's
// writes in the bundle. The image is dumped (debugfs rdump) beside rootfs
// first and merged in entry by entry (mergeDump); the image stays until
// the caller removes it after a sync that succeeded, so an interrupted
// sync is redone from it. The image is read by
// debugfs, in user space: the host kernel never mounts a file system the
// guest wrote.
//
// What appeared in the rootfs after the image was packed (a file made on
// the host meanwhile, another container's on the same bundle) is kept: an
// entry the image does not have is removed only if it is older than the
// image's packing (see packedAt), so the container removed it. (Of two
// containers on one bundle, the one synced second may see a removal of
// its own undone: the first sync made every file new.)
func syncExt4Back(ctx context.Context, img, rootfs string) error {
	// Syncs into one bundle take turns (containers sharing it): each
	// would take the other's dump for a stale one.
	release, err := flockPath(filepath.Dir(rootfs))
	if err != nil {
		return err
	}
	defer release()
	// A guest that did not shut down cleanly (its VM killed) leaves
	// ext4's journal to replay, and debugfs does not replay it: what the
	// container wrote and synced would be missed. (0: clean, 1: replayed.)
	if out, err := exec.CommandContext(ctx, "e2fsck", "-y", "-E", "journal_only", img).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			log.G(ctx).WithError(err).Warnf("replaying the journal of %s: %s", img, strings.TrimSpace(string(out)))
		}
	}
	// The dump is made where its entries can be renamed into the
	// rootfs: beside it, or in it where it is a mount of its own (the
	// shim's: containerd's snapshot mounted at bundle/rootfs).
	at := filepath.Dir(rootfs)
	if !sameFileSystem(at, rootfs) {
		at = rootfs
	}
	// A sync that was killed left its dump: the image still holds it all.
	for _, dir := range []string{filepath.Dir(rootfs), rootfs} {
		stale, _ := filepath.Glob(filepath.Join(dir, ".vzrun-sync-*"))
		for _, d := range stale {
			_ = os.RemoveAll(d)
		}
	}
	dump, err := os.MkdirTemp(at, ".vzrun-sync-")
	if err != nil {
		return err
	}
	// What rdump makes must not inherit the directory's default ACL:
	// the entries carry the image's attributes only.
	_ = unix.Removexattr(dump, "system.posix_acl_default")
	if err := rdump(ctx, img, dump); err != nil {
		// Nothing is swapped in: the image, whole, stays the container's
		// data (syncLeftImage keeps it beside the rootfs).
		_ = os.RemoveAll(dump)
		return err
	}
	if err := completeDump(ctx, img, dump); err != nil {
		if ctx.Err() != nil {
			// Out of time (a bounded sync): nothing is merged, the
			// image stays for the next.
			_ = os.RemoveAll(dump)
			return err
		}
		// What rdump wrote is still the container's data: swap it in.
		log.G(ctx).WithError(err).Warnf("syncing %s back: not every FIFO, device node, hard link or extended attribute is carried back", img)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "lost+found")); errors.Is(err, os.ErrNotExist) {
		_ = os.RemoveAll(filepath.Join(dump, "lost+found"))
	}
	since, _ := packedAt(img)
	if err := mergeDump(dump, rootfs, since); err != nil {
		return err
	}
	return os.RemoveAll(dump)
}

// packedMark is the file beside an ext4 image that records when its
// packing began, on the rootfs's own clock (see markPacking).
func packedMark(img string) string { return img + ".packed" }

// packing is when an image's packing began. exact: read on the rootfs's
// file system (a file made there), so its ctimes compare to the
// nanosecond; otherwise the mark's own time, compared in whole seconds.
type packing struct {
	at    unix.Timespec
	exact bool
}

// newer says whether st changed at or after the packing began (a tie is
// kept: it may have been made after).
func (p *packing) newer(st *unix.Stat_t) bool {
	if p.exact {
		return st.Ctim.Sec > p.at.Sec || st.Ctim.Sec == p.at.Sec && st.Ctim.Nsec >= p.at.Nsec
	}
	return st.Ctim.Sec >= p.at.Sec
}

// markPacking records that img's packing of rootfs begins now: the ctime
// of a file made (and removed) in rootfs, so that the rootfs's entries
// compare on their own file system's clock and granularity; where rootfs
// takes no file, the mark's own time.
func markPacking(img, rootfs string) error {
	var at string
	if f, err := os.CreateTemp(rootfs, ".vzrun-mark-"); err == nil {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil {
			at = fmt.Sprintf("%d %d", st.Ctim.Sec, st.Ctim.Nsec)
		}
		f.Close()
		_ = os.Remove(f.Name())
	}
	return os.WriteFile(packedMark(img), []byte(at), 0o600)
}

// packedAt is when img's packing began, if recorded.
func packedAt(img string) (*packing, bool) {
	b, err := os.ReadFile(packedMark(img))
	if err != nil {
		return nil, false
	}
	var sec, nsec int64
	if _, err := fmt.Sscanf(string(b), "%d %d", &sec, &nsec); err == nil {
		return &packing{at: unix.Timespec{Sec: sec, Nsec: nsec}, exact: true}, true
	}
	var st unix.Stat_t
	if err := unix.Stat(packedMark(img), &st); err != nil {
		return nil, false
	}
	return &packing{at: st.Mtim}, true
}

// mergeDump moves what the dump holds into rootfs, directory by
// directory: an entry replaces the rootfs's of that name, a directory
// both have is merged and then takes the dump's owner, mode, extended
// attributes and times. An entry of the rootfs the dump lacks was removed
// by the container if it is older than since (the image's packing), and
// goes; a newer one was made on the host meanwhile, and stays (so does
// everything, with since nil). Nothing of the rootfs moves into the dump:
// a merge that fails half-way leaves the dump to redo from the image.
func mergeDump(dump, rootfs string, since *packing) error {
	if os.Geteuid() != 0 {
		// Without root (the macOS backend), a directory without write
		// permission (a 0555 /usr/bin) takes no new entries: made
		// writable while merged; copyDirMeta gives it its mode after.
		defer writable(rootfs)()
		writable(dump)
	}
	got, err := os.ReadDir(dump)
	if err != nil {
		return err
	}
	inDump := make(map[string]bool, len(got))
	for _, e := range got {
		inDump[e.Name()] = true
	}
	have, err := os.ReadDir(rootfs)
	if err != nil {
		return err
	}
	for _, e := range have {
		if inDump[e.Name()] {
			continue
		}
		p := filepath.Join(rootfs, e.Name())
		if strings.HasPrefix(e.Name(), ".vzrun-sync-") {
			continue // the dump itself, made in a rootfs that is a mount
		}
		var st unix.Stat_t
		if since != nil && (unix.Lstat(p, &st) != nil || since.newer(&st)) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	for _, e := range got {
		src, dst := filepath.Join(dump, e.Name()), filepath.Join(rootfs, e.Name())
		var s, d unix.Stat_t
		if err := unix.Lstat(src, &s); err != nil {
			return err
		}
		dstErr := unix.Lstat(dst, &d)
		srcDir, dstDir := s.Mode&unix.S_IFMT == unix.S_IFDIR, dstErr == nil && d.Mode&unix.S_IFMT == unix.S_IFDIR
		if srcDir && dstDir {
			if err := mergeDump(src, dst, since); err != nil {
				return err
			}
			if err := copyDirMeta(src, dst, &s); err != nil {
				return err
			}
			continue
		}
		// A rename replaces a file (or symlink) in one step; a directory
		// on either side has to go first.
		if dstErr == nil && (srcDir || dstDir) {
			if err := os.RemoveAll(dst); err != nil {
				return err
			}
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	}
	return nil
}

// writable gives dir its owner's write permission if it lacks it, and
// returns what takes it back.
func writable(dir string) (restore func()) {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o200 != 0 {
		return func() {}
	}
	_ = os.Chmod(dir, fi.Mode().Perm()|0o200)
	return func() { _ = os.Chmod(dir, fi.Mode().Perm()) }
}

// copyDirMeta gives directory dst what src (stat st) has: owner, mode
// (after the owner, whose change clears setgid), extended attributes and
// times (last: merging its entries moved them).
func copyDirMeta(src, dst string, st *unix.Stat_t) error {
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Chmod(dst, uint32(st.Mode&0o7777)); err != nil {
		return err
	}
	want, err := xattrs(src)
	if err != nil {
		return err
	}
	old, err := xattrs(dst)
	if err != nil {
		return err
	}
	// The host's labelling, not the image's.
	delete(want, "security.selinux")
	delete(old, "security.selinux")
	for name := range old {
		if _, ok := want[name]; !ok {
			if err := unix.Lremovexattr(dst, name); err != nil {
				return fmt.Errorf("attribute %s of %s: %w", name, dst, err)
			}
		}
	}
	for name, v := range want {
		if err := unix.Lsetxattr(dst, name, v, 0); err != nil {
			return fmt.Errorf("attribute %s of %s: %w", name, dst, err)
		}
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// xattrs reads every extended attribute of path (not following a
// symlink).
func xattrs(path string) (map[string][]byte, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("attributes of %s: %w", path, err)
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(path, name, v)
		if err != nil {
			return nil, fmt.Errorf("attribute %s of %s: %w", name, path, err)
		}
		out[name] = v[:m]
	}
	return out, nil
}

// sameFileSystem says whether a and b are on one file system (a rename
// from one to the other can work).
func sameFileSystem(a, b string) bool {
	var sa, sb unix.Stat_t
	return unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev
}

// rdump dumps the whole of img into dir. debugfs exits 0 whatever went
// wrong (a full disk: "rdump: No space left on device while writing
// file", and a truncated copy), so anything it prints on stderr but its
// banner is a failure.
func rdump(ctx context.Context, img, dir string) error {
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "rdump / "+dir, img)
	dieWithParent(cmd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var problems []string
	for _, l := range strings.Split(stderr.String()+string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			problems = append(problems, l)
		}
	}
	if err == nil && len(problems) == 0 {
		return nil
	}
	msg := "debugfs rdump"
	if err != nil {
		msg += ": " + err.Error()
	}
	if len(problems) > 0 {
		msg += ": " + problems[0]
		if len(problems) > 1 {
			msg += fmt.Sprintf(" (and %d more)", len(problems)-1)
		}
	}
	return fmt.Errorf("dumping %s: %s", img, msg)
}

// syncLeftImage syncs back the ext4 image of a container whose VM and
// monitor were killed before they could (delete after a kill -9).
func syncLeftImage(ctx context.Context, dir *StateDir, st *State, withState bool) error {
	img := dir.File("rootfs.ext4")
	if _, err := os.Stat(img); err != nil || st.Rootfs == "" {
		return nil
	}
	if err := syncExt4Back(ctx, img, st.Rootfs); err != nil {
		var kept *imageKeptError
		if err := keepImage(ctx, img, st.Rootfs, st.ID, err, withState); errors.As(err, &kept) {
			return err
		}
		// The delete goes on (else the container could never be
		// deleted): the container's data is in the image beside the
		// rootfs.
		log.G(ctx).WithError(err).Warn("deleting " + st.ID)
		return nil
	}
	return os.Remove(img)
}

// keepLeftImage is syncLeftImage's refusal: an image left in the state
// dir stays there, with the state (an *imageKeptError), for a later sync.
func keepLeftImage(dir *StateDir, st *State) error {
	img := dir.File("rootfs.ext4")
	if _, err := os.Stat(img); err != nil {
		return nil
	}
	return &imageKeptError{img: img, id: st.ID, err: fmt.Errorf("not syncing the ext4 rootfs of %s back now", st.ID)}
}

// keepImage keeps the container's data when its ext4 image could not be
// synced back (syncErr: a full disk, say): the image is moved (or, from
// another file system, copied sparsely) beside the rootfs, as
// rootfs-ID.ext4, and the error says so. Where even that fails, or with
// withState, the image stays in the state dir, which must then stay too:
// an *imageKeptError.
func keepImage(ctx context.Context, img, rootfs, id string, syncErr error, withState bool) error {
	keep := filepath.Join(filepath.Dir(rootfs), "rootfs-"+id+".ext4")
	// A runtime's rootfs (the shim's: containerd removes its bundle
	// directory with the task; a rootfs that is a mount of its own) keeps
	// the image with the container's state instead.
	if withState || !sameFileSystem(filepath.Dir(rootfs), rootfs) {
		return &imageKeptError{img: img, id: id, err: fmt.Errorf("syncing the ext4 rootfs of %s back into %s: %w", id, rootfs, syncErr)}
	}
	err := os.Rename(img, keep)
	if err != nil {
		var out []byte
		// Whatever became of the caller's context (a sync that failed
		// because it was cancelled): the copy is the data's last chance.
		if out, err = exec.CommandContext(context.WithoutCancel(ctx), "cp", "--sparse=always", img, keep).CombinedOutput(); err != nil {
			_ = os.Remove(keep)
			err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		} else {
			err = os.Remove(img)
		}
	}
	if err != nil {
		return &imageKeptError{img: img, id: id, err: fmt.Errorf("syncing the ext4 rootfs of %s back into %s: %w", id, rootfs, syncErr)}
	}
	return fmt.Errorf("syncing the ext4 rootfs of %s back into %s: %w; what the container wrote is in the image %s", id, rootfs, syncErr, keep)
}

// imageKeptError is a failed sync back whose image is still in the
// container's state dir.
type imageKeptError struct {
	img, id string
	err     error
}

func (e *imageKeptError) Error() string {
	return fmt.Sprintf("%v; what the container wrote is in the image %s, kept with the container's state: make room and run `vzrun delete %s` to sync it back", e.err, e.img, e.id)
}

func (e *imageKeptError) Unwrap() error { return e.err }

// imageEntry is a directory entry of an ext4 image (debugfs ls -p).
type imageEntry struct {
	ino      string // debugfs's inode spec, "<N>"
	mode     uint32
	uid, gid int
	path     string // relative to the image's root
}

// completeDump adds to an rdump of img what rdump leaves out: FIFOs and
// device nodes, hard links (rdump writes each name as a file of its own)
// and extended attributes (file capabilities, ACLs, user attributes).
// Without them a run in the ext4 mode would strip them from the bundle.
func completeDump(ctx context.Context, img, dump string) error {
	entries, err := listImage(ctx, img)
	if err != nil {
		return err
	}
	inodes, err := statImage(ctx, img, entries)
	if err != nil {
		return err
	}
	first := map[string]string{} // inode -> the first path it was seen at
	var attrOwners []imageEntry
	for _, e := range entries {
		dst := filepath.Join(dump, e.path)
		t := e.mode & unix.S_IFMT
		if t == unix.S_IFDIR {
			attrOwners = append(attrOwners, e)
			continue
		}
		if t == unix.S_IFSOCK {
			// A socket is only a name once its listener is gone (rdump
			// skips them too): nothing to carry back.
			continue
		}
		if p, ok := first[e.ino]; ok {
			if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := os.Link(filepath.Join(dump, p), dst); err != nil {
				return fmt.Errorf("hard link %s: %w", e.path, err)
			}
			continue
		}
		first[e.ino] = e.path
		attrOwners = append(attrOwners, e)
		switch t {
		case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
			_ = os.Remove(dst)
			var rdev int
			if n := inodes[e.ino]; n != nil {
				rdev = n.rdev
			} else if t != unix.S_IFIFO {
				continue // its number is unknown (see statImage)
			}
			if err := unix.Mknod(dst, e.mode, rdev); err != nil {
				return fmt.Errorf("mknod %s: %w", e.path, err)
			}
			if err := os.Lchown(dst, e.uid, e.gid); err != nil {
				return err
			}
			// mknod applies the umask.
			if err := os.Chmod(dst, os.FileMode(e.mode&0o777)|modeBits(e.mode)); err != nil {
				return err
			}
		}
	}
	// Before the attributes: punching a hole drops a file capability.
	if err := punchHoles(ctx, img, dump, first, inodes); err != nil {
		return err
	}
	if err := copyXattrs(ctx, img, dump, attrOwners); err != nil {
		return err
	}
	if err := fixModes(entries, dump); err != nil {
		return err
	}
	// Last: every change above to a directory's entries moved its mtime.
	return setTimes(entries, dump, inodes)
}

// ext4InlineDataFlag marks an inode whose data is in the inode
// (EXT4_INLINE_DATA_FL).
const ext4InlineDataFlag = 0x10000000

// inode is what debugfs stat tells of an inode that ls -p does not.
type inode struct {
	rdev         int   // a device node's number
	size, blocks int64 // bytes; 512-byte blocks allocated
	inline       bool  // data in the inode (ext4's inline_data)
	atime, mtime unix.Timespec
	haveTimes    bool
}

// statImage runs debugfs stat on each inode of entries (sockets aside:
// nothing is carried back for them).
func statImage(ctx context.Context, img string, entries []imageEntry) (map[string]*inode, error) {
	var inos []string
	seen := map[string]bool{}
	for _, e := range entries {
		if e.mode&unix.S_IFMT != unix.S_IFSOCK && !seen[e.ino] {
			seen[e.ino] = true
			inos = append(inos, e.ino)
		}
	}
	inodes := make(map[string]*inode, len(inos))
	if len(inos) == 0 {
		return inodes, nil
	}
	cmds := make([]string, len(inos))
	for i, ino := range inos {
		cmds[i] = "stat " + ino
	}
	out, err := debugfsBatch(ctx, img, cmds)
	if err != nil {
		return nil, err
	}
	for i, lines := range out {
		n, err := parseStat(lines)
		if err != nil {
			// That one inode's extras are left out; the rest go on.
			log.G(ctx).WithError(err).Warnf("debugfs stat %s of %s", inos[i], img)
			continue
		}
		inodes[inos[i]] = n
	}
	return inodes, nil
}

// parseStat reads debugfs stat's output: sizes, the device number, the
// flags and the access and modification times with their nanoseconds,
// each from its own line of the fixed header. What follows the header
// (extended attribute values, a symlink's target, which may hold a
// newline) is the guest's to write and is not read.
func parseStat(lines []string) (*inode, error) {
	n := &inode{}
	// field finds the value after name in line.
	field := func(line, name string) (string, bool) {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == name {
				return f[i+1], true
			}
		}
		return "", false
	}
	var have int
	var device bool
	for _, l := range lines {
		var err error
		switch {
		case strings.HasPrefix(l, "Size of extra inode fields"), strings.HasPrefix(l, "Extended attributes:"),
			strings.HasPrefix(l, "Inode checksum"), strings.HasPrefix(l, "Fast link dest:"):
			// The header is over; a device's number comes after it.
			if !device {
				n.haveTimes = have == 2
				return n, nil
			}
		case strings.HasPrefix(l, "Inode:"):
			t, _ := field(l, "Type:")
			device = t == "character" || t == "block"
			if v, ok := field(l, "Flags:"); ok {
				var flags uint64
				flags, err = strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 32)
				n.inline = flags&ext4InlineDataFlag != 0
			}
		case strings.HasPrefix(l, "User:"):
			if v, ok := field(l, "Size:"); ok {
				n.size, err = strconv.ParseInt(v, 10, 64)
			}
		case strings.HasPrefix(l, "Links:"):
			if v, ok := field(l, "Blockcount:"); ok {
				n.blocks, err = strconv.ParseInt(v, 10, 64)
			}
		case strings.HasPrefix(strings.TrimSpace(l), "atime:"), strings.HasPrefix(strings.TrimSpace(l), "mtime:"):
			// " atime:", or "atime:" for a 128-byte inode.
			f := strings.Fields(l)
			var ts unix.Timespec
			if ts, err = parseInodeTime(f[1]); err == nil {
				if f[0] == "atime:" {
					n.atime = ts
				} else {
					n.mtime = ts
				}
				have++
			}
		case device && strings.HasPrefix(l, "Device major/minor number:"):
			var major, minor uint32
			if _, err = fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "Device major/minor number:")), "%d:%d", &major, &minor); err == nil {
				n.rdev = int(unix.Mkdev(major, minor))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", l, err)
		}
	}
	n.haveTimes = have == 2
	return n, nil
}

// parseInodeTime reads debugfs's "0xSECONDS[:0xEXTRA]": ext4 keeps the
// seconds signed in 32 bits, and in the extra field the nanoseconds
// (above two bits) and two more bits of seconds, for dates past 2038.
func parseInodeTime(s string) (unix.Timespec, error) {
	secHex, extraHex, hasExtra := strings.Cut(strings.TrimPrefix(s, "0x"), ":")
	sec, err := strconv.ParseUint(secHex, 16, 32)
	if err != nil {
		return unix.Timespec{}, err
	}
	var extra uint64
	if hasExtra {
		if extra, err = strconv.ParseUint(strings.TrimPrefix(extraHex, "0x"), 16, 32); err != nil {
			return unix.Timespec{}, err
		}
	}
	return unix.Timespec{
		Sec:  int64(int32(uint32(sec))) + int64(extra&3)<<32,
		Nsec: int64(extra >> 2),
	}, nil
}

// punchHoles makes the dumped copy of each sparse file of img sparse
// again (rdump writes a hole's zeros out): the ranges no initialised
// extent covers are punched out, so a container's sparse file (a database
// preallocating, a disk image) does not grow the bundle by its size.
func punchHoles(ctx context.Context, img, dump string, paths map[string]string, inodes map[string]*inode) error {
	var sparse []string
	for ino, n := range inodes {
		if p, ok := paths[ino]; ok && !n.inline && n.size > 0 && n.blocks*512 < n.size {
			if fi, err := os.Lstat(filepath.Join(dump, p)); err == nil && fi.Mode().IsRegular() {
				sparse = append(sparse, ino)
			}
		}
	}
	if len(sparse) == 0 {
		return nil
	}
	bs, err := imageBlockSize(ctx, img)
	if err != nil {
		return err
	}
	cmds := make([]string, len(sparse))
	for i, ino := range sparse {
		cmds[i] = "dump_extents -l " + ino
	}
	out, err := debugfsBatch(ctx, img, cmds)
	if err != nil {
		return err
	}
	for i, lines := range out {
		ino := sparse[i]
		data, err := parseExtents(lines)
		if err != nil {
			return fmt.Errorf("debugfs dump_extents %s: %w", ino, err)
		}
		if len(lines) == 0 || !strings.HasPrefix(lines[0], "Level Entries") {
			// Not an extent listing (a file mapped by blocks: "does not
			// use extent block maps"): left whole rather than emptied.
			continue
		}
		if err := punch(filepath.Join(dump, paths[ino]), holes(data, bs, inodes[ino].size)); err != nil {
			return fmt.Errorf("making %s sparse: %w", paths[ino], err)
		}
	}
	return nil
}

// span is a byte range [off, off+len).
type span struct{ off, len int64 }

// parseExtents reads the leaf lines of debugfs dump_extents -l ("LEVEL/
// DEPTH ENTRY/COUNT FIRST - LAST PSTART - PEND LENGTH [Uninit]") into the
// logical block ranges holding data; an uninitialised extent reads as
// zeros, a hole.
func parseExtents(lines []string) ([]span, error) {
	var data []span
	for _, l := range lines {
		f := strings.Fields(strings.ReplaceAll(l, "/", " / "))
		// LEVEL / DEPTH ENTRY / COUNT FIRST - LAST PSTART - PEND LENGTH [FLAGS]
		if len(f) < 13 || f[1] != "/" || f[4] != "/" || f[7] != "-" {
			continue
		}
		if len(f) > 13 && f[13] == "Uninit" {
			continue
		}
		first, err1 := strconv.ParseInt(f[6], 10, 64)
		length, err2 := strconv.ParseInt(f[12], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("line %q: %w", l, err)
		}
		data = append(data, span{first, length})
	}
	return data, nil
}

// holes turns a file's data extents (in blocks of bs bytes) into the byte
// ranges between them, up to size.
func holes(data []span, bs, size int64) []span {
	slices.SortFunc(data, func(a, b span) int { return cmp.Compare(a.off, b.off) })
	var out []span
	var at int64
	for _, d := range data {
		if start := d.off * bs; start > at {
			out = append(out, span{at, start - at})
		}
		at = max(at, (d.off+d.len)*bs)
	}
	if at < size {
		out = append(out, span{at, size - at})
	}
	return out
}

// imageBlockSize is the block size of an ext4 image (debugfs stats -h).
func imageBlockSize(ctx context.Context, img string) (int64, error) {
	out, err := debugfsBatch(ctx, img, []string{"stats -h"})
	if err != nil {
		return 0, err
	}
	for _, l := range out[0] {
		if rest, ok := strings.CutPrefix(l, "Block size:"); ok {
			return strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
		}
	}
	return 0, errors.New("debugfs stats: no block size")
}

// setTimes gives every dumped entry its access and modification times
// with their nanoseconds (rdump sets whole seconds), symlinks included.
func setTimes(entries []imageEntry, dump string, inodes map[string]*inode) error {
	for _, e := range entries {
		n := inodes[e.ino]
		if n == nil || !n.haveTimes {
			continue
		}
		err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dump, e.path), []unix.Timespec{n.atime, n.mtime}, unix.AT_SYMLINK_NOFOLLOW)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("times of %s: %w", e.path, err)
		}
	}
	return nil
}

// fixModes gives dumped entries what rdump loses: it sets a file's mode
// before its owner, and the chown clears setuid and setgid (and its mode
// table has no sticky bit), and it leaves symlinks owned by root.
func fixModes(entries []imageEntry, dump string) error {
	for _, e := range entries {
		dst := filepath.Join(dump, e.path)
		var err error
		switch e.mode & unix.S_IFMT {
		case unix.S_IFSOCK:
			continue
		case unix.S_IFLNK:
			err = os.Lchown(dst, e.uid, e.gid)
		default:
			if e.mode&0o7000 != 0 {
				err = unix.Chmod(dst, e.mode&0o7777)
			}
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("mode of %s: %w", e.path, err)
		}
	}
	return nil
}

// modeBits turns setuid, setgid and sticky into os.FileMode's bits.
func modeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// copyXattrs sets on each dumped entry the extended attributes its inode
// has in img (debugfs ea_list, then ea_get -f for each value), after
// ownership, which would clear a file capability.
func copyXattrs(ctx context.Context, img, dump string, entries []imageEntry) error {
	if len(entries) == 0 {
		return nil
	}
	cmds := make([]string, len(entries))
	for i, e := range entries {
		cmds[i] = "ea_list " + e.ino
	}
	lists, err := debugfsBatch(ctx, img, cmds)
	if err != nil {
		return err
	}
	vals, err := os.MkdirTemp("", "vzrun-xattrs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(vals)
	type attr struct {
		path, name, file string
	}
	var attrs []attr
	cmds = cmds[:0]
	for i, lines := range lists {
		for _, l := range lines {
			name, ok := xattrName(l)
			if !ok {
				continue
			}
			file := filepath.Join(vals, strconv.Itoa(len(attrs)))
			attrs = append(attrs, attr{entries[i].path, name, file})
			cmds = append(cmds, "ea_get -f "+file+" "+entries[i].ino+" "+name)
		}
	}
	if len(attrs) == 0 {
		return nil
	}
	if _, err := debugfsBatch(ctx, img, cmds); err != nil {
		return err
	}
	var errs []error
	for _, a := range attrs {
		v, err := os.ReadFile(a.file)
		if err == nil {
			err = unix.Lsetxattr(filepath.Join(dump, a.path), a.name, v, 0)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("attribute %s of %s: %w", a.name, a.path, err))
		}
	}
	return errors.Join(errs...)
}

// xattrName parses a line of debugfs's ea_list ("  NAME (LEN) = VALUE").
// system.data is ext4's inline data, not an attribute of the file.
func xattrName(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "  ")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, " (")
	if !ok || name == "" || strings.ContainsAny(name, " \t\"") || name == "system.data" {
		return "", false
	}
	return name, true
}

// listImage lists every entry below the root of img, a directory level
// per debugfs run, by inode number (so no name needs quoting).
func listImage(ctx context.Context, img string) ([]imageEntry, error) {
	var all []imageEntry
	level := []imageEntry{{ino: "<2>", mode: unix.S_IFDIR}}
	for len(level) > 0 {
		cmds := make([]string, len(level))
		for i, d := range level {
			cmds[i] = "ls -p " + d.ino
		}
		out, err := debugfsBatch(ctx, img, cmds)
		if err != nil {
			return nil, err
		}
		var next []imageEntry
		for i, lines := range out {
			for j := 0; j < len(lines); j++ {
				l := lines[j]
				if l == "" {
					continue
				}
				// /INO/MODE/UID/GID/NAME/SIZE/ (a directory's size is
				// empty). A name cannot hold a slash but can hold a
				// newline: an entry goes on until its seventh slash.
				for strings.Count(l, "/") < 7 && j+1 < len(lines) {
					j++
					l += "\n" + lines[j]
				}
				f := strings.Split(l, "/")
				if len(f) != 8 || f[0] != "" || f[7] != "" {
					return nil, fmt.Errorf("debugfs ls -p: unexpected line %q", l)
				}
				// Unused slots (lost+found has many) are inode 0.
				if f[1] == "0" || f[5] == "" || f[5] == "." || f[5] == ".." {
					continue
				}
				mode, err1 := strconv.ParseUint(f[2], 8, 32)
				uid, err2 := strconv.Atoi(f[3])
				gid, err3 := strconv.Atoi(f[4])
				if err := errors.Join(err1, err2, err3); err != nil {
					return nil, fmt.Errorf("debugfs ls -p: line %q: %w", l, err)
				}
				e := imageEntry{ino: "<" + f[1] + ">", mode: uint32(mode), uid: uid, gid: gid, path: filepath.Join(level[i].path, f[5])}
				all = append(all, e)
				if e.mode&unix.S_IFMT == unix.S_IFDIR {
					next = append(next, e)
				}
			}
		}
		level = next
	}
	return all, nil
}

// debugfsBatch runs cmds in one debugfs on img and returns each one's
// output lines, split where debugfs echoes the next command.
func debugfsBatch(ctx context.Context, img string, cmds []string) ([][]string, error) {
	f, err := os.CreateTemp("", "vzrun-debugfs-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(strings.Join(cmds, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "debugfs", "-f", f.Name(), img)
	dieWithParent(cmd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("debugfs: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	out := make([][]string, 0, len(cmds))
	for _, l := range strings.Split(string(stdout), "\n") {
		if strings.HasPrefix(l, "debugfs: ") {
			out = append(out, nil)
			continue
		}
		if len(out) > 0 {
			out[len(out)-1] = append(out[len(out)-1], l)
		}
	}
	if len(out) != len(cmds) {
		return nil, fmt.Errorf("debugfs ran %d of %d commands: %s", len(out), len(cmds), strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
