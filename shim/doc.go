// Package shim is containerd-shim-vz-v2: a containerd shim v2 (runtime type
// io.containerd.vz.v2) that runs each task in its own VM. It is the only
// user of containerd's pkg/shim; the VM, the agent and the stdio relay come
// from package runtime, shared with vzrun.
//
// One shim process serves one container and its execs, and owns its VM: the
// shim's pid is the task's pid.
package shim
