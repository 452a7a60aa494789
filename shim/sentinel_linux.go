package shim

import "syscall"

// sentinelAttr: the sentinel dies with the shim.
func sentinelAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
