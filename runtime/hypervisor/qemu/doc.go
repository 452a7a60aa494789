// Package qemu is the Linux backend of package hypervisor: one
// qemu-system-x86_64 -M microvm process per VM, the kernel booted directly
// (PVH), virtio-fs through one virtiofsd per share, and the agent channel on
// a virtio-serial port backed by a unix socket (no vhost-vsock needed).
package qemu
