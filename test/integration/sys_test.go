package integration

import (
	goruntime "runtime"
	"syscall"
)

var goruntimeNumCPU = goruntime.NumCPU

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

func runtimeNumCPU() int { return goruntimeNumCPU() }
