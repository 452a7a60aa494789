package runtime

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// punch deallocates the given ranges of a file, which hold zeros.
func punch(path string, ranges []span) error {
	if len(ranges) == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, r := range ranges {
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r.off, r.len); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return nil // the bundle's file system has no holes
			}
			return err
		}
	}
	return nil
}
