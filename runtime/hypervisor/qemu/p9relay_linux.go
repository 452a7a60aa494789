package qemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"golang.org/x/sys/unix"
)

// QEMU 7.2's 9p proxy helper (virtfs-proxy-helper) has a flaw vzrun must
// not hit: asked to create something as uid 0 with another gid (root
// writing into a setgid directory such as Debian's /usr/local or
// /var/mail, or a process running as 0:1000), it switches its effective
// gid, applies a reduced capability set, and, its effective uid having
// stayed 0, never gets its capabilities back: every later request that
// changes ids fails, and the helper soon aborts, after which every access
// to the share fails with EIO. The relay below sits between QEMU and the
// helper and turns such a request into one as 0:0 followed by a chown to
// the gid asked for, which is what the helper would have made; every other
// message passes through unchanged.
//
// The protocol (QEMU's hw/9pfs/9p-proxy.h): a request is a header
// {type, size uint32} and size bytes of arguments in host byte order
// (strings: a uint16 length and the bytes); the answer to T_OPEN and
// T_CREATE is an int32 (a descriptor follows as SCM_RIGHTS, or it is a
// negative errno); every other answer is a header and size bytes.
const (
	p9Success = 0
	p9Error   = 1
	p9Open    = 2
	p9Create  = 3
	p9Mknod   = 4
	p9Mkdir   = 5
	p9Symlink = 6
	p9Chmod   = 11
	p9Chown   = 12

	p9GetXattr    = 17
	p9ListXattr   = 18
	p9SetXattr    = 19
	p9RemoveXattr = 20

	p9HeaderSize = 8
	p9MaxIO      = 64 * 1024
	p9FDValid    = math.MaxInt32
)

// p9Fixup is what a rewritten request still owes once it succeeded.
type p9Fixup struct {
	path string
	gid  int32
	// mode is set for a regular file or node with setuid or setgid,
	// which a chown clears.
	mode int32
}

// relay9p passes the 9p proxy protocol between QEMU's end (qemu) and the
// helper's (helper), both blocking stream sockets, until either closes;
// it closes both. In the share as root finds it, the relay sets and
// removes security.* and trusted.* extended attributes itself, reads
// trusted.* ones and lists them (see privilegedXattr and
// privilegedXattrRead).
func relay9p(qemu, helper int, root *helperRoot) error {
	defer unix.Close(qemu)
	defer unix.Close(helper)
	defer root.close()
	for {
		req, err := readMessage(qemu)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading from qemu: %w", err)
		}
		if status, ok := privilegedXattr(root, req); ok {
			if err := writeFull(qemu, p9Status(status)); err != nil {
				return fmt.Errorf("writing to qemu: %w", err)
			}
			continue
		}
		if resp, ok := privilegedXattrRead(root, req); ok {
			if err := writeFull(qemu, resp); err != nil {
				return fmt.Errorf("writing to qemu: %w", err)
			}
			continue
		}
		fix := rewrite9p(req)
		if err := writeFull(helper, req); err != nil {
			return fmt.Errorf("writing to the helper: %w", err)
		}
		typ := binary.NativeEndian.Uint32(req)
		if typ == p9Open || typ == p9Create {
			status, fd, err := recvStatusFD(helper)
			if err != nil {
				return fmt.Errorf("reading from the helper: %w", err)
			}
			if fix != nil && status == p9FDValid {
				if err := fixup9p(helper, fix); err != nil {
					unix.Close(fd)
					return err
				}
			}
			err = sendStatusFD(qemu, status, fd)
			if fd >= 0 {
				unix.Close(fd)
			}
			if err != nil {
				return fmt.Errorf("writing to qemu: %w", err)
			}
			continue
		}
		resp, err := readMessage(helper)
		if err != nil {
			return fmt.Errorf("reading from the helper: %w", err)
		}
		if fix != nil && binary.NativeEndian.Uint32(resp) == p9Success {
			if err := fixup9p(helper, fix); err != nil {
				return err
			}
		}
		if err := writeFull(qemu, resp); err != nil {
			return fmt.Errorf("writing to qemu: %w", err)
		}
	}
}

// privilegedXattr does a request to set or remove a security.* or
// trusted.* extended attribute (setcap writes security.capability), which
// the helper refuses: it keeps only the capabilities to create and chown
// files, not CAP_SETFCAP or CAP_SYS_ADMIN. The path is resolved inside
// the shared directory (RESOLVE_IN_ROOT: no symlink or .. leads out),
// without following a final symlink. ok is false for any other request.
func privilegedXattr(share *helperRoot, req []byte) (status int32, ok bool) {
	typ := binary.NativeEndian.Uint32(req)
	if typ != p9SetXattr && typ != p9RemoveXattr {
		return 0, false
	}
	path, rest, ok := p9String(req[p9HeaderSize:])
	if !ok {
		return 0, false
	}
	name, rest, ok := p9String(rest)
	name = strings.TrimRight(name, "\x00")
	if !ok || !(strings.HasPrefix(name, "security.") || strings.HasPrefix(name, "trusted.")) {
		return 0, false
	}
	var value []byte
	var flags int
	if typ == p9SetXattr { // path, name, value, size, flags
		v, rest, ok := p9String(rest)
		if !ok || len(rest) < 8 {
			return 0, false
		}
		size := int(int32(binary.NativeEndian.Uint32(rest)))
		if size < 0 || size > len(v) {
			return -int32(unix.EINVAL), true
		}
		value, flags = []byte(v)[:size], int(int32(binary.NativeEndian.Uint32(rest[4:])))
	}
	root := share.get()
	if root < 0 {
		return 0, false
	}
	fd, at, err := openInShare(root, path)
	if err != nil {
		return errnoStatus(err), true
	}
	defer unix.Close(fd)
	if typ == p9SetXattr {
		err = unix.Setxattr(at, name, value, flags)
	} else {
		err = unix.Removexattr(at, name)
	}
	if err != nil {
		return errnoStatus(err), true
	}
	return 0, true
}

