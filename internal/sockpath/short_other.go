//go:build !linux

package sockpath

import (
	"os"
	"path/filepath"
)

// maxLen leaves room for the terminating NUL (macOS: 104 bytes).
const maxLen = 100

// Short returns a path naming the same socket as path, short enough for
// bind(2) and connect(2): path itself when it fits, else a name through a
// symlink to its directory in a new temporary directory (there is no
// /proc/self/fd here). done removes the symlink; call it once the socket
// is bound or connected.
func Short(path string) (short string, done func(), err error) {
	if len(path) <= maxLen {
		return path, func() {}, nil
	}
	tmp, err := os.MkdirTemp("/tmp", "vzs")
	if err != nil {
		return "", nil, err
	}
	if err := os.Symlink(filepath.Dir(path), filepath.Join(tmp, "d")); err != nil {
		os.RemoveAll(tmp)
		return "", nil, err
	}
	return filepath.Join(tmp, "d", filepath.Base(path)), func() { os.RemoveAll(tmp) }, nil
}
