package shim

import "syscall"

// sentinelAttr: macOS has no parent-death signal; Delete ends the sentinel.
func sentinelAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