// helperRoot is the 9p proxy helper's root directory: the share it
// serves, which it chroots into, in its own mount namespace, where the
// files of a file share are bound over its entries and a read-only share
// is mounted read-only. It is opened on first use (through
// /proc/PID/root), once the helper has chrooted: until then the helper's
// root is the host's, and get answers -1.
type helperRoot struct {
	pid   int
	share string
	fd    int // 0: not opened yet
}

func (r *helperRoot) get() int {
	if r.fd > 0 {
		return r.fd
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root", r.pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	var have, want unix.Stat_t
	if unix.Fstat(fd, &have) != nil || unix.Stat(r.share, &want) != nil || have.Dev != want.Dev || have.Ino != want.Ino {
		unix.Close(fd)
		return -1
	}
	r.fd = fd
	return fd
}

func (r *helperRoot) close() {
	if r.fd > 0 {
		unix.Close(r.fd)
	}
}

// openInShare opens path (a 9p proxy path string) inside the share whose
// root is root, without following a final symlink (RESOLVE_IN_ROOT: no
// symlink or .. leads out), and returns the descriptor and its /proc
// link, which reaches the file itself for xattr calls (an O_PATH
// descriptor takes none of its own).
func openInShare(root int, path string) (int, string, error) {
	// QEMU's path strings carry their C terminator.
	rel := strings.TrimLeft(strings.TrimRight(path, "\x00"), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, "", err
	}
	return fd, fmt.Sprintf("/proc/self/fd/%d", fd), nil
}

// privilegedXattrRead answers a request to read a trusted.* extended
// attribute, or to list a file's attributes, which the helper, without
// CAP_SYS_ADMIN, gets wrong (ENODATA; a list without trusted.* names):
// what it sets (privilegedXattr) the guest reads back. (Lists are made as
// root, so a process without CAP_SYS_ADMIN sees trusted.* names too,
// which the guest's 9p client does not filter; reading one still needs
// the capability in the guest.) The request is
// {size int32, path[, name]}; the answer, for size 0, the value's length
// as an int32, else the value as a string. ok is false for any other
// request.
func privilegedXattrRead(share *helperRoot, req []byte) (resp []byte, ok bool) {
	typ := binary.NativeEndian.Uint32(req)
	if typ != p9GetXattr && typ != p9ListXattr {
		return nil, false
	}
	args := req[p9HeaderSize:]
	if len(args) < 4 {
		return nil, false
	}
	size := int(int32(binary.NativeEndian.Uint32(args)))
	path, rest, ok := p9String(args[4:])
	if !ok || size < 0 || size > math.MaxUint16 {
		return nil, false
	}
	var name string
	if typ == p9GetXattr {
		if name, _, ok = p9String(rest); !ok {
			return nil, false
		}
		name = strings.TrimRight(name, "\x00")
		if !strings.HasPrefix(name, "trusted.") {
			return nil, false
		}
	}
	root := share.get()
	if root < 0 {
		return nil, false
	}
	fd, at, err := openInShare(root, path)
	if err != nil {
		return p9Status(errnoStatus(err)), true
	}
	defer unix.Close(fd)
	buf := make([]byte, size)
	var n int
	if typ == p9GetXattr {
		n, err = unix.Getxattr(at, name, buf)
	} else {
		n, err = unix.Listxattr(at, buf)
	}
	if err != nil {
		return p9Status(errnoStatus(err)), true
	}
	if size == 0 {
		return p9Status(int32(n)), true
	}
	value := p9AppendString(nil, string(buf[:n]))
	msg := binary.NativeEndian.AppendUint32(nil, p9Success)
	msg = binary.NativeEndian.AppendUint32(msg, uint32(len(value)))
	return append(msg, value...), true
}

func errnoStatus(err error) int32 {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return -int32(errno)
	}
	return -int32(unix.EIO)
}

// p9Status is a status answer: T_SUCCESS or T_ERROR with a negative errno.
func p9Status(status int32) []byte {
	typ := uint32(p9Success)
	if status < 0 {
		typ = p9Error
	}
	msg := binary.NativeEndian.AppendUint32(nil, typ)
	msg = binary.NativeEndian.AppendUint32(msg, 4)
	return binary.NativeEndian.AppendUint32(msg, uint32(status))
}

