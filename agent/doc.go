// Package agent is the guest side of vzrun: the logic of vz-agent, PID 1 in
// every vzrun VM.
//
// It sets up the guest (file systems, cgroup v2), serves the ttrpc API of
// api/agent/v1 to the host over virtio-serial or vsock, and applies each
// container's OCI spec with runc, which it drives the way containerd's runc
// shim does (go-runc plus a subreaper). Namespaces, mounts, capabilities and
// rlimits are runc's job, not re-implemented here.
//
// It must not import runtime, shim or the hypervisor packages: it runs in
// the guest and knows nothing of the host.
package agent
