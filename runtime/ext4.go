package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
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
		// Room to write: twice the tree, at least 256 MiB free.
		size = int(max(2*used, used+256<<20) >> 20)
	}
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(size) << 20)
	f.Close()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", rootfs, img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 -d %s: %v: %s", rootfs, err, strings.TrimSpace(string(out)))
	}
	return nil
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
// first and swapped in entry by entry, so an interrupted sync leaves the
// dump to recover from rather than losing it. FIFOs and device nodes made
// in the container are not carried back (rdump skips them).
func syncExt4Back(ctx context.Context, img, rootfs string) error {
	dump, err := os.MkdirTemp(filepath.Dir(rootfs), ".vzrun-sync-")
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "debugfs", "-R", "rdump / "+dump, img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dumping %s: %v: %s", img, err, strings.TrimSpace(string(out)))
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "lost+found")); errors.Is(err, os.ErrNotExist) {
		_ = os.RemoveAll(filepath.Join(dump, "lost+found"))
	}
	have, err := os.ReadDir(rootfs)
	if err != nil {
		return err
	}
	for _, e := range have {
		if _, err := os.Lstat(filepath.Join(dump, e.Name())); errors.Is(err, os.ErrNotExist) {
			if err := os.RemoveAll(filepath.Join(rootfs, e.Name())); err != nil {
				return err
			}
		}
	}
	got, err := os.ReadDir(dump)
	if err != nil {
		return err
	}
	for _, e := range got {
		dst := filepath.Join(rootfs, e.Name())
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(dump, e.Name()), dst); err != nil {
			return err
		}
	}
	return os.Remove(dump)
}