// rewrite9p changes a create request as uid 0 with another gid into one
// as 0:0, in place, and returns what is then owed; nil for any other.
func rewrite9p(req []byte) *p9Fixup {
	typ := binary.NativeEndian.Uint32(req)
	args := req[p9HeaderSize:]
	// Offsets of uid and gid, and how to find the path and mode.
	var uidAt int
	var path string
	var mode int32
	var ok bool
	switch typ {
	case p9Create: // path, flags, mode, uid, gid
		var rest []byte
		if path, rest, ok = p9String(args); !ok || len(rest) < 16 {
			return nil
		}
		mode = int32(binary.NativeEndian.Uint32(rest[4:]))
		uidAt = len(args) - len(rest) + 8
	case p9Mknod, p9Mkdir, p9Symlink: // uid, gid, then path, mode, rdev; path, mode; target, path
		if len(args) < 8 {
			return nil
		}
		uidAt = 0
		var rest []byte
		if path, rest, ok = p9String(args[8:]); !ok {
			return nil
		}
		switch typ {
		case p9Symlink:
			if path, _, ok = p9String(rest); !ok {
				return nil
			}
		case p9Mknod, p9Mkdir:
			if len(rest) < 4 {
				return nil
			}
			mode = int32(binary.NativeEndian.Uint32(rest))
		}
	default:
		return nil
	}
	uid := int32(binary.NativeEndian.Uint32(args[uidAt:]))
	gid := int32(binary.NativeEndian.Uint32(args[uidAt+4:]))
	if uid != 0 || gid == 0 {
		return nil
	}
	binary.NativeEndian.PutUint32(args[uidAt+4:], 0)
	fix := &p9Fixup{path: path, gid: gid}
	if typ != p9Mkdir && typ != p9Symlink && mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		fix.mode = mode
	}
	return fix
}

// fixup9p gives a created entry the gid it was asked for (and back the
// setuid and setgid bits the chown clears) through the helper.
func fixup9p(helper int, fix *p9Fixup) error {
	args := p9AppendString(nil, fix.path)
	args = binary.NativeEndian.AppendUint32(args, math.MaxUint32) // uid: unchanged
	args = binary.NativeEndian.AppendUint32(args, uint32(fix.gid))
	if err := call9p(helper, p9Chown, args); err != nil {
		return err
	}
	if fix.mode == 0 {
		return nil
	}
	args = p9AppendString(nil, fix.path)
	args = binary.NativeEndian.AppendUint32(args, uint32(fix.mode&0o7777))
	return call9p(helper, p9Chmod, args)
}

// call9p sends the helper a request of the relay's own; an error it
// answers is not the relay's (the entry stays as made), only a broken
// connection is.
func call9p(helper int, typ uint32, args []byte) error {
	msg := binary.NativeEndian.AppendUint32(nil, typ)
	msg = binary.NativeEndian.AppendUint32(msg, uint32(len(args)))
	if err := writeFull(helper, append(msg, args...)); err != nil {
		return fmt.Errorf("writing to the helper: %w", err)
	}
	if _, err := readMessage(helper); err != nil {
		return fmt.Errorf("reading from the helper: %w", err)
	}
	return nil
}

func p9String(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.NativeEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

func p9AppendString(b []byte, s string) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// readMessage reads a header and its arguments.
func readMessage(fd int) ([]byte, error) {
	msg := make([]byte, p9HeaderSize, p9HeaderSize+256)
	if err := readFull(fd, msg); err != nil {
		return nil, err
	}
	size := binary.NativeEndian.Uint32(msg[4:])
	if size > p9MaxIO {
		return nil, fmt.Errorf("9p proxy message of %d bytes", size)
	}
	msg = append(msg, make([]byte, size)...)
	if err := readFull(fd, msg[p9HeaderSize:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return msg, nil
}

// recvStatusFD reads the helper's answer to an open or a create.
func recvStatusFD(fd int) (status int32, passed int, err error) {
	buf := make([]byte, 4)
	oob := make([]byte, unix.CmsgSpace(4))
	passed = -1
	got := 0
	for got < len(buf) {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf[got:], oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, -1, err
		}
		if n == 0 {
			return 0, -1, io.ErrUnexpectedEOF
		}
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil && len(msgs) > 0 {
				if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) > 0 {
					passed = fds[0]
				}
			}
		}
		got += n
	}
	return int32(binary.NativeEndian.Uint32(buf)), passed, nil
}

func sendStatusFD(fd int, status int32, passed int) error {
	buf := binary.NativeEndian.AppendUint32(nil, uint32(status))
	var oob []byte
	if passed >= 0 {
		oob = unix.UnixRights(passed)
	}
	for {
		err := unix.Sendmsg(fd, buf, oob, nil, 0)
		if err != unix.EINTR {
			return err
		}
	}
}

func readFull(fd int, b []byte) error {
	for got := 0; got < len(b); {
		n, err := unix.Read(fd, b[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.EOF
		}
		got += n
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
