package agent

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// addEntropy credits b to the kernel's input pool and reseeds the CRNG
// from it (RNDADDENTROPY, RNDRESEEDCRNG), so a clone's random numbers part
// from its template's and its siblings'.
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(b))
	*(*int32)(unsafe.Pointer(&info[0])) = int32(len(b) * 8)
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(b))
	copy(info[8:], b)
	if err := ioctl(f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); err != nil {
		return err
	}
	return ioctl(f.Fd(), unix.RNDRESEEDCRNG, 0)
}

func ioctl(fd, req, arg uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, arg); errno != 0 {
		return errno
	}
	return nil
}
