// Package vz is the macOS backend of package hypervisor: Apple's
// Virtualization.framework through github.com/Code-Hex/vz/v3. The VM runs
// inside the calling process (the framework's XPC helper dies with it), so
// there is no VMM process to supervise: the kernel Image and initramfs boot
// with the framework's Linux boot loader, the rootfs and bind mounts are
// virtio-fs shares served by the framework itself, and the agent channel is
// a virtio socket the host connects to (the agent listens on
// api.VsockPort when the VM has no virtio-serial port).
//
// Only files tagged `darwin && cgo` import Code-Hex/vz: importing it from
// any other file breaks every non-darwin build. A darwin build without cgo
// compiles a New that says so, and the rest of this package is plain Go,
// tested on Linux. `make check-darwin` type-checks the cgo files from Linux
// (internal/darwincheck).
//
// It must not import runtime, shim or agent.
package vz
