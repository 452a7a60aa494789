package runtime

import "golang.org/x/sys/unix"

// hostMemoryMiB is the host's memory (0 if unknown).
func hostMemoryMiB() int {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
}
