package sockpath

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxLen leaves room for the terminating NUL.
const maxLen = 100

// Short returns a path naming the same socket as path, short enough for
// bind(2) and connect(2): path itself when it fits, else a name through
// /proc/self/fd of the opened directory. done releases the directory; call
// it once the socket is bound or connected.
func Short(path string) (short string, done func(), err error) {
	if len(path) <= maxLen {
		return path, func() {}, nil
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, &os.PathError{Op: "open", Path: filepath.Dir(path), Err: err}
	}
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(path), func() { unix.Close(fd) }, nil
}
